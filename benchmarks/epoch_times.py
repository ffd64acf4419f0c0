"""Epoch times the runs recorded, per processor, thread count and lanes: what the CPU queue's lanes gain.

Reads the `time_s` of every epoch in results/<profile>/<row>/seed<k>/run.json and groups them by the
session that trained them (`sessions[]`: processor id, device with its thread count, lanes). A run's
epoch 0 is left out (its first steps pay for one-off set-up). With --pair A B it also prints
what one lane of each run does against the run alone at all threads, and their sum: the work per hour of
two lanes relative to one (above 1: lanes gain).

    .venv/bin/python benchmarks/epoch_times.py --rows ffn-spn-d3 rnn-spn-d4-bf16 --pair ffn-spn-d3 rnn-spn-d4-bf16

Another process on the machine (tests, a book build) slows epochs too; a session's median is robust to
a few such epochs, not to many.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path


def session_groups(run_json: Path) -> dict[tuple[str, int, int], list[float]]:
    """{(processor, threads, lanes): epoch seconds} of one run, its epoch 0 left out."""
    record = json.loads(run_json.read_text())
    groups: dict[tuple[str, int, int], list[float]] = {}
    for session in record["sessions"]:
        first, n = session.get("first_epoch", 0), session.get("epochs", 0)
        found = re.search(r"(\d+) threads", session.get("device", ""))
        key = (session.get("cpu") or session.get("processor", "?"), int(found.group(1)) if found else 0,
               session.get("lanes", 1))
        groups.setdefault(key, []).extend(h["time_s"] for h in record["history"][max(first, 1):first + n])
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", required=True)
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument("--pair", nargs=2, metavar=("A", "B"),
                        help="two rows trained side by side at one thread each: each one's one-thread median "
                             "against its median at the most threads on the same processor, and their sum")
    args = parser.parse_args()
    by_row: dict[str, dict[tuple[str, int], list[float]]] = {}
    print("| run | processor | threads | lanes | epochs | median (s) | range (s) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in args.rows:
        path = args.results_dir / args.profile / row / f"seed{args.seed}" / "run.json"
        for (cpu, threads, lanes), times in sorted(session_groups(path).items()):
            if times:
                by_row.setdefault(row, {}).setdefault((cpu, threads), []).extend(times)
                print(f"| {row} | {cpu} | {threads} | {lanes} | {len(times)} | {statistics.median(times):.1f} | "
                      f"{min(times):.1f}-{max(times):.1f} |")
    if args.pair:
        shares = []
        for row in args.pair:
            groups = by_row.get(row, {})
            cpus = {cpu for cpu, threads in groups if threads == 1}
            alone = {threads: times for (cpu, threads), times in groups.items() if cpu in cpus and threads > 1}
            if len(cpus) != 1 or not alone:
                raise SystemExit(f"{row}: needs one-thread epochs and epochs at more threads on one processor")
            lane_s = statistics.median(groups[(cpus.pop(), 1)])
            alone_s = statistics.median(alone[max(alone)])
            shares.append(alone_s / lane_s)
            print(f"{row}: at one thread beside the other, {alone_s / lane_s:.2f} of its speed at {max(alone)} "
                  f"threads ({lane_s:.1f} s against {alone_s:.1f} s an epoch)")
        print(f"side by side: {sum(shares):.2f} times the work per hour of one run at a time")


if __name__ == "__main__":
    main()
