"""The window's measurements, per run, from what the runs recorded: the training is the benchmark.

For each (row, seed): status, epochs, best epoch and test error; this session's epoch times (the first,
with cuDNN's autotuning and the warm-up in it, and the median of the rest); TFLOP/s, the training FLOPs
of one epoch (`rstn.sweep.cost`, GFLOP per example forward + backward, x the profile's training
examples) over the median epoch time, evaluation included in the time, not in the FLOPs; the peak GPU
memory the sweep's summary holds (`rstn sweep --summary`; absent if the call was cut before it). Prints
a table and writes the same as JSON; the runs ran at once, so their TFLOP/s add up to the GPU's.

    PYTHONPATH=. python3 scripts/device/report.py --rows rnn-spn-d1 ffn-spn-d1 conv-net \
        --summary /tmp/rstn-window-jobs/summaries.json --json $OUT/window.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from rstn.experiments import run_dir
from rstn.results import RUN_FILE, ResultsError, read_run
from rstn.sweep import cost


def session_epochs(record) -> list[dict]:
    """The history entries trained by the record's last session (this machine's)."""
    last = record.sessions[-1] if record.sessions else {"first_epoch": 0, "epochs": record.epochs_run}
    first = last.get("first_epoch", 0)
    return record.history[first:first + last.get("epochs", record.epochs_run - first)]


def measure(record, peak_gib: float | None) -> dict:
    """One run's line of the report (times in s, errors in %, memory in GiB; None where not measured)."""
    epochs = session_epochs(record)
    times = [e["time_s"] for e in epochs]
    median = statistics.median(times[1:] or times) if times else None
    tflop_per_epoch = cost(record.row) * record.config["data"]["n_train"] / 1e3
    return {
        "row": record.row, "seed": record.seed, "status": record.status, "stop_reason": record.stop_reason,
        "precision": "bf16" if record.config["train"].get("bf16") else "fp32", "device": record.device,
        "epochs": record.epochs_run, "epochs_here": len(epochs), "best_epoch": record.best_epoch,
        "test_error_pct": None if record.test_error is None else 100 * record.test_error,
        "first_epoch_s": times[0] if times else None, "median_epoch_s": median,
        "tflop_per_epoch": tflop_per_epoch, "tflops": tflop_per_epoch / median if median else None,
        "peak_memory_gib": peak_gib, "wall_time_s": record.wall_time_s,
    }


def table(lines: list[dict]) -> str:
    def show(value, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    out = [f"{'row':<11} {'seed':>4} {'prec':<4} {'status':<9} {'epochs':>6} {'best':>4} {'test %':>6} "
           f"{'1st s':>6} {'med s':>6} {'TFLOP/s':>7} {'peak GiB':>8}  device"]
    for m in lines:
        out.append(f"{m['row']:<11} {m['seed']:>4} {m['precision']:<4} {m['status']:<9} {m['epochs']:>6} "
                   f"{show(m['best_epoch'], 'd'):>4} {show(m['test_error_pct'], '.2f'):>6} "
                   f"{show(m['first_epoch_s'], '.1f'):>6} {show(m['median_epoch_s'], '.2f'):>6} "
                   f"{show(m['tflops'], '.2f'):>7} {show(m['peak_memory_gib'], '.1f'):>8}  {m['device']}")
    total = sum(m["tflops"] or 0 for m in lines)
    out.append(f"together: {total:.2f} TFLOP/s of training FLOPs over the median epoch times")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--rows", nargs="+", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--summary", type=Path, default=None, help="the JSON of `rstn sweep --summary`")
    parser.add_argument("--json", type=Path, default=None, help="write the report here too")
    args = parser.parse_args(argv)
    summaries = json.loads(args.summary.read_text()) if args.summary and args.summary.exists() else []
    peaks = {(s["row"], s["seed"]): s.get("peak_memory_gib") for s in summaries}
    lines, missing = [], []
    for row in args.rows:
        for seed in args.seeds:
            path = run_dir(args.results_dir, args.profile, row, seed) / RUN_FILE
            try:
                lines.append(measure(read_run(path), peaks.get((row, seed))))
            except ResultsError as err:  # not started, or unreadable: say so, report the others
                missing.append(f"{row}/seed{seed}: {err}")
    print(table(lines))
    for line in missing:
        print(f"no record: {line}")
    if args.json is not None:
        args.json.write_text(json.dumps({"runs": lines, "missing": missing}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
