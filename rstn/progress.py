"""What a long run shows and records while it trains, and the durations it reads and prints.

`ProgressLog` writes one line per epoch to stdout and to the run's train.log; within an epoch, a tqdm bar on a
terminal, or a line at each quarter in a notebook or a log (`QuarterProgress`), so that papermill and
`nohup` show progress too. Durations: `parse_duration('2h30m')` for budgets, `format_duration` for ETAs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import sys
import time
from pathlib import Path


def progress_mode(progress: str | bool | None = "auto") -> str:
    """'bar' on a terminal, 'text' inside a notebook or when piped, 'none' when False."""
    if progress is False:
        return "none"
    if progress in (None, True, "auto"):
        in_notebook = "ipykernel" in sys.modules
        return "bar" if sys.stderr.isatty() and not in_notebook else "text"
    if progress not in ("bar", "text", "none"):
        raise ValueError(f"progress must be 'auto', 'bar', 'text' or 'none', got {progress!r}")
    return progress


class ProgressLog:
    """One line per epoch to stdout (through tqdm when a bar is live) and to run_dir/train.log."""

    def __init__(self, mode: str, log_path: Path | None):
        self.mode, self.log_path = mode, log_path

    def __call__(self, line: str) -> None:
        if self.mode == "bar":
            from tqdm import tqdm

            tqdm.write(line)
        elif self.mode == "text":
            print(line, flush=True)
        if self.log_path is not None:
            with open(self.log_path, "a") as f:
                f.write(line + "\n")

    def bar(self, total: int, desc: str):
        """Progress within an epoch: a tqdm bar on a terminal; in text mode (notebooks, logs) a line at
        each quarter; nothing in 'none' mode."""
        if self.mode == "text":
            return contextlib.nullcontext(QuarterProgress(total, desc))
        if self.mode != "bar":
            return contextlib.nullcontext(None)
        from tqdm import tqdm  # the plain bar: tqdm.auto would become a widget in notebooks

        return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True)


class QuarterProgress:
    """`update()` once per batch; prints '<desc>: 25% (150/600 batches, 20s, ~60s left)' at each quarter."""

    def __init__(self, total: int, desc: str):
        self.total, self.desc, self.done, self.start = total, desc, 0, time.perf_counter()
        self.marks = {total * q // 4: q for q in (1, 2, 3)} if total >= 4 else {}

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.done in self.marks:
            spent = time.perf_counter() - self.start
            left = spent * (self.total - self.done) / self.done
            print(f"{self.desc}: {25 * self.marks[self.done]}% ({self.done}/{self.total} batches, "
                  f"{format_duration(spent)}, ~{format_duration(left)} left)", flush=True)


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def counted(n: int, noun: str) -> str:
    """1, 'epoch' -> '1 epoch'; 3, 'run' -> '3 runs' (regular plurals only)."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def format_duration(seconds: float) -> str:
    """3725 -> '1h02m', 125 -> '2m05s', 42.5 -> '42s'."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def parse_duration(text: str) -> float:
    """'2h30m', '90m', '45s', '1.5h', '3600' (seconds) -> seconds. Raises ValueError naming the text."""
    text = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", text)
        if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([hms])", "", text).strip():
            raise ValueError(f"cannot read the duration {text!r}: use e.g. 2h30m, 90m, 45s or 1.5h")
        seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"the duration {text!r} must be positive")
    return seconds
