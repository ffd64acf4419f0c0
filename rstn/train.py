"""Training: the authors' protocol, the metrics, checkpoints and exact resume.

The protocol (PROTOCOL.md, "Training"; `rnn_spn.py` / `ffn_spn.py` of the authors' code) is the default of
`TrainConfig`: batches of 100 reshuffled every epoch, RMSprop lr 5e-4 rho 0.9 with eps 1e-6 inside the
square root (`rstn.optim`), gradients clipped to [-1, 1] element-wise and then to total norm 5 for RNN-SPN
(total norm 5 only for the others), lr / 1.5 after epochs 31, 43, 55, ..., early stopping after 50 epochs
without a gain in validation accuracy, at most 300 epochs, loss = mean over the B x 3 digits of
-log(softmax + 1e-5). Epochs are numbered from 0, as in the scripts.

Metrics, recorded every epoch for valid and test (fractions in [0, 1], not %):
    error           per-digit error, 1 - accuracy over all 3 positions flattened (the paper's Table 1 metric)
    sequence_error  1 - fraction of sequences with all 3 digits right
The error reported for a run is the test error at the best-validation epoch (the first epoch reaching the
highest validation accuracy, as the scripts' early-stopping counter defines "best").

Reproducibility: the model is initialised from `torch.manual_seed(seed)`; each epoch's shuffle and dropout
draws come from generators seeded by (seed, epoch), so a run resumed from the checkpoint of epoch k
continues exactly as the uninterrupted run would (bit for bit on CPU; on CUDA up to the nondeterminism of
some kernels, e.g. the atomics in grid_sample's backward).

Speed: the data live on the training device as one tensor per split; batches are gathered by index on the
device; loss, correct counts and gradient norms accumulate in device tensors and are read once per epoch,
so a step never waits for the host. bf16 autocast, channels_last and torch.compile are config fields,
off by default; TF32 is set explicitly (off: Theano computed in float32, `rstn.backends`) and recorded.

Long runs: `fit(deadline=...)` stops cleanly at an epoch boundary before the deadline, with a checkpoint
to resume from; `checkpoint_every` trades disk writes against the epochs a kill can lose.

This module knows nothing of Table 1: a run on disk (results folder, run.json, skip/resume) is
`rstn.runs`, the rows and profiles are `rstn.experiments`.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rstn.backends import configure_backends, resolve_device, tune_glibc_malloc
from rstn.checkpoints import (  # noqa: F401 (CHECKPOINT_NAME, load_checkpoint: part of this module's API)
    CHECKPOINT_NAME,
    CheckpointError,
    ResumePoint,
    load_checkpoint,
    save_checkpoint,
)
from rstn.configs import added, neutral
from rstn.optim import LasagneRMSprop, clip_gradients, learning_rate
from rstn.progress import ProgressLog, counted, format_duration, progress_mode, utc_now

LOG_NAME = "train.log"
ATTENTION_NAME = "attention.npz"


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of the trainer; the defaults are the authors' code (PROTOCOL.md, "Training").

    The paper's text gives none of these values: it says only that the models were trained with RMSprop
    and that d and the dropout rate were chosen on the validation set.
    """

    batch_size: int = 100
    max_epochs: int = 300  # NUM_EPOCH
    patience: int = 50  # LOOK_AHEAD: stop after 50 epochs without a gain in validation accuracy
    lr: float = 5e-4  # paper: "trained with RMSprop" (Tieleman & Hinton, 2012), no values given
    rho: float = 0.9
    eps: float = 1e-6  # inside the square root (Lasagne's rmsprop)
    max_grad_norm: float = 5.0  # MAX_NORM, lasagne.updates.total_norm_constraint
    # "model": element clipping where model.uses_element_clipping (RNN-SPN in the code); "always"; "never".
    element_clip: str = "model"
    element_clip_value: float = 1.0  # T.clip(g, -1, 1)
    lr_first_decay_epoch: int = 31  # lr / factor after this epoch (the scripts' -nodecay 30)...
    lr_decay_every: int = 12  # ...and every 12 epochs after (-decayinterval 10 with a `>` test)
    lr_decay_factor: float = 1.5
    softmax_tol: float = 1e-5  # TOL: the loss is -log(softmax + 1e-5); 0 gives plain cross-entropy
    # "model": a nonzero dropout grows linearly from 0 over the first `dropout_ramp_epochs` epochs where
    # model.ramps_dropout (RNN-SPN: rnn_spn.py ramps, ffn_spn.py sets the rate once); "always"; "never".
    # Records from before this field ramped every model: they read as "always".
    dropout_ramp: str = added("model", absent="always")
    dropout_ramp_epochs: int = 5
    eval_batch_size: int = neutral(500)  # evaluation only; does not change the results
    n_attention: int = 32  # first test images whose theta and predictions are saved
    # Speed knobs (none in the authors' code).
    bf16: bool = False  # deviation when True: bf16 autocast for forward/backward
    # NHWC activations: 1.3-2x faster CPU steps with the ReLU after each pool (benchmarks/README.md); the
    # convolutions round differently, within the tolerance tests/test_speed_parity.py states
    channels_last: bool = neutral(True)
    compile: bool = neutral(False)  # torch.compile the model (on a 2-core CPU it made training steps slower)
    # torch.compile's mode: "reduce-overhead" captures CUDA graphs (a GPU step is many small kernels)
    compile_mode: str = neutral("default")
    tf32: bool = False  # TF32 matmuls/convolutions on CUDA; Theano ran in float32
    cudnn_benchmark: bool = neutral(True)  # cuDNN autotuning: speed only (can change float rounding on CUDA)

    def __post_init__(self) -> None:
        if self.compile_mode not in ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"):
            raise ValueError(f"compile_mode must be a torch.compile mode, got {self.compile_mode!r}")
        for name in ("element_clip", "dropout_ramp"):
            if getattr(self, name) not in ("model", "always", "never"):
                raise ValueError(f"{name} must be 'model', 'always' or 'never', got {getattr(self, name)!r}")
        if min(self.batch_size, self.max_epochs, self.eval_batch_size) < 1:
            raise ValueError("batch_size, max_epochs and eval_batch_size must be >= 1")
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")
        rules = {"lr": self.lr >= 0, "rho": 0 <= self.rho < 1, "eps": self.eps >= 0,
                 "max_grad_norm": self.max_grad_norm > 0, "lr_decay_factor": self.lr_decay_factor > 0,
                 "element_clip_value": self.element_clip_value > 0, "softmax_tol": self.softmax_tol >= 0}
        bounds = {"lr": ">= 0", "rho": "in [0, 1)", "eps": ">= 0", "max_grad_norm": "> 0",
                  "lr_decay_factor": "> 0", "element_clip_value": "> 0", "softmax_tol": ">= 0"}
        # inf passes most bounds, and run.json (strict JSON) could not record it
        bad = [f"{name} must be {bounds[name]} and finite, got {getattr(self, name)}" for name, ok in rules.items()
               if not (ok and math.isfinite(getattr(self, name)))]
        if bad:
            raise ValueError("; ".join(bad))

    def lr_at(self, epoch: int) -> float:
        """Learning rate used while training (0-based) `epoch`."""
        return learning_rate(epoch, self.lr, self.lr_first_decay_epoch, self.lr_decay_every, self.lr_decay_factor)

    def dropout_at(self, epoch: int, dropout: float, ramp: bool = True) -> float:
        """Dropout probability in `epoch`: rnn_spn.py's `epoch * dropout / 5` for epoch < 5, then `dropout`.

        ramp: whether this run ramps at all (`ramps_dropout`); False gives `dropout` from epoch 0.
        """
        if not ramp or self.dropout_ramp_epochs <= 0:
            return dropout
        return dropout * min(epoch, self.dropout_ramp_epochs) / self.dropout_ramp_epochs


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf; the last good checkpoint is kept."""


class SplitLike(Protocol):
    images: Any  # (N, H, W) float in [0, 1]
    labels: Any  # (N, T) int



def sequence_loss(logits: torch.Tensor, labels: torch.Tensor, softmax_tol: float = 1e-5) -> torch.Tensor:
    """Mean over the B x T digits of -log(softmax(logits)[label] + softmax_tol).

    Args:
        logits: (B, T, K).
        labels: (B, T) int64.
        softmax_tol: the authors' code computes categorical_crossentropy(softmax + 1e-5, y); 0 gives the
            ordinary (log-softmax) cross-entropy.
    """
    flat = logits.reshape(-1, logits.shape[-1]).float()  # (B*T, K)
    target = labels.reshape(-1)
    if softmax_tol == 0:
        return F.cross_entropy(flat, target)
    p_true = flat.softmax(-1).gather(1, target[:, None]).squeeze(1)  # (B*T,)
    return -(p_true + softmax_tol).log().mean()


def digit_error(predictions: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> float:
    """Per-digit error: 1 - accuracy over every position of every sequence, flattened (Table 1's metric).

    Args:
        predictions, labels: (N, T) integer class indices.
    """
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {predictions.shape} and labels {labels.shape} differ in shape")
    return float(1.0 - np.mean(predictions == labels))


def sequence_error(predictions: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> float:
    """Whole-sequence error: 1 - fraction of sequences whose T digits are all right. (N, T) inputs."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {predictions.shape} and labels {labels.shape} differ in shape")
    return float(1.0 - np.mean(np.all(predictions == labels, axis=1)))



@dataclass
class DeviceSplit:
    """One split as device tensors: images (N, H, W), labels (N, T) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def from_split(cls, split: SplitLike, device: torch.device) -> DeviceSplit:
        """The split on `device`; off the CPU as float16 when that is exact, converted on the host first.

        The generator's pixels are k/256 (k <= 256), exact in float16: half the device memory and bandwidth.
        Converting on the host keeps the float32 copy off the device (a 60k-image split: 2.4 GB of it).
        """
        images = torch.as_tensor(split.images)
        if device.type != "cpu":
            half = images.to(torch.float16)
            if torch.equal(half.to(images.dtype), images):
                images = half
        return cls(images.to(device), torch.as_tensor(split.labels, dtype=torch.int64).to(device))

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, index: torch.Tensor, channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Gather (B, 1, H, W) float32 images and (B, T) labels at `index` (a device tensor)."""
        x = self.images[index].float().unsqueeze(1)  # (B, 1, H, W)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.labels[index]



def derive_seed(*keys: int) -> int:
    """A 63-bit seed derived from integers, e.g. (seed, epoch, stream); independent across keys."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0] >> np.uint64(1))


SHUFFLE_STREAM, DROPOUT_STREAM = 0, 1


def epoch_permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The training order of `epoch`: a permutation of range(n), a function of (seed, epoch) only (CPU)."""
    generator = torch.Generator().manual_seed(derive_seed(seed, epoch, SHUFFLE_STREAM))
    return torch.randperm(n, generator=generator)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])



STOP_REASONS = ("early_stopping", "max_epochs", "time_budget")


@dataclass
class FitResult:
    """Where `fit` stands: returned at the end, and passed to `on_epoch_end` after every epoch.

    status "finished" (stop_reason "early_stopping" | "max_epochs"), or "running": between epochs
    (stop_reason None) or stopped by the deadline with a checkpoint to resume from ("time_budget").
    history: one dict per epoch (see `fit`); best_state: CPU state_dict of the best epoch (None before
    one); sessions: one dict per process that trained the run (what the caller passed as `session`,
    plus first_epoch and epochs).
    """

    history: list[dict]
    best_epoch: int
    best_state: dict[str, torch.Tensor] | None
    status: str
    stop_reason: str | None
    elapsed_s: float
    sessions: list[dict]
    started_at: str


class BudgetExhausted(Exception):
    """Raised inside an epoch that runs past the deadline; the epoch is discarded."""


@dataclass
class EarlyStopping:
    """The scripts' LOOK_AHEAD counter: best = first epoch with the highest validation accuracy (strictly
    greater than every earlier one, starting from 0); stop once `patience` epochs in a row bring no gain."""

    patience: int
    best_epoch: int = -1
    best_correct: int = 0

    def update(self, epoch: int, valid_correct: int) -> bool:
        """Record an epoch's correct validation digits; True if it is the new best."""
        if valid_correct > self.best_correct:  # `if acc > best_valid` with best_valid = 0 at the start
            self.best_epoch, self.best_correct = epoch, valid_correct
            return True
        return False

    def should_stop(self, epoch: int) -> bool:
        """After `epoch` has been recorded: has the look-ahead counter run out?"""
        return epoch - self.best_epoch >= self.patience


def _model_rule(setting: str, model: nn.Module, attribute: str) -> bool:
    """A TrainConfig "model" | "always" | "never" setting, "model" read from the model's `attribute`."""
    return {"always": True, "never": False}.get(setting, bool(getattr(model, attribute, False)))


def _element_clip(config: TrainConfig, model: nn.Module) -> float | None:
    return config.element_clip_value if _model_rule(config.element_clip, model, "uses_element_clipping") else None


def ramps_dropout(config: TrainConfig, model: nn.Module) -> bool:
    return _model_rule(config.dropout_ramp, model, "ramps_dropout")


def _autocast(device: torch.device, config: TrainConfig):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    split: DeviceSplit,
    order: torch.Tensor,
    config: TrainConfig,
    element_clip: float | None,
    bar: Any = None,
    deadline: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One pass over `split` in the order `order` (a device tensor), dropping a last partial batch.

    Each step: forward (bf16 autocast if configured), loss, backward, clip, RMSprop step. Nothing is read
    back to the host. Past `deadline` (a time.monotonic() value) it raises BudgetExhausted.

    Returns:
        (sum of batch losses, sum of gradient norms, correct training digits): 0-d device tensors.
    """
    device = split.labels.device
    params = [p for group in optimizer.param_groups for p in group["params"]]
    loss_sum = torch.zeros((), device=device)
    norm_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for i in range(len(order) // config.batch_size):
        x, y = split.batch(order[i * config.batch_size:(i + 1) * config.batch_size], config.channels_last)
        with _autocast(device, config):
            logits = model(x).logits  # (B, T, K)
        loss = sequence_loss(logits, y, config.softmax_tol)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm_sum += clip_gradients(params, config.max_grad_norm, element_clip)
        optimizer.step()
        loss_sum += loss.detach()
        correct += (logits.detach().argmax(-1) == y).sum()
        if bar is not None:
            bar.update()
        if deadline is not None and time.monotonic() > deadline:
            raise BudgetExhausted
    return loss_sum, norm_sum, correct


@torch.no_grad()
def evaluate(model: nn.Module, split: DeviceSplit, config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(correct digits, correct sequences) over the whole split, as 0-d device tensors (model in eval mode)."""
    device = split.labels.device
    digits = torch.zeros((), dtype=torch.int64, device=device)
    sequences = torch.zeros((), dtype=torch.int64, device=device)
    for a in range(0, len(split), config.eval_batch_size):
        x, y = split.batch(torch.arange(a, min(a + config.eval_batch_size, len(split)), device=device),
                           config.channels_last)
        with _autocast(device, config):
            right = model(x).logits.argmax(-1) == y  # (B, T)
        digits += right.sum()
        sequences += right.all(dim=1).sum()
    return digits, sequences


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

    Args:
        model: forward(x (B, 1, H, W)) -> object with `.logits` (B, T, K); optional `set_dropout(p)`,
            `uses_element_clipping` and `ramps_dropout`. Initialise it (seeded) before calling.
        data: {"train", "valid", "test"}: objects with images (N, H, W) in [0, 1] and labels (N, T).
        config: the protocol.
        seed: seeds each epoch's shuffle and dropout draws, with the epoch number.
        dropout: the target dropout probability (ramped in over `config.dropout_ramp_epochs` where the
            model ramps, see `ramps_dropout`).
        run_dir: where train.log goes (and the checkpoint, unless `checkpoint_path`); None: no log file.
        checkpoint_path: the checkpoint file; default run_dir/checkpoint.pt, None without a run_dir.
        checkpoint_every: write the checkpoint after every this many epochs, and always when the run
            stops (finished or out of time). 1: a kill loses at most the epoch in progress.
        resume: continue from the checkpoint if it exists and was written with the same
            `checkpoint_extra["config"]`; otherwise start over.
        resume_from: a state chosen by the caller to continue from (a checkpoint or a resume pack,
            `rstn.checkpoints.resume_point`); it replaces `resume`'s own look at the checkpoint.
        deadline: a time.monotonic() value. An epoch that the last epochs' times say would end past it is
            not started, and one that runs past it is abandoned; the run then stops as "running" with
            stop_reason "time_budget" and a checkpoint of its last whole epoch.
        progress: 'auto' | 'bar' | 'text' | 'none' (see `progress_mode`).
        label: prefix of the progress lines.
        checkpoint_extra: stored in the checkpoint as is (the run's resolved config, for resume checks).
        session: facts of this process (commit, device, ...) appended to `FitResult.sessions`.
        on_epoch_end: called with the running FitResult after each epoch (and its checkpoint, if due).
        on_checkpoint: called with each checkpoint's state right after it is written (or instead of
            writing it, without a checkpoint path): `rstn.runs` writes the resume pack from it.

    Returns:
        FitResult. Each history record holds: epoch, lr, dropout, train_loss (mean over the epoch's
        batches), train_error (per-digit, on the training batches in training mode), grad_norm (mean total
        norm the constraint saw), valid_error, valid_sequence_error, test_error, test_sequence_error,
        time_s.

    Raises:
        NonFiniteLossError: the epoch's training loss was NaN or inf; nothing of that epoch is saved.
    """
    device = resolve_device(device)
    configure_backends(config.tf32, config.cudnn_benchmark)
    if device.type == "cpu":
        tune_glibc_malloc()
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    run_dir = Path(run_dir) if run_dir is not None else None
    if checkpoint_path is None and run_dir is not None:
        checkpoint_path = run_dir / CHECKPOINT_NAME
    ckpt_path = Path(checkpoint_path) if checkpoint_path is not None else None
    for folder in (run_dir, ckpt_path.parent if ckpt_path is not None else None):
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
    log = ProgressLog(progress_mode(progress), run_dir / LOG_NAME if run_dir is not None else None)
    prefix = f"{label} " if label else ""

    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = LasagneRMSprop(params, lr=config.lr, rho=config.rho, eps=config.eps)
    element_clip, ramp = _element_clip(config, model), ramps_dropout(config, model)
    if dropout > 0 and not hasattr(model, "set_dropout"):
        raise TypeError("dropout > 0 needs a model with set_dropout(p)")

    splits = {name: DeviceSplit.from_split(data[name], device) for name in ("train", "valid", "test")}
    n_batches = len(splits["train"]) // config.batch_size  # the scripts drop the last partial batch
    if n_batches == 0:
        raise ValueError(f"{len(splits['train'])} training examples make no batch of {config.batch_size}")

    state = FitResult([], -1, None, "running", None, 0.0, [], utc_now())
    stopper = EarlyStopping(config.patience)
    start_epoch = 0
    extra = checkpoint_extra or {}
    if resume_from is None and resume and ckpt_path is not None and ckpt_path.exists():
        ckpt = _checkpoint_to_resume(ckpt_path, extra, lambda line: log(prefix + line))
        resume_from = ResumePoint(ckpt, ckpt_path, "checkpoint") if ckpt is not None else None
    elif resume_from is None and ckpt_path is not None and ckpt_path.exists():
        log(f"{prefix}starting over: the existing checkpoint is replaced")
    if resume_from is not None:
        ckpt = resume_from.state
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        stopper = EarlyStopping(config.patience, ckpt["best_epoch"], ckpt["best_valid_correct"])
        state = FitResult(list(ckpt["history"]), ckpt["best_epoch"], ckpt["best_state"], "running", None,
                          ckpt["elapsed_s"], list(ckpt["sessions"]), ckpt["started_at"])
        start_epoch = ckpt["epoch"] + 1
        set_rng_state(ckpt["rng"])
        log(f"{prefix}resumed from {resume_from.describe()}")
    this_session = dict(session or {}) | {"started_at": utc_now(), "first_epoch": start_epoch, "epochs": 0}
    state.sessions.append(this_session)
    history = state.history

    def save(epoch: int) -> None:
        nonlocal saved
        checkpoint = {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
            "history": history, "best_epoch": stopper.best_epoch, "best_valid_correct": stopper.best_correct,
            "best_state": state.best_state, "rng": rng_state(), "elapsed_s": state.elapsed_s,
            "sessions": state.sessions, "started_at": state.started_at, "extra": extra}
        if ckpt_path is not None:
            save_checkpoint(ckpt_path, checkpoint)
        if on_checkpoint is not None:
            on_checkpoint(checkpoint)
        saved = _Saved(epoch, stopper.best_epoch, state.best_state, state.elapsed_s)

    # what the last checkpoint (or the state resumed from) holds: a deadline between checkpoints goes back to it
    saved = _Saved(start_epoch - 1, state.best_epoch, state.best_state, state.elapsed_s)

    step_model = torch.compile(model, mode=config.compile_mode) if config.compile else model
    n_valid_digits = splits["valid"].labels.numel()

    for epoch in range(start_epoch, config.max_epochs):
        if epoch > 0 and stopper.should_stop(epoch - 1):
            state.stop_reason = "early_stopping"  # reached only when resuming a run that had already stopped
            break
        if deadline is not None and history and time.monotonic() + _epoch_estimate(history) > deadline:
            state.stop_reason = "time_budget"
            break
        t0 = time.perf_counter()
        lr, p_drop = config.lr_at(epoch), config.dropout_at(epoch, dropout, ramp)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if hasattr(model, "set_dropout"):
            model.set_dropout(p_drop)
        torch.manual_seed(derive_seed(seed, epoch, DROPOUT_STREAM))  # dropout draws: a function of (seed, epoch)
        perm = epoch_permutation(seed, epoch, len(splits["train"])).to(device)

        model.train()
        try:
            with log.bar(n_batches, f"{prefix}epoch {epoch}") as bar:
                loss_sum, norm_sum, train_correct = train_epoch(step_model, optimizer, splits["train"], perm, config,
                                                                element_clip, bar, deadline)
        except BudgetExhausted:
            # the weights hold part of an epoch: nothing of it is saved, the run resumes from the checkpoint
            kept = f"the checkpoint after epoch {saved.epoch} is kept" if saved.epoch >= 0 else "no epoch is saved yet"
            log(f"{prefix}out of time in epoch {epoch}: it is discarded; {kept}")
            state.stop_reason = "time_budget"
            if saved.epoch < len(history) - 1:
                _back_to_checkpoint(state, saved, this_session, start_epoch)
            return _stopped(state, this_session)

        model.eval()
        v_digits, v_seqs = evaluate(step_model, splits["valid"], config)
        t_digits, t_seqs = evaluate(step_model, splits["test"], config)
        # The one host sync of the epoch.
        loss_total, norm_total, tr_c, vd, vs, td, ts = torch.stack(
            [loss_sum, norm_sum, train_correct.double(), v_digits.double(), v_seqs.double(), t_digits.double(),
             t_seqs.double()]).tolist()
        train_loss = loss_total / n_batches
        # A non-finite gradient norm corrupts the weights even when every loss of the epoch was finite.
        if not (math.isfinite(train_loss) and math.isfinite(norm_total)):
            where = f"the last good checkpoint (epoch {saved.epoch}) is kept in {ckpt_path}" if (
                ckpt_path is not None and saved.epoch >= 0) else "no checkpoint was written"
            what = f"training loss became {train_loss}" if not math.isfinite(train_loss) else \
                f"gradient norm became {norm_total}"
            raise NonFiniteLossError(f"{prefix}{what} in epoch {epoch}; {where}")
        # deviation: the scripts also evaluate the whole training set in eval mode every epoch, for the log
        # only; train_error here counts the training batches' own predictions (training mode), at no cost.
        n_train_digits = n_batches * config.batch_size * splits["train"].labels.shape[1]
        record = {
            "epoch": epoch, "lr": lr, "dropout": p_drop,
            "train_loss": train_loss, "train_error": 1.0 - tr_c / n_train_digits, "grad_norm": norm_total / n_batches,
            "valid_error": 1.0 - vd / n_valid_digits, "valid_sequence_error": 1.0 - vs / len(splits["valid"]),
            "test_error": 1.0 - td / splits["test"].labels.numel(),
            "test_sequence_error": 1.0 - ts / len(splits["test"]),
        }
        if stopper.update(epoch, int(vd)):
            state.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        record["time_s"] = time.perf_counter() - t0
        history.append(record)
        state.elapsed_s += record["time_s"]
        state.best_epoch = stopper.best_epoch
        this_session["epochs"] += 1
        done = stopper.should_stop(epoch) or epoch + 1 == config.max_epochs
        if done or (epoch + 1 - start_epoch) % checkpoint_every == 0:
            save(epoch)
        log(prefix + epoch_line(record, stopper.best_epoch) + _eta(history, epoch, config, stopper, deadline))
        if on_epoch_end is not None:
            on_epoch_end(state)
        if stopper.should_stop(epoch):  # look_count reaches 0: 50 epochs without a gain
            state.stop_reason = "early_stopping"
            break
    else:
        state.stop_reason = "max_epochs"

    if state.stop_reason != "time_budget" and state.best_state is None and history:
        # no epoch got a single validation digit right: report the last one
        state.best_epoch = len(history) - 1
        state.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    if state.stop_reason == "time_budget" and history and saved.epoch < len(history) - 1:
        save(len(history) - 1)
    return _stopped(state, this_session)


def epoch_line(record: Mapping, best_epoch: int) -> str:
    """One epoch of the training log, from its history record (`fit`), e.g. "epoch   3  lr 5.00e-04  loss
    0.5695  train 18.25%  valid 12.59% (seq 32.64%)  test 12.80% (seq 33.49%)  best 2  399.1s"."""
    return (f"epoch {record['epoch']:3d}  lr {record['lr']:.2e}  loss {record['train_loss']:.4f}  "
            f"train {100 * record['train_error']:.2f}%  valid {100 * record['valid_error']:.2f}% "
            f"(seq {100 * record['valid_sequence_error']:.2f}%)  test {100 * record['test_error']:.2f}% "
            f"(seq {100 * record['test_sequence_error']:.2f}%)  best {best_epoch}  {record['time_s']:.1f}s")


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


@dataclass(frozen=True)
class _Saved:
    """What the last checkpoint of a `fit` holds, as far as its FitResult goes (epoch -1: none yet)."""

    epoch: int
    best_epoch: int
    best_state: dict | None
    elapsed_s: float


def _back_to_checkpoint(state: FitResult, saved: _Saved, session: dict, start_epoch: int) -> None:
    """Forget the epochs after the last checkpoint (with checkpoint_every > 1): the weights that ended them
    are gone, so the result must say what a resume starts from, and the resume trains them again."""
    del state.history[saved.epoch + 1:]
    session["epochs"] = max(0, saved.epoch + 1 - start_epoch)
    state.best_epoch, state.best_state, state.elapsed_s = saved.best_epoch, saved.best_state, saved.elapsed_s


def _stopped(state: FitResult, session: dict) -> FitResult:
    """The final FitResult: finished unless the deadline stopped it."""
    session["ended_at"] = utc_now()
    if state.stop_reason != "time_budget":
        state.status = "finished"
    return state


def _epoch_estimate(history: Sequence[Mapping]) -> float:
    """Seconds the next epoch may take: the slowest of the last three, with 10% to spare."""
    return 1.1 * max(r["time_s"] for r in history[-3:])


def _eta(history: Sequence[Mapping], epoch: int, config: TrainConfig, stopper: EarlyStopping,
         deadline: float | None) -> str:
    """'  eta ...': time to the protocol's latest end (max_epochs, or early stopping if sooner) and budget."""
    last = min(config.max_epochs, stopper.best_epoch + config.patience + 1) - 1
    per_epoch = statistics.fmean(r["time_s"] for r in history[-5:])
    text = f"  eta <= {format_duration((last - epoch) * per_epoch)} ({counted(last - epoch, 'epoch')})"
    if deadline is not None:
        text += f", budget left {format_duration(max(0.0, deadline - time.monotonic()))}"
    return text
