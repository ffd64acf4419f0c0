"""Many runs in a row under one time budget: rows by name (`train_row`, `train_all`: `rstn train`), a list
of resolved configs (`train_configs`: the CPU queue and each of its lanes), and their one-line summary.

A run that cannot go on (diverged, its record made with another config, or trained by another process)
is reported and the rest go on; the run that the budget cuts stops at an epoch boundary, in progress, and
the rest are not started (the CPU queue also passes over a new run that too little budget is left for).
One run on disk is `rstn.runs.train_run`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from rstn.experiments import ROWS, RunConfig, get_row, run_config
from rstn.progress import ProgressLog, counted, format_duration, progress_mode
from rstn.runlock import RunBusyError
from rstn.runs import ConfigChangedError, RunResult, train_run
from rstn.train import NonFiniteLossError, SplitLike


class RunNotStarted(Exception):
    """A run the CPU queue passed over (`why_not_start` gave a reason): no failure, it waits for a later queue."""


def train_row(row: str, profile: str = "auto", seed: int = 0, *, results_dir: str | Path = "results",
              device: str | torch.device | None = None, resume: bool = False, force: bool = False,
              progress: str | bool | None = "auto", data: Mapping[str, SplitLike] | None = None,
              **train_overrides: Any) -> RunResult:
    """`train_run` by name: one Table 1 row under a profile ('smoke' | 'quick' | 'paper' | 'auto') and seed.

    `train_overrides` replace TrainConfig fields of the profile (e.g. max_epochs=3) and become part of
    the resolved config. Example: `train_row("rnn-spn-d2", "smoke", seed=0).test_error`.
    """
    config = run_config(row, profile, seed, device=device, **train_overrides)
    return train_run(config, results_dir=results_dir, device=device, resume=resume, force=force,
                     progress=progress, data=data)


def train_all(rows: Iterable[str] | None = None, profile: str = "auto", seeds: Iterable[int] = (0,), *,
              results_dir: str | Path = "results", checkpoint_root: str | Path | None = None,
              device: str | None = None, resume: bool = False, force: bool = False, budget_s: float | None = None,
              checkpoint_every: int = 1, progress: str | bool | None = "auto", model: Mapping | None = None,
              data: Mapping | None = None, **train_overrides: Any) -> list[RunResult | Exception]:
    """`rstn train`: rows (default: Table 1) x seeds one after another, each to its protocol's end, under
    one time budget (`train_configs`). `model`, `data` and `train_overrides` replace config fields
    (`rstn.experiments.run_config`)."""
    names = [get_row(r).name for r in rows] if rows is not None else list(ROWS)
    configs = [run_config(r, profile, s, device=device, model=model, data=data, **train_overrides)
               for r in names for s in seeds]
    return train_configs(configs, results_dir=results_dir, checkpoint_root=checkpoint_root, device=device,
                         resume=resume, force=force, budget_s=budget_s, checkpoint_every=checkpoint_every,
                         progress=progress)


def train_configs(configs: Sequence[RunConfig], *, results_dir: str | Path = "results",
                  checkpoint_root: str | Path | None = None, device: str | None = None, resume: bool = False,
                  force: bool = False, budget_s: float | None = None, checkpoint_every: int = 1,
                  progress: str | bool | None = "auto", lanes: int = 1,
                  why_not_start: Callable[[RunConfig, float], str | None] | None = None,
                  ) -> list[RunResult | Exception]:
    """Train `configs` in order under one time budget.

    A diverged run, one whose record was made with another config (kept), and one that another process
    is training (left to it) are reported and the others go on. With `budget_s`, the run that would overrun
    it stops at an epoch boundary (status "running") and the rest are not started; with `why_not_start`
    ((config, seconds of budget left) -> why not, or None; the CPU queue's `rstn.queue.StartRule`) a run it
    gives a reason for is passed over, said so, and the next one is tried.

    Returns:
        [RunResult | NonFiniteLossError | ConfigChangedError | RunBusyError | RunNotStarted] in the order
        tried.
    """
    deadline = time.monotonic() + budget_s if budget_s is not None else None
    say = ProgressLog(progress_mode(progress), None)
    data_cache: dict[str, Mapping] = {}
    outcomes: list[RunResult | Exception] = []
    for i, config in enumerate(configs):
        if deadline is not None and time.monotonic() >= deadline:
            left = ", ".join(f"{c.row}/seed{c.seed}" for c in configs[i:])
            say(f"time budget spent: not started {left}")
            break
        left_s = deadline - time.monotonic() if deadline is not None else math.inf
        if why_not_start is not None and (reason := why_not_start(config, left_s)) is not None:
            say(f"not started: {config.row}/seed{config.seed} {reason}")
            outcomes.append(RunNotStarted(f"{config.row}/seed{config.seed} {reason}"))
            continue
        try:
            result = train_run(config, results_dir=results_dir, checkpoint_root=checkpoint_root, device=device,
                               resume=resume, force=force, deadline=deadline, checkpoint_every=checkpoint_every,
                               progress=progress, data=_LazyData(config, data_cache), lanes=lanes)
        except NonFiniteLossError as err:
            say(f"diverged: {err}")
            outcomes.append(err)
            continue
        except ConfigChangedError as err:  # its record is kept; the other runs go on
            say(f"kept: {err}")
            outcomes.append(err)
            continue
        except RunBusyError as err:  # another lane or process has it
            say(f"busy: {err}")
            outcomes.append(err)
            continue
        outcomes.append(result)
        if result.status == "running":  # stopped by the budget
            left = ", ".join(f"{c.row}/seed{c.seed}" for c in configs[i + 1:])
            if left:
                say(f"time budget spent: not started {left}")
            break
    return outcomes


def describe_outcomes(outcomes: Sequence[RunResult | Exception], took_s: float) -> tuple[str, int]:
    """("N runs in T: ... already finished, ... trained to the end, ...", failures) for `train_configs`'s
    outcomes; failures: diverged runs and records kept as made with another config (a run left to another
    process, or one passed over, is no failure)."""
    busy = sum(isinstance(o, RunBusyError) for o in outcomes)
    passed_over = sum(isinstance(o, RunNotStarted) for o in outcomes)
    other_config = sum(isinstance(o, ConfigChangedError) for o in outcomes)
    diverged = sum(isinstance(o, NonFiniteLossError) for o in outcomes)
    runs = [o for o in outcomes if not isinstance(o, Exception)]
    summary = [f"{sum(r.skipped for r in runs)} already finished (kept; --force retrains)",
               f"{sum(r.status == 'finished' and not r.skipped for r in runs)} trained to the end",
               f"{sum(r.status == 'running' for r in runs)} paused in progress (--resume continues)",
               f"{diverged} diverged"]
    if other_config:
        summary.append(f"{other_config} kept as made with another config (--force retrains)")
    if busy:
        summary.append(f"{busy} left to another process training it")
    if passed_over:
        summary.append(f"{passed_over} passed over, not started (the reasons above)")
    text = f"{counted(len(outcomes), 'run')} in {format_duration(took_s)}: " + ", ".join(summary)
    return text, diverged + other_config


class _LazyData(Mapping):
    """The splits of a config, loaded on first access and shared by the runs of one train_all call."""

    def __init__(self, config: RunConfig, cache: dict):
        self.config, self.cache = config, cache
        self.key = repr((config.data, config.data_seed))

    def _splits(self) -> Mapping:
        if self.key not in self.cache:
            from rstn.data import load_sequences

            self.cache.clear()  # keep one data set in memory at a time
            self.cache[self.key] = load_sequences(self.config.data, seed=self.config.data_seed)
        return self.cache[self.key]

    def __getitem__(self, name: str):
        return self._splits()[name]

    def __iter__(self):
        return iter(self._splits())

    def __len__(self) -> int:
        return len(self._splits())
