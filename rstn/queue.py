"""The CPU queue (`rstn train --cpu-queue`): the runs of `CPU_QUEUE`, planned for the machine it is on.

Machines differ: two 2-core CPUs that both read "AMD EPYC" trained 1.7x apart. At its start the queue
prints this processor (`rstn.backends.processor_id`) and, for each run not finished yet, its epoch time
here (from the run's own epochs on this processor at this thread count, else a few timed training
steps) and how far the budget takes it. A run that can resume (a local checkpoint or its resume pack)
goes first, so that a run in progress is finished before another starts: one pack to commit per lane.

Lanes (`--lanes 2`): the queue trains two runs side by side in two processes, each with half the
threads, each taking the next run in order that the other is not training (`rstn.runlock`). On the 2-core
Zen 5 two one-thread lanes trained ffn-spn-d3 at 0.57x and rnn-spn-d4-bf16 at 0.58x of their two-thread
speed, 1.14x the queue's throughput (benchmarks/README.md, "CPU queue lanes"). A lane that has no more
work hands its threads to the lanes still training: they take them at their next epoch (`lane_share`).

A run that would start from epoch 0 and that the budget takes only a few epochs (`MIN_NEW_EPOCHS`) is not
started: a lane that reaches it passes over it to the next run, and ends where none fits, so that its
threads speed up the runs in progress. Nor is one whose resume pack the repository's history has no room
for (`rstn.history`). `--no-new-runs` starts no new run at all.
"""

from __future__ import annotations

import math
import re
import signal
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from rstn.backends import processor_id, resolve_device
from rstn.checkpoints import PACK_NAME
from rstn.experiments import CPU_QUEUE, RunConfig, run_config, run_dir, same_config
from rstn.history import HISTORY_LIMIT_MIB, no_room_reason, pack_cost_mib, why_no_room
from rstn.progress import counted, format_duration
from rstn.records import RUN_FILE, ResultsError, RunRecord, read_run
from rstn.runs import checkpoint_path


# A run the budget would take fewer epochs than this from epoch 0 (or half its epochs) is not started: its
# resume pack, committed when the queue stops, would cost the repository's history 10-30 MB (every
# committed pack stays in it) for a few epochs' progress; its lane tries the next run, or ends and hands
# its threads to the others.
MIN_NEW_EPOCHS = 20


def queue_configs(profile: str = "paper") -> list[RunConfig]:
    """The resolved configs of `CPU_QUEUE`, in its order."""
    return [run_config(row, profile, seed) for row, seed in CPU_QUEUE]


def _record(config: RunConfig, results_dir: str | Path) -> RunRecord | None:
    path = run_dir(results_dir, config.profile, config.row, config.seed) / RUN_FILE
    try:
        return read_run(path) if path.exists() else None
    except ResultsError:  # train_run says what is wrong with it
        return None


def can_resume(config: RunConfig, results_dir: str | Path, checkpoint_root: str | Path | None) -> bool:
    """In progress with the same config, and a checkpoint here or its resume pack to continue from."""
    record = _record(config, results_dir)
    folder = run_dir(results_dir, config.profile, config.row, config.seed)
    return (record is not None and record.status == "running" and same_config(record.config, config.to_dict())
            and (checkpoint_path(config, checkpoint_root).exists() or (folder / PACK_NAME).exists()))


def bf16_deferred(configs: Sequence[RunConfig], native_bf16: bool) -> tuple[list[RunConfig], list[RunConfig]]:
    """(`configs` in order with the bf16 runs moved to the end, those runs) where this CPU has no native
    bf16 (`rstn.backends.has_native_bf16`): emulated, a bf16 run would hold the queue several times as long
    as its float32 row. With native bf16 the order is kept and nothing is deferred."""
    if native_bf16:
        return list(configs), []
    deferred = [c for c in configs if c.train.bf16]
    return [c for c in configs if not c.train.bf16] + deferred, deferred


def resumable_first(configs: Sequence[RunConfig], results_dir: str | Path,
                    checkpoint_root: str | Path | None) -> list[RunConfig]:
    """`configs` with the runs that can resume moved to the front; the order is otherwise kept."""
    return sorted(configs, key=lambda c: not can_resume(c, results_dir, checkpoint_root))


def lane_threads(lanes: int) -> int:
    """Threads per lane: this process's torch threads shared out, at least one."""
    return lane_share(torch.get_num_threads(), lanes)


def session_threads(session: dict) -> int | None:
    """The torch threads a session trained with, read from its device ("cpu (2 cores, 1 threads)")."""
    found = re.search(r"(\d+) threads", session.get("device", ""))
    return int(found.group(1)) if found else None


def epoch_time_here(record: RunRecord | None, processor: str, threads: int | None = None,
                    last: int = 10) -> float | None:
    """Mean seconds of the run's last `last` epochs trained on `processor` (sessions[].cpu), with `threads`
    torch threads if given; None if none."""
    if record is None:
        return None
    times = []
    for session in record.sessions:
        if session.get("cpu") == processor and threads in (None, session_threads(session)):
            first = session.get("first_epoch", 0)
            times += [h["time_s"] for h in record.history[first:first + session.get("epochs", 0)]]
    return statistics.fmean(times[-last:]) if times else None


def probe_epoch_time(config: RunConfig, device: str | torch.device = "cpu", steps: int = 3,
                     threads: int | None = None) -> float:
    """An epoch's seconds here, from `steps` timed training steps and one timed evaluation batch of the
    row's model on random images (after two warm-up steps): the train split's batches plus evaluating
    valid and test; with `threads` torch threads if given. Another process on the machine slows it as it
    slows training."""
    if threads is not None:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return probe_epoch_time(config, device, steps)
        finally:
            torch.set_num_threads(before)
    from rstn.backends import configure_backends, tune_glibc_malloc
    from rstn.models import build_model
    from rstn.optim import LasagneRMSprop
    from rstn.train import DeviceSplit, element_clip_for, evaluate, train_epoch

    device = resolve_device(device)
    train = config.train
    configure_backends(train.tf32, train.cudnn_benchmark)  # as `fit` sets them up, so that steps time alike
    if device.type == "cpu":
        tune_glibc_malloc()
    torch.manual_seed(0)
    model = build_model(config.model).to(device)
    if train.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = LasagneRMSprop([p for p in model.parameters() if p.requires_grad], lr=train.lr, rho=train.rho,
                               eps=train.eps)
    size = config.model.input_size
    n_eval = train.eval_batch_size

    def split(n: int) -> DeviceSplit:
        return DeviceSplit(torch.rand(n, size, size, device=device),
                           torch.randint(0, config.model.n_classes, (n, config.model.steps), device=device))

    def timed(fn: Callable[[], object]) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    warm, steps_split, eval_split = split(2 * train.batch_size), split(steps * train.batch_size), split(n_eval)
    clip = element_clip_for(train, model)
    model.train()
    train_epoch(model, optimizer, warm, torch.arange(len(warm), device=device), train, clip)  # two warm-up steps
    per_step = timed(lambda: train_epoch(model, optimizer, steps_split, torch.arange(len(steps_split), device=device),
                                         train, clip)) / steps
    model.eval()
    per_eval = timed(lambda: evaluate(model, eval_split, train)) / n_eval
    data = config.data
    return per_step * (data.n_train // train.batch_size) + per_eval * (data.n_valid + data.n_test)


@dataclass(frozen=True)
class PlannedRun:
    """One run of the queue as planned here: where it stands, its epoch time here, how far it gets."""

    config: RunConfig
    epochs_done: int
    epochs_left: int  # to the protocol's end were the run to improve no more: max_epochs or early stopping
    epoch_s: float
    source: str  # where epoch_s comes from
    reach: int  # epochs done when the budget runs out (epochs_done + epochs_left: the run ends in it)
    lane: int | None = None  # with lanes: the lane (1, 2, ...) that takes it; None where none gets to it
    left_out: bool = False  # not started: from epoch 0 the budget would take it only `reach` epochs, or:
    no_room: tuple[float, float] | None = None  # (the history's MiB after its pack, the pack's): over the limit

    def line(self) -> str:
        c = self.config
        end = self.epochs_done + self.epochs_left
        if self.no_room is not None:
            fate = f"not started: {no_room_reason(*self.no_room)}"
        elif self.left_out:
            fate = (f"not started: the budget would take it only {counted(self.reach, 'epoch')} from scratch "
                    f"(a run starts with {MIN_NEW_EPOCHS}, or half its epochs, in view: each committed resume pack "
                    "stays in the repository's history)")
        elif self.reach >= end and end < c.train.max_epochs:  # `end` is early stopping's, were it to improve no more
            fate = f"ends in the budget if it improves no more (early stopping after epoch {end})"
        elif self.reach >= end:
            fate = f"ends in the budget (by epoch {end})"
        elif self.reach > self.epochs_done:
            fate = f"the budget takes it to {self.reach} of at most {end} epochs"
        else:
            fate = "not reached"
        state = f"{self.epochs_done} epochs done" if self.epochs_done else "from epoch 0"
        lane = f" (lane {self.lane})" if self.lane is not None else ""
        return (f"  {c.row}/seed{c.seed}{lane}: {state}; {self.epoch_s:.0f} s per epoch here ({self.source}); "
                f"{fate}")


def plan(configs: Sequence[RunConfig], budget_s: float | None, results_dir: str | Path = "results",
         checkpoint_root: str | Path | None = None, device: str | torch.device = "cpu",
         probe: Callable[[RunConfig], float] | None = None, lanes: int = 1, used_mib: float | None = None,
         pack_cost: Callable[[RunConfig], float] = pack_cost_mib) -> list[PlannedRun]:
    """The queue's unfinished runs in order, each with its epoch time here and how far `budget_s` takes it.

    With `lanes`, each run goes to the lane that is free first; a lane stops in the first run the budget
    does not see to its end, as the queue does. probe: config -> seconds per epoch, where the run has no
    epochs on this processor at a lane's thread count (default: `probe_epoch_time`, once per row). With
    `used_mib` (the history now, `rstn.history.history_mib`), a run from epoch 0 that the budget cuts is
    left out when its pack (pack_cost: config -> MiB) and those of the runs cut before it would take the
    history over `HISTORY_LIMIT_MIB`.
    """
    here, threads = processor_id(), lane_threads(lanes)
    probed: dict[str, float] = {}
    budget = budget_s if budget_s is not None else float("inf")
    free_at: list[float | None] = [0.0] * lanes  # when each lane takes its next run; None: stopped
    history_after = used_mib  # with the packs of the runs cut so far
    planned = []
    for config in configs:
        record = _record(config, results_dir)
        if record is not None and record.finished:
            continue
        same = record is not None and same_config(record.config, config.to_dict())
        epoch_s = epoch_time_here(record, here, threads) if same else None
        source = "its own epochs on this processor"
        # a run in progress with neither checkpoint nor pack here starts over
        history = record.history if same and can_resume(config, results_dir, checkpoint_root) else []
        if epoch_s is None:
            if config.row not in probed:
                probed[config.row] = (probe or (lambda c: probe_epoch_time(c, device, threads=threads)))(config)
            epoch_s, source = probed[config.row], "timed steps"
        train = config.train
        best = record.best_epoch if history and record.best_epoch is not None else None
        end = min(train.max_epochs, best + train.patience + 1) if best is not None else train.max_epochs
        done = len(history)
        running = [k for k, t in enumerate(free_at) if t is not None]
        lane = min(running, key=lambda k: free_at[k]) if running else None
        reach, left_out, no_room = done, False, None
        if lane is not None:
            left = max(0.0, budget - free_at[lane])
            affordable = end - done if epoch_s <= 0 or math.isinf(left) else int(left // epoch_s)
            reach = min(end, done + affordable)
            left_out = done == 0 and reach < min(min_new_epochs(config), end)
            if not left_out and reach < end and history_after is not None:  # the budget cuts it: a pack
                cost = pack_cost(config)
                if done == 0 and history_after + cost > HISTORY_LIMIT_MIB:
                    left_out, no_room = True, (history_after + cost, cost)
                else:
                    history_after += cost
            if not left_out:  # a lane stops in the first run the budget does not see to its end
                free_at[lane] = free_at[lane] + (reach - done) * epoch_s if reach >= end else None
        planned.append(PlannedRun(config, done, end - done, epoch_s, source, reach,
                                  lane + 1 if lanes > 1 and lane is not None and not left_out else None, left_out,
                                  no_room))
    return planned


def min_new_epochs(config: RunConfig) -> int:
    """The epochs the budget must still hold for a run that starts from epoch 0 (`MIN_NEW_EPOCHS`; half the
    run's epochs for a short one)."""
    return min(MIN_NEW_EPOCHS, config.train.max_epochs // 2)


@dataclass(frozen=True)
class StartRule:
    """Whether a run may be started with `left_s` of the budget left (`rstn.runlist.train_configs(
    why_not_start=...)`): a run that resumes or has finished always; one that starts from epoch 0 when the
    budget holds `min_new_epochs` of its planned epoch time and, where the budget may cut it (it holds fewer
    than max_epochs), when the repository's history has room for the pack it would leave
    (`rstn.history.why_no_room`).
    Decided when a lane reaches the run, as a run before it may have ended later than planned. Picklable: it
    goes to the lanes' processes."""

    epoch_s: dict[tuple[str, int], float]
    results_dir: str
    checkpoint_root: str | None

    @classmethod
    def from_plan(cls, planned: Sequence[PlannedRun], results_dir: str | Path,
                  checkpoint_root: str | Path | None) -> StartRule:
        return cls({(p.config.row, p.config.seed): p.epoch_s for p in planned}, str(results_dir),
                   None if checkpoint_root is None else str(checkpoint_root))

    def __call__(self, config: RunConfig, left_s: float) -> str | None:
        """Why the run is not started, or None to start it."""
        record = _record(config, self.results_dir)
        if (record is not None and record.finished) or can_resume(config, self.results_dir, self.checkpoint_root):
            return None  # a finished run is skipped, one in progress resumes: `train_run` says which
        epoch_s = self.epoch_s.get((config.row, config.seed), 0.0)
        needed_s = min_new_epochs(config) * epoch_s
        if needed_s > left_s:
            return (f"would start from epoch 0, which needs {format_duration(needed_s)} of the budget; "
                    f"{format_duration(left_s)} is left")
        if left_s < config.train.max_epochs * epoch_s:  # the budget may cut it: it would leave a pack
            return why_no_room(config, self.results_dir)
        return None


def held_back(configs: Sequence[RunConfig], results_dir: str | Path, checkpoint_root: str | Path | None
              ) -> tuple[list[RunConfig], list[RunConfig]]:
    """(the runs that can resume, the others not finished yet), each in order: `--no-new-runs` trains the
    first and starts none of the second, so that the runs in progress finish before any new pack is made."""
    resumable, others = [], []
    for config in configs:
        if can_resume(config, results_dir, checkpoint_root):
            resumable.append(config)
        elif (record := _record(config, results_dir)) is None or not record.finished:
            others.append(config)
    return resumable, others


def describe_plan(planned: Sequence[PlannedRun], budget_s: float | None, deferred: Sequence[RunConfig] = (),
                  lanes: int = 1, not_started: Sequence[RunConfig] = ()) -> str:
    """The lines the queue prints at its start (`deferred`: the runs `bf16_deferred` moved to the end;
    `not_started`: the runs `--no-new-runs` holds back, `held_back`)."""
    budget = format_duration(budget_s) if budget_s is not None else "no budget"
    side = f", {lanes} lanes of {lane_threads(lanes)} thread(s) side by side" if lanes > 1 else ""
    head = f"CPU queue on {processor_id()}, {budget}{side}:"
    empty = "  no run in progress" if not_started else "  every run is finished"
    lines = [head, *(p.line() for p in planned)] if planned else [head, empty]
    if not_started:
        lines.append(f"  not started (--no-new-runs): {len(not_started)} run(s) not in progress, from "
                     f"{not_started[0].row}/seed{not_started[0].seed} on")
    if deferred:
        names = ", ".join(f"{c.row}/seed{c.seed}" for c in deferred)
        lines.append(f"  deferred to the end: {names} (bf16 autocast, which this processor has no native bf16 "
                     "for: emulated, it trains several times slower than float32)")
    return "\n".join(lines)


def _pack_bytes(config: RunConfig) -> int:
    from rstn.checkpoints import pack_bytes
    from rstn.models import build_model

    return pack_bytes(build_model(config.model))


def history_line(planned: Sequence[PlannedRun], used_mib: float | None,
                 pack_size: Callable[[RunConfig], int] = _pack_bytes,
                 pack_cost: Callable[[RunConfig], float] = pack_cost_mib) -> str | None:
    """The queue's last line: the repository's history (`used_mib`, `rstn.history.history_mib`) against
    `HISTORY_LIMIT_MIB` and the resume packs the plan leaves to commit (the runs the budget cuts), with what
    they will cost it; None outside git (`used_mib` None). pack_size: config -> bytes on disk of its pack;
    pack_cost: config -> MiB of history."""
    if used_mib is None:
        return None
    cut = [p.config for p in planned if not p.left_out and p.epochs_done < p.reach < p.epochs_done + p.epochs_left]
    text = f"  history: {used_mib:.0f} MiB of the repository's {HISTORY_LIMIT_MIB}"
    if not cut:
        return text + "; the plan leaves no resume pack to commit"
    costs = [pack_cost(config) for config in cut]
    after = used_mib + sum(costs)
    text += ("; when the budget ends, resume packs to commit: "
             + ", ".join(f"{c.row}/seed{c.seed} {pack_size(c) / 1e6:.0f} MB (about {cost:.0f} MiB of history)"
                         for c, cost in zip(cut, costs))
             + f"; the history then about {after:.0f} MiB")
    if after > HISTORY_LIMIT_MIB:
        text += ": more than it has room for"
    return text


def run_lanes(configs: Sequence[RunConfig], lanes: int, **train_kwargs) -> int:
    """Train `configs` in `lanes` processes side by side, each with `lane_threads(lanes)` torch threads; a
    lane with no more work hands its threads to the others (`lane_share`).

    Each lane walks `configs` in order through `rstn.runlist.train_configs` and takes the next run that the
    others are not training (a busy run is left to its lane, `rstn.runlock`); each stops, as the queue does,
    in the first run its budget does not see to its end, and prints its own summary. SIGTERM or SIGHUP to
    this process ends the lanes too (each loses at most the epoch in progress), and on Linux so does its
    death by any signal. Call it from the main thread (it sets signal handlers). Returns the worst lane's
    exit status (128 + N for a lane killed by signal N).
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: its own torch thread pool
    total, training = torch.get_num_threads(), context.Value("i", lanes)
    workers = [context.Process(target=_lane, args=(k, list(configs), total, lanes, training, train_kwargs),
                               name=f"lane {k}") for k in range(1, lanes + 1)]

    def end_lanes(signum, frame):
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
        raise SystemExit(128 + signum)

    ended = (signal.SIGTERM, signal.SIGHUP)
    before = {number: signal.signal(number, end_lanes) for number in ended}  # main thread only
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)
    return max(_exit_status(worker.exitcode) for worker in workers)


def _exit_status(exitcode: int | None) -> int:
    """A lane's exit status as a shell gives it: 128 + N for a lane killed by signal N (exitcode -N)."""
    if exitcode is None:
        return 1
    return 128 - exitcode if exitcode < 0 else exitcode


def _end_with_parent() -> None:
    """Linux: this process gets SIGTERM when its parent dies, even by SIGKILL, so no lane trains on alone."""
    try:
        import ctypes

        pr_set_pdeathsig = 1  # <sys/prctl.h>
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: a lane outlives a killed queue until its budget ends
        pass


def lane_share(total: int, training: int) -> int:
    """A lane's threads while `training` lanes still train on `total` threads: the threads of the lanes that
    have ended go to the others."""
    return max(1, total // max(1, training))


def _lane(number: int, configs: list[RunConfig], total: int, lanes: int, training, train_kwargs: dict) -> None:
    """One lane of `run_lanes` (a process of its own); exits with 1 if a run failed (diverged or kept).
    training: the shared count of lanes still training; a lane takes its share of the `total` threads before
    every epoch (`rstn.backends.share_threads`) and gives its own back when it ends."""
    import sys

    from rstn.backends import share_threads
    from rstn.runlist import describe_outcomes, train_configs

    _end_with_parent()
    threads = lane_share(total, lanes)
    torch.set_num_threads(threads)
    share_threads(lambda: (lane_share(total, training.value), max(1, training.value)))
    start = time.monotonic()
    try:
        outcomes = train_configs(configs, resume=True, lanes=lanes, **train_kwargs)
    finally:
        with training.get_lock():
            training.value -= 1
    text, failed = describe_outcomes(outcomes, time.monotonic() - start)
    print(f"lane {number} ({threads} thread(s)): {text}", file=sys.stderr, flush=True)
    sys.exit(1 if failed else 0)
