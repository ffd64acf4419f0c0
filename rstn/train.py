"""Training: `fit` runs the authors' protocol (`rstn.protocol`) with checkpoints and exact resume.

The error reported for a run is the test error at the best-validation epoch (the first epoch reaching the
highest validation accuracy, as the scripts' early-stopping counter defines "best"); the metrics are
`rstn.metrics`, recorded every epoch for valid and test.

Reproducibility: the model is initialised from `torch.manual_seed(seed)`; each epoch's shuffle and dropout
draws come from generators seeded by (seed, epoch) (`rstn.seeding`), so a run resumed from the checkpoint of
epoch k continues exactly as the uninterrupted run would (bit for bit on CPU; on CUDA up to the
nondeterminism of some kernels, e.g. the atomics in grid_sample's backward).

Speed: the passes over the data are `rstn.epoch` (device-resident splits, one host sync per epoch). bf16
autocast, channels_last and torch.compile are config fields, off by default; TF32 is set explicitly (off:
Theano computed in float32, `rstn.backends`) and recorded.

Long runs: `fit(deadline=...)` stops cleanly at an epoch boundary before the deadline, with a checkpoint
to resume from; `checkpoint_every` trades disk writes against the epochs a kill can lose. The checkpoint
bookkeeping of one fit is `_Checkpoints`; the files themselves are `rstn.checkpoints`.

This module knows nothing of Table 1: a run on disk (results folder, run.json, skip/resume) is
`rstn.runs`, the rows and profiles are `rstn.experiments`. It re-exports the names of the modules it was
cut from (`TrainConfig`, the metrics, `DeviceSplit`, the seeding functions), which callers import from here.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from rstn.backends import configure_backends, device_name, follow_thread_share, resolve_device, tune_glibc_malloc
from rstn.checkpoints import (  # noqa: F401 (CHECKPOINT_NAME, load_checkpoint: part of this module's API)
    CHECKPOINT_NAME,
    CheckpointError,
    ResumePoint,
    load_checkpoint,
    save_checkpoint,
)
from rstn.epoch import (  # noqa: F401 (re-exported)
    BudgetExhausted,
    Deadline,
    DeviceSplit,
    SplitLike,
    evaluate,
    train_epoch,
)
from rstn.metrics import digit_error, sequence_error, sequence_loss  # noqa: F401 (re-exported)
from rstn.optim import LasagneRMSprop
from rstn.progress import ProgressLog, counted, format_duration, progress_mode, utc_now
from rstn.protocol import EarlyStopping, TrainConfig, element_clip_for, ramps_dropout  # noqa: F401
from rstn.seeding import (  # noqa: F401 (re-exported)
    DROPOUT_STREAM,
    SHUFFLE_STREAM,
    derive_seed,
    epoch_permutation,
    rng_state,
    set_rng_state,
)

LOG_NAME = "train.log"
ATTENTION_NAME = "attention.npz"


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf; the last good checkpoint is kept."""


STOP_REASONS = ("early_stopping", "max_epochs", "time_budget")


@dataclass
class FitResult:
    """Where `fit` stands: returned at the end, and passed to `on_epoch_end` after every epoch.

    status "finished" (stop_reason "early_stopping" | "max_epochs"), or "running": between epochs
    (stop_reason None) or stopped by the deadline with a checkpoint to resume from ("time_budget").
    history: one dict per epoch (see `fit`); best_state: CPU state_dict of the best epoch (None before
    one); sessions: one dict per process that trained the run (what the caller passed as `session`,
    plus first_epoch, epochs, started_at and ended_at: when it stopped, or its last epoch ended, so that a
    checkpoint, and the record of a resumed run, keep it).
    """

    history: list[dict]
    best_epoch: int
    best_state: dict[str, torch.Tensor] | None
    status: str
    stop_reason: str | None
    elapsed_s: float
    sessions: list[dict]
    started_at: str


class _Loop:
    """What one `fit` trains with: the model on its device, its optimizer, the splits and the run's rules."""

    def __init__(self, model: nn.Module, data: Mapping[str, SplitLike], config: TrainConfig, device: torch.device,
                 seed: int, dropout: float) -> None:
        model.to(device)
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
        params = [p for p in model.parameters() if p.requires_grad]
        self.model, self.config, self.seed, self.dropout, self.device = model, config, seed, dropout, device
        self.optimizer = LasagneRMSprop(params, lr=config.lr, rho=config.rho, eps=config.eps)
        self.element_clip, self.ramp = element_clip_for(config, model), ramps_dropout(config, model)
        if dropout > 0 and not hasattr(model, "set_dropout"):
            raise TypeError("dropout > 0 needs a model with set_dropout(p)")
        self.splits = {name: DeviceSplit.from_split(data[name], device) for name in ("train", "valid", "test")}
        self.n_batches = len(self.splits["train"]) // config.batch_size  # the scripts drop a last partial batch
        if self.n_batches == 0:
            raise ValueError(f"{len(self.splits['train'])} training examples make no batch of {config.batch_size}")
        # torch.compile wraps the module lazily: weights loaded into `model` later are the ones it runs
        self.step_model = torch.compile(model, mode=config.compile_mode) if config.compile else model

    def epoch(self, epoch: int, deadline: Deadline, log: ProgressLog, prefix: str) -> tuple[dict, int]:
        """Train one epoch, then evaluate: its history record (without time_s) and the correct validation
        digits. Raises BudgetExhausted past the deadline (the weights then hold part of an epoch)."""
        config, model, splits = self.config, self.model, self.splits
        lr, p_drop = config.lr_at(epoch), config.dropout_at(epoch, self.dropout, self.ramp)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if hasattr(model, "set_dropout"):
            model.set_dropout(p_drop)
        torch.manual_seed(derive_seed(self.seed, epoch, DROPOUT_STREAM))  # dropout draws: a function of (seed, epoch)
        perm = epoch_permutation(self.seed, epoch, len(splits["train"])).to(splits["train"].labels.device)
        model.train()
        with log.bar(self.n_batches, f"{prefix}epoch {epoch}") as bar:
            sums = train_epoch(self.step_model, self.optimizer, splits["train"], perm, config, self.element_clip, bar,
                               deadline)
        model.eval()
        counts = [*sums, *evaluate(self.step_model, splits["valid"], config),
                  *evaluate(self.step_model, splits["test"], config)]
        # The one host sync of the epoch.
        loss_total, norm_total, tr_c, vd, vs, td, ts = torch.stack([c.double() for c in counts]).tolist()
        # deviation: the scripts also evaluate the whole training set in eval mode every epoch, for the log
        # only; train_error here counts the training batches' own predictions (training mode), at no cost.
        n_train_digits = self.n_batches * config.batch_size * splits["train"].labels.shape[1]
        return {
            "epoch": epoch, "lr": lr, "dropout": p_drop, "train_loss": loss_total / self.n_batches,
            "train_error": 1.0 - tr_c / n_train_digits, "grad_norm": norm_total / self.n_batches,
            "valid_error": 1.0 - vd / splits["valid"].labels.numel(),
            "valid_sequence_error": 1.0 - vs / len(splits["valid"]),
            "test_error": 1.0 - td / splits["test"].labels.numel(),
            "test_sequence_error": 1.0 - ts / len(splits["test"]),
        }, int(vd)


@dataclass(frozen=True)
class _Saved:
    """What the last checkpoint of a `fit` holds, as far as its FitResult goes (epoch -1: none yet)."""

    epoch: int
    best_epoch: int
    best_state: dict | None
    elapsed_s: float


class _Checkpoints:
    """The checkpoint bookkeeping of one `fit`: the state it resumes from, a checkpoint whenever one is due
    (handed to `on_checkpoint` as well: `rstn.runs` writes the resume pack from it), and what the last one
    holds, which a stop between checkpoints goes back to."""

    def __init__(self, path: Path | None, every: int, extra: dict | None,
                 on_checkpoint: Callable[[dict], None] | None) -> None:
        if every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {every}")
        self.path, self.every, self.extra, self.on_checkpoint = path, every, extra or {}, on_checkpoint
        self.saved = _Saved(-1, -1, None, 0.0)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def resume_point(self, resume: bool, chosen: ResumePoint | None, say: Callable[[str], None]) -> ResumePoint | None:
        """`chosen` if given; else with `resume` the checkpoint at `path` if usable; None: start over."""
        if chosen is not None or self.path is None or not self.path.exists():
            return chosen
        if not resume:
            say("starting over: the existing checkpoint is replaced")
            return None
        ckpt = _checkpoint_to_resume(self.path, self.extra, say)
        return ResumePoint(ckpt, self.path, "checkpoint") if ckpt is not None else None

    def restore(self, point: ResumePoint | None, loop: _Loop) -> tuple[FitResult, EarlyStopping, int]:
        """The run's state, its early-stopping counter and first epoch: fresh, or loaded from `point`."""
        if point is None:
            return FitResult([], -1, None, "running", None, 0.0, [], utc_now()), \
                EarlyStopping(loop.config.patience), 0
        ckpt = point.state
        loop.model.load_state_dict(ckpt["model"])
        loop.optimizer.load_state_dict(ckpt["optimizer"])
        stopper = EarlyStopping(loop.config.patience, ckpt["best_epoch"], ckpt["best_valid_correct"])
        state = FitResult(list(ckpt["history"]), ckpt["best_epoch"], ckpt["best_state"], "running", None,
                          ckpt["elapsed_s"], list(ckpt["sessions"]), ckpt["started_at"])
        set_rng_state(ckpt["rng"])
        self.saved = _Saved(ckpt["epoch"], state.best_epoch, state.best_state, state.elapsed_s)
        return state, stopper, ckpt["epoch"] + 1

    def due(self, epoch: int, first_epoch: int, done: bool) -> bool:
        """A checkpoint after `epoch`: when the run is done, and every `every` epochs of this fit."""
        return done or (epoch + 1 - first_epoch) % self.every == 0

    def save(self, epoch: int, loop: _Loop, stopper: EarlyStopping, state: FitResult) -> None:
        checkpoint = {
            "model": loop.model.state_dict(), "optimizer": loop.optimizer.state_dict(), "epoch": epoch,
            "history": state.history, "best_epoch": stopper.best_epoch, "best_valid_correct": stopper.best_correct,
            "best_state": state.best_state, "rng": rng_state(), "elapsed_s": state.elapsed_s,
            "sessions": state.sessions, "started_at": state.started_at, "extra": self.extra}
        if self.path is not None:
            save_checkpoint(self.path, checkpoint)
        if self.on_checkpoint is not None:
            self.on_checkpoint(checkpoint)
        self.saved = _Saved(epoch, stopper.best_epoch, state.best_state, state.elapsed_s)

    def rewind(self, state: FitResult) -> None:
        """Forget the epochs after the last checkpoint (with checkpoint_every > 1): the weights that ended them
        are gone, so the result must say what a resume starts from, and the resume trains them again."""
        saved = self.saved
        del state.history[saved.epoch + 1:]
        for session in state.sessions:  # earlier fits' sessions end before `saved` and stay as they are
            session["epochs"] = min(session["epochs"], max(0, saved.epoch + 1 - session["first_epoch"]))
        state.best_epoch, state.best_state, state.elapsed_s = saved.best_epoch, saved.best_state, saved.elapsed_s


@dataclass
class _Fit:
    """One call of `fit`: the loop, its checkpoints, the early-stopping counter and the result so far."""

    loop: _Loop
    keeper: _Checkpoints
    log: ProgressLog
    prefix: str
    deadline: Deadline
    on_epoch_end: Callable[[FitResult], None] | None
    state: FitResult = field(init=False)
    stopper: EarlyStopping = field(init=False)
    start_epoch: int = field(init=False)
    session: dict = field(init=False)

    def start(self, point: ResumePoint | None, session: dict | None) -> None:
        self.state, self.stopper, self.start_epoch = self.keeper.restore(point, self.loop)
        if point is not None:
            self.log(f"{self.prefix}resumed from {point.describe()}")
        self.session = dict(session or {}) | {"started_at": utc_now(), "first_epoch": self.start_epoch, "epochs": 0}
        self.own_sessions = len(self.state.sessions)  # where this fit's sessions begin in state.sessions
        self.state.sessions.append(self.session)

    def run(self) -> FitResult:
        """Epochs until early stopping, max_epochs or the deadline."""
        config = self.loop.config
        for epoch in range(self.start_epoch, config.max_epochs):
            if epoch > 0 and self.stopper.should_stop(epoch - 1):
                self.state.stop_reason = "early_stopping"  # only when resuming a run that had already stopped
                break
            if self.state.history and self.deadline.passed(after=_epoch_estimate(self.state.history)):
                self.state.stop_reason = "time_budget"
                break
            self._follow_threads(epoch)
            t0 = time.perf_counter()
            try:
                record, valid_correct = self.loop.epoch(epoch, self.deadline, self.log, self.prefix)
            except BudgetExhausted:
                return self._abandon(epoch)
            self._check_finite(record, epoch)
            if self._keep(record, valid_correct, t0):
                break
        else:
            self.state.stop_reason = "max_epochs"
        return self._end()

    def _follow_threads(self, epoch: int) -> None:
        """Take the CPU thread count `rstn.backends.share_threads` hands out (a queue lane whose neighbour has
        ended). A new count starts a new session: each session holds epochs of one device and thread count,
        which is what the queue's epoch times are read by."""
        side_by_side = follow_thread_share()
        if side_by_side is None:  # no policy, or the same count
            return
        if self.session["epochs"]:
            self.session = {k: v for k, v in self.session.items() if k != "ended_at"} | {
                "started_at": utc_now(), "first_epoch": epoch, "epochs": 0}
            self.state.sessions.append(self.session)
        self.session["device"] = device_name(self.loop.device)
        if "lanes" in self.session:
            self.session["lanes"] = side_by_side
        self.log(f"{self.prefix}from epoch {epoch} on {self.session['device']}, {side_by_side} run(s) side by side")

    def _check_finite(self, record: dict, epoch: int) -> None:
        # A non-finite gradient norm corrupts the weights even when every loss of the epoch was finite.
        loss, norm = record["train_loss"], record["grad_norm"] * self.loop.n_batches
        if math.isfinite(loss) and math.isfinite(norm):
            return
        saved, path = self.keeper.saved.epoch, self.keeper.path
        where = f"the last good checkpoint (epoch {saved}) is kept in {path}" if (
            path is not None and saved >= 0) else "no checkpoint was written"
        what = f"training loss became {loss}" if not math.isfinite(loss) else f"gradient norm became {norm}"
        raise NonFiniteLossError(f"{self.prefix}{what} in epoch {epoch}; {where}")

    def _keep(self, record: dict, valid_correct: int, t0: float) -> bool:
        """Record an epoch, checkpoint it if due, log it; True when early stopping ends the run here."""
        state, stopper, epoch, config = self.state, self.stopper, record["epoch"], self.loop.config
        if stopper.update(epoch, valid_correct):
            state.best_state = _cpu_copy(self.loop.model)
        record["time_s"] = time.perf_counter() - t0
        state.history.append(record)
        state.elapsed_s += record["time_s"]
        state.best_epoch = stopper.best_epoch
        self.session["epochs"] += 1
        self.session["ended_at"] = utc_now()  # so far: the checkpoint, and a resumed run's record, keep it
        done = stopper.should_stop(epoch) or epoch + 1 == config.max_epochs
        if self.keeper.due(epoch, self.start_epoch, done):
            self.keeper.save(epoch, self.loop, stopper, state)
        self.log(self.prefix + epoch_line(record, stopper.best_epoch)
                 + _eta(state.history, epoch, config, stopper, self.deadline))
        if self.on_epoch_end is not None:
            self.on_epoch_end(state)
        if stopper.should_stop(epoch):  # look_count reaches 0: 50 epochs without a gain
            state.stop_reason = "early_stopping"
            return True
        return False

    def _abandon(self, epoch: int) -> FitResult:
        """Out of time inside `epoch`: nothing of it is saved, the run resumes from the last checkpoint."""
        saved = self.keeper.saved.epoch
        kept = f"the checkpoint after epoch {saved} is kept" if saved >= 0 else "no epoch is saved yet"
        self.log(f"{self.prefix}out of time in epoch {epoch}: it is discarded; {kept}")
        self.state.stop_reason = "time_budget"
        if saved < len(self.state.history) - 1:
            self.keeper.rewind(self.state)
        return _stopped(self.state, self.session, self.own_sessions)

    def _end(self) -> FitResult:
        state, last = self.state, len(self.state.history) - 1
        if state.stop_reason != "time_budget" and state.best_state is None and state.history:
            # no epoch got a single validation digit right: report the last one
            state.best_epoch, state.best_state = last, _cpu_copy(self.loop.model)
        if state.stop_reason == "time_budget" and state.history and self.keeper.saved.epoch < last:
            self.keeper.save(last, self.loop, self.stopper, state)
        return _stopped(state, self.session, self.own_sessions)


def fit(
    model: nn.Module,
    data: Mapping[str, SplitLike],
    config: TrainConfig = TrainConfig(),
    *,
    seed: int = 0,
    dropout: float = 0.0,
    device: str | torch.device | None = None,
    run_dir: str | Path | None = None,
    checkpoint_path: str | Path | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    resume_from: ResumePoint | None = None,
    deadline: float | None = None,
    progress: str | bool | None = "auto",
    label: str = "",
    checkpoint_extra: dict | None = None,
    session: dict | None = None,
    on_epoch_end: Callable[[FitResult], None] | None = None,
    on_checkpoint: Callable[[dict], None] | None = None,
) -> FitResult:
    """Train `model` on data["train"], evaluating on data["valid"] and data["test"] every epoch.

    model: forward(x (B, 1, H, W)) -> object with `.logits` (B, T, K); optional `set_dropout(p)`,
    `uses_element_clipping` and `ramps_dropout`; initialised (seeded) by the caller. data: {"train", "valid",
    "test"}, each with images (N, H, W) in [0, 1] and labels (N, T). seed: with the epoch number, seeds each
    epoch's shuffle and dropout draws. dropout: the target probability (ramped in over
    `config.dropout_ramp_epochs` where the model ramps). run_dir: where train.log goes (None: no log file),
    and the checkpoint unless `checkpoint_path` says where. checkpoint_every: a checkpoint after every this
    many epochs, and always when the run stops; 1: a kill loses at most the epoch in progress. resume: go on
    from the checkpoint if it exists and holds the same `checkpoint_extra["config"]`, else start over.
    resume_from: a state the caller chose (a checkpoint or a resume pack, `rstn.checkpoints.resume_point`);
    it replaces `resume`'s own look. deadline: a time.monotonic() value; an epoch that the last epochs' times
    say would end past it is not started, and one that runs past it is abandoned: the run stops "running"
    with stop_reason "time_budget" and a checkpoint of its last whole epoch. progress: 'auto' | 'bar' |
    'text' | 'none' (`progress_mode`); label: the prefix of its lines. checkpoint_extra: stored in the
    checkpoint as is (the run's resolved config, for resume checks). session: facts of this process (commit,
    device, ...) appended to `FitResult.sessions`. on_epoch_end: called with the running FitResult after each
    epoch (and its checkpoint, if due). on_checkpoint: called with each checkpoint's state once written.

    Returns FitResult. Each history record holds: epoch, lr, dropout, train_loss (mean over the epoch's
    batches), train_error (per-digit, on the training batches in training mode), grad_norm (mean total norm
    the constraint saw), valid_error, valid_sequence_error, test_error, test_sequence_error, time_s.

    Raises NonFiniteLossError when an epoch's training loss or gradient norm was NaN or inf; nothing of that
    epoch is saved.
    """
    device = resolve_device(device)
    configure_backends(config.tf32, config.cudnn_benchmark)
    if device.type == "cpu":
        tune_glibc_malloc()
    run_dir = Path(run_dir) if run_dir is not None else None
    if checkpoint_path is None and run_dir is not None:
        checkpoint_path = run_dir / CHECKPOINT_NAME
    keeper = _Checkpoints(Path(checkpoint_path) if checkpoint_path is not None else None, checkpoint_every,
                          checkpoint_extra, on_checkpoint)
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
    log = ProgressLog(progress_mode(progress), run_dir / LOG_NAME if run_dir is not None else None)
    prefix = f"{label} " if label else ""
    run = _Fit(_Loop(model, data, config, device, seed, dropout), keeper, log, prefix, Deadline(deadline),
               on_epoch_end)
    run.start(keeper.resume_point(resume, resume_from, lambda line: log(prefix + line)), session)
    return run.run()


def epoch_line(record: Mapping, best_epoch: int) -> str:
    """One epoch of the training log, from its history record (`fit`), e.g. "epoch   3  lr 5.00e-04  loss
    0.5695  train 18.25%  valid 12.59% (seq 32.64%)  test 12.80% (seq 33.49%)  best 2  399.1s"."""
    return (f"epoch {record['epoch']:3d}  lr {record['lr']:.2e}  loss {record['train_loss']:.4f}  "
            f"train {100 * record['train_error']:.2f}%  valid {100 * record['valid_error']:.2f}% "
            f"(seq {100 * record['valid_sequence_error']:.2f}%)  test {100 * record['test_error']:.2f}% "
            f"(seq {100 * record['test_sequence_error']:.2f}%)  best {best_epoch}  {record['time_s']:.1f}s")


def _cpu_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _checkpoint_to_resume(path: Path, extra: dict, say: Callable[[str], None]) -> dict | None:
    """The checkpoint to resume from, or None, saying why, when it is unreadable or another config's."""
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as err:
        say(f"{err}: starting over")
        return None
    if ckpt.get("extra", {}).get("config") != extra.get("config"):
        say(f"checkpoint {path} was written for another config: starting over")
        return None
    return ckpt


def _stopped(state: FitResult, session: dict, own_from: int) -> FitResult:
    """The final FitResult: finished unless the deadline stopped it. A session of this fit (those from index
    `own_from` on) that trained no epoch is left out of `sessions`: it changed nothing (e.g. a CPU queue lane
    reaching a run another lane has just paused, or a thread change whose epochs a rewind took back). A run
    that has trained nothing at all keeps its one session."""
    session["ended_at"] = utc_now()
    own = state.sessions[own_from:]
    state.sessions[own_from:] = [s for s in own if s["epochs"]] or ([] if own_from else own[:1])
    if state.stop_reason != "time_budget":
        state.status = "finished"
    return state


def _epoch_estimate(history: Sequence[Mapping]) -> float:
    """Seconds the next epoch may take: the slowest of the last three, with 10% to spare."""
    return 1.1 * max(r["time_s"] for r in history[-3:])


def _eta(history: Sequence[Mapping], epoch: int, config: TrainConfig, stopper: EarlyStopping,
         deadline: Deadline) -> str:
    """'  eta ...': time to the protocol's latest end (max_epochs, or early stopping if sooner) and budget."""
    last = min(config.max_epochs, stopper.best_epoch + config.patience + 1) - 1
    per_epoch = statistics.fmean(r["time_s"] for r in history[-5:])
    text = f"  eta <= {format_duration((last - epoch) * per_epoch)} ({counted(last - epoch, 'epoch')})"
    if deadline.at is not None:
        text += f", budget left {format_duration(deadline.left())}"
    return text
