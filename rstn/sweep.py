"""Many runs at once through submitit: several jobs on one machine (one GPU shared, or one GPU each), or
a Slurm cluster; deadlines; results that travel in one archive.

A sweep is (row x seed) runs of one profile. Runs whose record here must not be touched are left out and
say why (`why_not_train`): finished, of another config, or in progress with nothing here to resume it
from (training it would start it over: a GPU must never replace a CPU record that got further). On a
machine (`executor="local"`), the other runs are dealt into `concurrency` lanes, balanced by their cost
per epoch, and each lane is one submitit job that trains its runs one after another; with `gpus` > 1
the lanes take the GPUs in turn. On Slurm (`executor="slurm"`) every run is its own job and Slurm
schedules them. The data are generated once, before anything is submitted, into the disk cache that
every job then only reads.

With a deadline (wall-clock, `time.time()`), each job stops cleanly at an epoch boundary before it: the
run's run.json says status "running", stop_reason "time_budget". The results travel in one archive
(`rstn.archive`: `pack`, `unpack`, re-exported here), which never replaces a record that got further.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rstn.archive import ARCHIVE_LIMIT, keep_reason, pack, unpack  # noqa: F401 (re-exported)
from rstn.checkpoints import PACK_NAME
from rstn.experiments import (
    ROWS,
    RunConfig,
    config_differences,
    cost,
    describe_differences,
    get_row,
    run_config,
    run_dir,
    same_config,
)
from rstn.progress import counted
from rstn.records import RUN_FILE, ResultsError, read_run


def resume_source(config: RunConfig, results_dir: str | Path, checkpoint_root: str | Path | None = None
                  ) -> Path | None:
    """The file a run in progress would resume from on this machine: its checkpoint, else its resume pack
    beside run.json (`rstn.runs.train_run` checks either's config); None when neither is here."""
    from rstn.runs import checkpoint_path

    pack_file = run_dir(results_dir, config.profile, config.row, config.seed) / PACK_NAME
    return next((p for p in (checkpoint_path(config, checkpoint_root), pack_file) if p.exists()), None)


def why_not_train(config: RunConfig, results_dir: str | Path, checkpoint_root: str | Path | None = None
                  ) -> str | None:
    """Why a sweep leaves a run alone, in a few words, or None to train it.

    Left alone: a run finished here; a record of another config (`train_run` keeps it; bf16 counts:
    the row in float32 is not resumed in bf16); an unreadable record; a run in progress with neither its
    checkpoint nor its resume pack here, which training would start over and so lose its epochs (a CPU
    row on the GPU machine, say). Trained: no record, a run that can resume, a diverged run, or one in
    progress without a finished epoch.
    """
    path = run_dir(results_dir, config.profile, config.row, config.seed) / RUN_FILE
    if not path.exists():
        return None
    try:
        record = read_run(path)
    except ResultsError as err:
        return f"its record is unreadable ({err})"
    epochs = counted(record.epochs_run, "epoch")
    changes = config_differences(record.config, config.to_dict())
    if changes:
        return (f"its record ({record.status}, {epochs}) is of another config ({describe_differences(changes)}); "
                "`rstn train --force` replaces it")
    if record.finished:
        return f"finished ({epochs}, test error {100 * record.test_error:.2f}%)"
    if record.status == "running" and record.epochs_run and resume_source(config, results_dir, checkpoint_root) is None:
        return (f"in progress ({epochs}) with neither its checkpoint nor its resume pack here: training it would "
                "start it over")
    return None


@dataclass(frozen=True)
class SweepPlan:
    """The runs of a sweep and how they are dealt: lanes[i] is the list of runs job i trains in order;
    kept: the runs left alone, each with why (`why_not_train`)."""

    configs: tuple[RunConfig, ...]
    lanes: tuple[tuple[RunConfig, ...], ...]
    kept: tuple[tuple[RunConfig, str], ...] = ()

    @property
    def trained(self) -> tuple[RunConfig, ...]:
        """The runs the lanes train, in the order of `configs`."""
        left_alone = {(c.row, c.seed) for c, _ in self.kept}
        return tuple(c for c in self.configs if (c.row, c.seed) not in left_alone)


def plan(rows: Iterable[str] | None, profile: str, seeds: Iterable[int], concurrency: int,
         device: str | None = None, *, results_dir: str | Path | None = None,
         checkpoint_root: str | Path | None = None, **train_overrides) -> SweepPlan:
    """Resolve the runs and deal them into `concurrency` lanes of about equal cost (largest first).

    With `results_dir`, the runs `why_not_train` names are left out of the lanes (`SweepPlan.kept`);
    without it every run is dealt. `train_overrides` go to `run_config`: trainer fields, and `model=` and
    `data=` mappings of ModelConfig and SequenceConfig fields.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    names = [get_row(r).name for r in rows] if rows is not None else list(ROWS)
    configs = [run_config(r, profile, s, device=device, **train_overrides) for s in seeds for r in names]
    kept = []
    if results_dir is not None:
        kept = [(c, why) for c in configs if (why := why_not_train(c, results_dir, checkpoint_root)) is not None]
    left_alone = {(c.row, c.seed) for c, _ in kept}
    todo = [c for c in configs if (c.row, c.seed) not in left_alone]
    lanes: list[list[RunConfig]] = [[] for _ in range(min(concurrency, len(todo)))]
    load = [0.0] * len(lanes)
    for config in sorted(todo, key=lambda c: -cost(c.row)):
        i = load.index(min(load))
        lanes[i].append(config)
        load[i] += cost(config.row)
    return SweepPlan(tuple(configs), tuple(tuple(lane) for lane in lanes), tuple(kept))


def run_lane(configs: Sequence[RunConfig], results_dir: str, checkpoint_root: str | None, device: str | None,
             deadline: float | None, resume: bool, checkpoint_every: int) -> list[dict]:
    """One job: train `configs` in order until done or out of time (the body submitit runs).

    deadline: wall-clock seconds (`time.time()`), turned into this process's monotonic clock.
    Returns one summary per run: {row, seed, threads, status[, epochs, test_error | error][,
    peak_memory_gib]}: peak_memory_gib, on CUDA, is the most memory this process's tensors held during the
    run (`torch.cuda.max_memory_allocated`). A run that raises is "failed" (or "busy": another process is
    training it, `rstn.runlock`) and the lane goes on.
    """
    import traceback

    import torch

    from rstn.runlock import RunBusyError
    from rstn.runs import train_run
    from rstn.train import NonFiniteLossError

    cuda = torch.cuda.is_available() and torch.device(device or "cuda").type == "cuda"
    summaries = []
    for config in configs:
        summary = {"row": config.row, "seed": config.seed, "threads": torch.get_num_threads()}
        left = None if deadline is None else deadline - time.time()
        if left is not None and left <= 0:
            summaries.append(summary | {"status": "not started"})
            continue
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        try:
            result = train_run(config, results_dir=results_dir, checkpoint_root=checkpoint_root, device=device,
                               resume=resume, deadline=None if left is None else time.monotonic() + left,
                               checkpoint_every=checkpoint_every, progress="text")
            summary |= {"status": result.status, "epochs": result.record.epochs_run, "test_error": result.test_error}
        except NonFiniteLossError:
            summary |= {"status": "diverged"}
        except RunBusyError as error:  # another process on this machine is training it
            summary |= {"status": "busy", "error": str(error)}
        except Exception as error:  # noqa: BLE001 (one run's failure, e.g. out of memory, must not end the lane)
            traceback.print_exc()  # into the job's log
            summary |= {"status": "failed", "error": f"{type(error).__name__}: {error}"}
        if cuda:
            summary["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        summaries.append(summary)
    return summaries


def in_progress_first(lane: Sequence[RunConfig], results_dir: str | Path,
                      checkpoint_root: str | Path | None) -> tuple[RunConfig, ...]:
    """`lane` with the runs that can resume (a run.json in progress and its checkpoint or resume pack) moved
    to the front, so that a deadline spends the time on them first; the order is otherwise kept."""
    def resumable(config: RunConfig) -> bool:
        record = run_dir(results_dir, config.profile, config.row, config.seed) / RUN_FILE
        try:
            return (resume_source(config, results_dir, checkpoint_root) is not None and record.exists()
                    and read_run(record).status == "running")
        except (ResultsError, OSError):  # an unreadable record: train_run says what is wrong with it
            return False

    return tuple(sorted(lane, key=lambda c: not resumable(c)))


def prepare_data(configs: Iterable[RunConfig]) -> None:
    """Generate each distinct data set once, into the disk cache the jobs read."""
    from rstn.data import load_sequences

    seen = set()
    for config in configs:
        key = repr((config.data, config.data_seed))
        if key not in seen:
            seen.add(key)
            load_sequences(config.data, seed=config.data_seed)


def make_executor(kind: str, folder: str | Path, *, timeout_min: float, gpus: int = 0,
                  slurm_partition: str | None = None, slurm_array_parallelism: int | None = None):
    """A submitit executor: 'local' (subprocesses on this machine), 'slurm', or 'debug' (in this process)."""
    import submitit

    if kind == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=timeout_min)
    elif kind == "debug":
        executor = submitit.DebugExecutor(folder=folder)
    elif kind == "slurm":
        executor = submitit.SlurmExecutor(folder=folder)
        executor.update_parameters(time=int(timeout_min) + 1, gres=f"gpu:{max(gpus, 1)}" if gpus else None,
                                   partition=slurm_partition, array_parallelism=slurm_array_parallelism or 64)
    else:
        raise ValueError(f"executor must be 'local', 'slurm' or 'debug', got {kind!r}")
    return executor


def gpu_ids() -> list[int]:
    """The GPUs this process may use, as the indices CUDA_VISIBLE_DEVICES takes: the parent's
    CUDA_VISIBLE_DEVICES when set, else 0..count-1. (submitit's local executor writes a job's
    `visible_gpus` into the job's CUDA_VISIBLE_DEVICES as they are, so they must be these indices.)"""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        import torch

        return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    ids = [v.strip() for v in visible.split(",") if v.strip()]
    if not all(v.isdigit() for v in ids):
        raise ValueError(f"CUDA_VISIBLE_DEVICES={visible!r}: rstn sweep deals the GPUs by index; "
                         "list indices, not UUIDs")
    return [int(v) for v in ids]


def default_gpus(executor: str, device: str | None) -> int:
    """GPUs when `sweep` is not told: every GPU this process may use (local), 1 per job (slurm); 0 on the CPU."""
    if device == "cpu" or executor == "debug":
        return 0
    if executor == "slurm":
        return 1
    return len(gpu_ids())


def sweep(rows: Iterable[str] | None, profile: str, seeds: Iterable[int], *, executor: str = "local",
          concurrency: int = 1, gpus: int | None = None, results_dir: str | Path = "results",
          checkpoint_root: str | Path | None = None, device: str | None = None, budget_s: float | None = None,
          resume: bool = True, checkpoint_every: int = 1, log_dir: str | Path = "_build/sweep",
          slurm_partition: str | None = None, while_waiting: Callable[[], None] | None = None,
          wait_interval_s: float = 60.0, **train_overrides) -> list[dict]:
    """Train (row x seed) runs through submitit and wait for them; returns one summary per run.

    Args:
        executor: 'local' (`concurrency` lanes on this machine; lane i uses GPU i % gpus), 'slurm' (one job
            per run) or 'debug' (lanes one after another in this process).
        gpus: local: the GPUs to deal the lanes over; slurm: GPUs per job; None: `default_gpus`. (submitit's
            local executor hides every GPU from a job that asks for none.)
        budget_s: every job stops cleanly at an epoch boundary before this many seconds from now.
        log_dir: submitit's folder (job logs, pickled calls).
        while_waiting: called every `wait_interval_s` seconds until the jobs are done (e.g. to pack what
            they have written so far; an exception in it is printed, not raised).

    Runs that `why_not_train` names are not trained: their summary says status "kept" and the reason.
    A job that fails as a whole (not one run: `run_lane` catches those) gives its runs the status "failed";
    the other jobs' summaries are returned as usual.
    """
    deadline = time.time() + budget_s if budget_s is not None else None
    gpus = default_gpus(executor, device) if gpus is None else gpus
    the_plan = plan(rows, profile, seeds, 1 if executor == "slurm" else concurrency, device,
                    results_dir=results_dir, checkpoint_root=checkpoint_root, **train_overrides)
    for config, why in the_plan.kept:
        print(f"sweep: not trained: {config.row}/seed{config.seed}: {why}", flush=True)
    prepare_data(the_plan.trained)
    lanes = [(c,) for c in the_plan.trained] if executor == "slurm" else the_plan.lanes
    if resume:
        lanes = [in_progress_first(lane, results_dir, checkpoint_root) for lane in lanes]
    timeout_min = (budget_s / 60 + 5) if budget_s is not None else 60 * 24 * 3
    ex = make_executor(executor, log_dir, timeout_min=timeout_min, gpus=gpus, slurm_partition=slurm_partition)
    args = (str(results_dir), None if checkpoint_root is None else str(checkpoint_root), device, deadline, resume,
            checkpoint_every)
    ids = (gpu_ids() if executor == "local" and gpus else [])[:gpus]
    ids = ids if len(ids) == gpus else list(range(gpus))  # asked for more than are visible: take their word
    jobs = []
    for i, lane in enumerate(lanes):
        if executor == "local" and gpus:
            ex.update_parameters(gpus_per_node=1, visible_gpus=(ids[i % gpus],))
        jobs.append(ex.submit(run_lane, list(lane), *args))
        gpu = f" (GPU {ids[i % gpus]})" if executor == "local" and gpus else ""
        print(f"sweep: job {jobs[-1].job_id}{gpu}: " + ", ".join(f"{c.row}/seed{c.seed}" for c in lane), flush=True)
    last_call = time.monotonic()
    while while_waiting is not None and not all(job.done() for job in jobs):
        time.sleep(min(2.0, wait_interval_s))  # look often: the end of the jobs is when time is shortest
        if time.monotonic() - last_call >= wait_interval_s:
            last_call = time.monotonic()
            try:
                while_waiting()
            except Exception as error:  # noqa: BLE001 (the jobs matter more than an interim report)
                print(f"sweep: while waiting: {type(error).__name__}: {error}", flush=True)
    summaries = [{"row": c.row, "seed": c.seed, "status": "kept", "reason": why} for c, why in the_plan.kept]
    for job, lane in zip(jobs, lanes):
        try:
            summaries += job.result()
        except Exception as error:  # noqa: BLE001 (the job as a whole failed: say so, keep the others)
            lines = str(error).strip().splitlines()
            summaries += _summaries_of_failed_job(lane, results_dir, f"{type(error).__name__}: "
                                                  + (lines[-1] if lines else ""))
    for s in summaries:
        error = "" if s.get("test_error") is None else f", test error {100 * s['test_error']:.2f}%"
        if "error" in s:
            error = f": {s['error']}"
        if "reason" in s:
            error = " (not trained: said above)"
        memory = f", peak GPU memory {s['peak_memory_gib']:.1f} GiB" if "peak_memory_gib" in s else ""
        print(f"sweep: {s['row']}/seed{s['seed']}: {s['status']}"
              + (f" after {s['epochs']} epochs" if "epochs" in s else "") + error + memory, flush=True)
    return summaries


def _summaries_of_failed_job(lane: Sequence[RunConfig], results_dir: str | Path, message: str) -> list[dict]:
    """A job that died as a whole (killed, out of host memory): its runs as their run.json last said, and
    "failed" with `message` for the ones that had not finished."""
    summaries = []
    for config in lane:
        summary = {"row": config.row, "seed": config.seed, "status": "failed", "error": message}
        try:
            record = read_run(run_dir(results_dir, config.profile, config.row, config.seed) / RUN_FILE)
        except (ResultsError, OSError):
            record = None
        if record is not None and record.finished and same_config(record.config, config.to_dict()):
            summary = {"row": config.row, "seed": config.seed, "status": "finished", "epochs": record.epochs_run,
                       "test_error": record.test_error}
        summaries.append(summary)
    return summaries
