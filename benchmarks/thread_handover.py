"""Does a CPU queue lane that is handed more threads mid-run train as fast as a process started with them?

A lane of `rstn train --cpu-queue --lanes 2` trains with one thread; when the other lane ends, it raises
its torch thread count between epochs (`rstn.backends.share_threads`). This times one row's epoch here
(`rstn.queue.probe_epoch_time`: timed training steps plus evaluation) three ways, each the median of
--repeats probes, on an otherwise idle machine:

    one thread             the lane before the handover
    handed over            the same process after torch.set_num_threads(all threads)
    started with all       a fresh process with all threads from its start (the reference)

    .venv/bin/python benchmarks/thread_handover.py --row ffn-spn-d3 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

import torch

from rstn.backends import processor_id
from rstn.experiments import run_config
from rstn.queue import probe_epoch_time

FRESH = """
import json, statistics, sys, torch
from rstn.experiments import run_config
from rstn.queue import probe_epoch_time
torch.set_num_threads({threads})
config = run_config({row!r}, "paper")
print(json.dumps(statistics.median(probe_epoch_time(config, "cpu") for _ in range({repeats}))))
"""


def median_epoch_s(row: str, threads: int, repeats: int) -> float:
    config = run_config(row, "paper")
    return statistics.median(probe_epoch_time(config, "cpu", threads=threads) for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--row", default="ffn-spn-d3")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    one = median_epoch_s(args.row, 1, args.repeats)
    handed = median_epoch_s(args.row, threads, args.repeats)
    fresh = json.loads(subprocess.run([sys.executable, "-c", FRESH.format(threads=threads, row=args.row,
                                                                            repeats=args.repeats)],
                                      capture_output=True, text=True, check=True).stdout)
    print(f"{args.row} on {processor_id()}, seconds per epoch (median of {args.repeats} probes):")
    print(f"  one thread            {one:7.1f}")
    print(f"  handed over to {threads}      {handed:7.1f}  ({one / handed:.2f}x the one-thread lane)")
    print(f"  started with {threads}        {fresh:7.1f}  (handed over / started: {handed / fresh:.2f})")


if __name__ == "__main__":
    main()
