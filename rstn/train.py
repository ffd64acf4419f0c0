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
off by default; TF32 is set explicitly (off: Theano computed in float32) and recorded.

The orchestration of a Table 1 run (results directory, skip/force, run.json, attention.npz) is
`train_run` / `train_row`; the rows, profiles and results schema live in `rstn.experiments`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rstn.optim import LasagneRMSprop, clip_gradients, learning_rate

if TYPE_CHECKING:
    from rstn.experiments import RunConfig

CHECKPOINT_NAME = "checkpoint.pt"  # git-ignored by the pattern results/**/checkpoint*.pt
LOG_NAME = "train.log"
ATTENTION_NAME = "attention.npz"
# History fields that are measurements of time, not results: excluded when runs are compared.
TIMING_FIELDS = ("time_s",)


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
    dropout_ramp: str = "model"
    dropout_ramp_epochs: int = 5
    eval_batch_size: int = 500  # evaluation only; does not change the results
    n_attention: int = 32  # first test images whose theta and predictions are saved
    # Speed knobs (none in the authors' code).
    bf16: bool = False  # deviation when True: bf16 autocast for forward/backward
    channels_last: bool = False
    compile: bool = False  # torch.compile the model
    tf32: bool = False  # TF32 matmuls/convolutions on CUDA; Theano ran in float32
    cudnn_benchmark: bool = True  # cuDNN autotuning: speed only (can change float rounding on CUDA)

    def __post_init__(self) -> None:
        for name in ("element_clip", "dropout_ramp"):
            if getattr(self, name) not in ("model", "always", "never"):
                raise ValueError(f"{name} must be 'model', 'always' or 'never', got {getattr(self, name)!r}")
        if min(self.batch_size, self.max_epochs, self.eval_batch_size) < 1:
            raise ValueError("batch_size, max_epochs and eval_batch_size must be >= 1")
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")

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


# ---- loss and metrics -----------------------------------------------------------------------------------


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


# ---- data on the device ---------------------------------------------------------------------------------


@dataclass
class DeviceSplit:
    """One split as device tensors: images (N, H, W), labels (N, T) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def from_split(cls, split: SplitLike, device: torch.device) -> DeviceSplit:
        images = torch.as_tensor(split.images).to(device)
        if device.type != "cpu":
            # The generator's pixels are k/256 (k <= 256), exact in float16: half the memory and bandwidth.
            half = images.to(torch.float16)
            if torch.equal(half.float(), images.float()):
                images = half
        return cls(images, torch.as_tensor(split.labels, dtype=torch.int64).to(device))

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, index: torch.Tensor, channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Gather (B, 1, H, W) float32 images and (B, T) labels at `index` (a device tensor)."""
        x = self.images[index].float().unsqueeze(1)  # (B, 1, H, W)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.labels[index]


# ---- reproducible randomness ----------------------------------------------------------------------------


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


# ---- backends -------------------------------------------------------------------------------------------


def configure_backends(config: TrainConfig) -> dict:
    """Set TF32 and cuDNN autotuning explicitly (PyTorch's own default enables TF32 for cuDNN convs)."""
    precision = "tf32" if config.tf32 else "ieee"
    backends = torch.backends
    if hasattr(backends.cuda.matmul, "fp32_precision"):  # torch >= 2.9; do not mix with the legacy flags
        backends.cuda.matmul.fp32_precision = precision
        backends.cudnn.conv.fp32_precision = precision
        backends.cudnn.rnn.fp32_precision = precision
    else:
        backends.cuda.matmul.allow_tf32 = config.tf32
        backends.cudnn.allow_tf32 = config.tf32
    backends.cudnn.benchmark = config.cudnn_benchmark
    return backend_settings()


def backend_settings() -> dict:
    """The numeric settings a run used, for run.json."""
    backends = torch.backends
    if hasattr(backends.cuda.matmul, "fp32_precision"):
        tf32 = {"cuda_matmul_fp32_precision": backends.cuda.matmul.fp32_precision,
                "cudnn_conv_fp32_precision": backends.cudnn.conv.fp32_precision,
                "cudnn_rnn_fp32_precision": backends.cudnn.rnn.fp32_precision}
    else:
        tf32 = {"cuda_matmul_allow_tf32": backends.cuda.matmul.allow_tf32,
                "cudnn_allow_tf32": backends.cudnn.allow_tf32}
    return tf32 | {"cudnn_benchmark": backends.cudnn.benchmark, "num_threads": torch.get_num_threads(),
                   "float32_matmul_precision": torch.get_float32_matmul_precision(),
                   "glibc_malloc_tuned": _GLIBC_MALLOC_TUNED}


_GLIBC_MALLOC_TUNED = False


def tune_glibc_malloc() -> bool:
    """Let glibc keep freed memory instead of returning it to the OS after every step (CPU speed only).

    A CPU training step allocates and frees activation buffers of up to hundreds of MB. glibc serves
    blocks above its mmap threshold with fresh mmaps and trims the heap top on free, so every step faults
    the same memory back in: on the 2-core development VM half the time was spent in the kernel. Raising
    the mmap and trim thresholds and the top pad (mallopt, once per process) made a conv-net CPU epoch
    1.8x faster with identical results; the process keeps its peak memory. No-op off glibc.
    """
    global _GLIBC_MALLOC_TUNED
    if _GLIBC_MALLOC_TUNED:
        return True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # <malloc.h>
        ok = all([libc.mallopt(m_mmap_threshold, 1 << 30), libc.mallopt(m_trim_threshold, 2**31 - 1),
                  libc.mallopt(m_top_pad, 1 << 30)])
    except (OSError, AttributeError):
        return False
    _GLIBC_MALLOC_TUNED = bool(ok)
    return _GLIBC_MALLOC_TUNED


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch.cuda.is_available() is False")
    return device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


# ---- progress -------------------------------------------------------------------------------------------


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


class _Logger:
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
        if self.mode != "bar":
            return contextlib.nullcontext(None)
        from tqdm import tqdm  # the plain bar: tqdm.auto would become a widget in notebooks

        return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True)


# ---- checkpoints ----------------------------------------------------------------------------------------


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to a temporary file in the same directory, then rename: a kill never leaves half a file."""
    tmp = path.with_name("checkpoint.tmp.pt")  # still matches the git-ignore pattern checkpoint*.pt
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    # weights_only=False: the checkpoint holds numpy/python RNG states besides tensors; it is our own file.
    return torch.load(path, map_location="cpu", weights_only=False)


# ---- the training loop ----------------------------------------------------------------------------------


@dataclass
class FitResult:
    """What `fit` returns. history: one dict per epoch (see `fit`); best_state: CPU state_dict."""

    history: list[dict]
    best_epoch: int
    best_state: dict[str, torch.Tensor]
    stop_reason: str  # "early_stopping" | "max_epochs"
    elapsed_s: float
    sessions: int
    started_at: str


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


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One pass over `split` in the order `order` (a device tensor), dropping a last partial batch.

    Each step: forward (bf16 autocast if configured), loss, backward, clip, RMSprop step. Nothing is read
    back to the host.

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
    resume: bool = False,
    progress: str | bool | None = "auto",
    label: str = "",
    checkpoint_extra: dict | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> FitResult:
    """Train `model` on data["train"], evaluating on data["valid"] and data["test"] every epoch.

    Args:
        model: forward(x (B, 1, H, W)) -> object with `.logits` (B, T, K); optional `set_dropout(p)`
            and `uses_element_clipping`. Initialise it (seeded) before calling.
        data: {"train", "valid", "test"}: objects with images (N, H, W) in [0, 1] and labels (N, T).
        config: the protocol.
        seed: seeds each epoch's shuffle and dropout draws, with the epoch number.
        dropout: the target dropout probability (ramped in over `config.dropout_ramp_epochs`).
        run_dir: where the checkpoint (every epoch) and train.log go; None keeps nothing on disk.
        resume: continue from run_dir's checkpoint if it exists and was written with the same
            `checkpoint_extra["config"]`; otherwise start over.
        progress: 'auto' | 'bar' | 'text' | 'none' (see `progress_mode`).
        label: prefix of the progress lines.
        checkpoint_extra: stored in the checkpoint as is (the run's resolved config, for resume checks).
        on_epoch_end: called as on_epoch_end(epoch, record) after each epoch's checkpoint is written.

    Returns:
        FitResult. Each history record holds: epoch, lr, dropout, train_loss (mean over the epoch's
        batches), train_error (per-digit, on the training batches in training mode), grad_norm (mean total
        norm the constraint saw), valid_error, valid_sequence_error, test_error, test_sequence_error,
        time_s.

    Raises:
        NonFiniteLossError: the epoch's training loss was NaN or inf; nothing of that epoch is saved.
    """
    device = resolve_device(device)
    configure_backends(config)
    if device.type == "cpu":
        tune_glibc_malloc()
    run_dir = Path(run_dir) if run_dir is not None else None
    ckpt_path = run_dir / CHECKPOINT_NAME if run_dir is not None else None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
    log = _Logger(progress_mode(progress), run_dir / LOG_NAME if run_dir is not None else None)
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

    history: list[dict] = []
    stopper, best_state = EarlyStopping(config.patience), None
    start_epoch, elapsed, sessions, started_at = 0, 0.0, 1, _now()
    extra = checkpoint_extra or {}
    if resume and ckpt_path is not None and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        if ckpt.get("extra", {}).get("config") != extra.get("config"):
            log(f"{prefix}checkpoint {ckpt_path} was written for another config: starting over")
        else:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            history, best_state = ckpt["history"], ckpt["best_state"]
            stopper = EarlyStopping(config.patience, ckpt["best_epoch"], ckpt["best_valid_correct"])
            start_epoch, elapsed, sessions = ckpt["epoch"] + 1, ckpt["elapsed_s"], ckpt["sessions"] + 1
            started_at = ckpt["started_at"]
            set_rng_state(ckpt["rng"])
            log(f"{prefix}resumed from {ckpt_path} after epoch {ckpt['epoch']}")
    elif ckpt_path is not None and ckpt_path.exists():
        log(f"{prefix}starting over (an existing checkpoint is replaced; pass resume=True / --resume to continue)")

    step_model = torch.compile(model) if config.compile else model
    n_valid_digits = splits["valid"].labels.numel()

    stop_reason = "max_epochs"
    for epoch in range(start_epoch, config.max_epochs):
        if epoch > 0 and stopper.should_stop(epoch - 1):
            stop_reason = "early_stopping"  # reached only when resuming a run that had already stopped
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
        with log.bar(n_batches, f"{prefix}epoch {epoch}") as bar:
            loss_sum, norm_sum, train_correct = train_epoch(step_model, optimizer, splits["train"], perm, config,
                                                            element_clip, bar)

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
            where = f"the last good checkpoint (epoch {epoch - 1}) is kept in {ckpt_path}" if (
                ckpt_path is not None and epoch > 0) else "no checkpoint was written"
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
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        record["time_s"] = time.perf_counter() - t0
        history.append(record)
        elapsed += record["time_s"]
        if ckpt_path is not None:
            save_checkpoint(ckpt_path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                "history": history, "best_epoch": stopper.best_epoch, "best_valid_correct": stopper.best_correct,
                "best_state": best_state, "rng": rng_state(), "elapsed_s": elapsed, "sessions": sessions,
                "started_at": started_at, "extra": extra})
        log(f"{prefix}epoch {epoch:3d}  lr {lr:.2e}  loss {train_loss:.4f}  train {100 * record['train_error']:.2f}%"
            f"  valid {100 * record['valid_error']:.2f}% (seq {100 * record['valid_sequence_error']:.2f}%)"
            f"  test {100 * record['test_error']:.2f}% (seq {100 * record['test_sequence_error']:.2f}%)"
            f"  best {stopper.best_epoch}  {record['time_s']:.1f}s")
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
        if stopper.should_stop(epoch):  # look_count reaches 0: 50 epochs without a gain
            stop_reason = "early_stopping"
            break

    best_epoch = stopper.best_epoch
    if best_state is None:  # no epoch got a single validation digit right: report the last one
        best_epoch = len(history) - 1
        best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    return FitResult(history, best_epoch, best_state, stop_reason, elapsed, sessions, started_at)


def without_timing(history: Sequence[Mapping]) -> list[dict]:
    """History records with the timing fields removed: what must match between two runs of one seed."""
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in history]


# ---- a Table 1 run: results directory, skip/force, run.json, attention.npz ------------------------------


@dataclass(frozen=True)
class RunResult:
    """A finished (or skipped) run: its directory and its validated run.json record."""

    run_dir: Path
    record: dict = field(repr=False)
    skipped: bool = False

    @property
    def test_error(self) -> float:
        """Per-digit test error at the best-validation epoch (fraction)."""
        return self.record["final"]["test_error"]

    @property
    def test_sequence_error(self) -> float:
        return self.record["final"]["test_sequence_error"]

    @property
    def best_epoch(self) -> int:
        return self.record["best_epoch"]

    @property
    def history(self) -> list[dict]:
        return self.record["history"]

    def __repr__(self) -> str:
        r = self.record
        return (f"RunResult({r['row']}, profile={r['profile']}, seed={r['seed']}, status={r['status']}, "
                f"test_error={100 * self.test_error:.2f}%, best_epoch={self.best_epoch}, skipped={self.skipped})")


def _git_info() -> dict:
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, check=True, timeout=10).stdout
        return {"commit": commit, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


@torch.no_grad()
def attention_arrays(model: nn.Module, split: SplitLike, n: int, device: torch.device) -> dict[str, np.ndarray]:
    """theta, predictions and labels for the first n images of `split` (for the attention chapter).

    Returns:
        indices (n,), theta (n, T, 2, 3) float32 (T = 0 for the conv net), probabilities (n, 3, K)
        float32, predictions (n, 3), labels (n, 3), boxes (n, 3, 4) float32 when the split has them.
    """
    n = min(n, len(split.labels))
    model.eval()
    x = torch.as_tensor(np.asarray(split.images[:n]), dtype=torch.float32, device=device).unsqueeze(1)
    out = model(x)
    theta = out.theta.float().cpu().numpy() if out.theta is not None else np.zeros((n, 0, 2, 3), np.float32)
    arrays = {"indices": np.arange(n), "theta": theta.astype(np.float32),
              "probabilities": out.logits.float().softmax(-1).cpu().numpy().astype(np.float32),
              "predictions": out.logits.argmax(-1).cpu().numpy(), "labels": np.asarray(split.labels[:n])}
    if getattr(split, "boxes", None) is not None:
        arrays["boxes"] = np.asarray(split.boxes[:n], dtype=np.float32)
    return arrays


def _config_diff(old: Mapping, new: Mapping, prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            keys += _config_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            keys.append(f"{prefix}{k}")
    return keys


def train_run(
    config: RunConfig,
    *,
    results_dir: str | Path = "results",
    device: str | torch.device | None = None,
    resume: bool = False,
    force: bool = False,
    progress: str | bool | None = "auto",
    data: Mapping[str, SplitLike] | None = None,
    build_model: Callable[[Any], nn.Module] | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> RunResult:
    """Run one (row, profile, seed) to the end and write results/<profile>/<row>/seed<k>/.

    A finished run.json with the same resolved config is kept and returned (`skipped=True`); a different
    config, or `force`, trains again. `resume` continues from the run's checkpoint.

    Args:
        config: the resolved run (`rstn.experiments.run_config`).
        data: the three splits, if already loaded; by default `rstn.data.load_sequences(config.data,
            config.data_seed)`.
        build_model: ModelConfig -> nn.Module; by default `rstn.models.build_model`.

    Raises:
        NonFiniteLossError: after writing run.json with status "diverged".
    """
    from rstn import experiments

    out_dir = experiments.run_dir(results_dir, config.profile, config.row, config.seed)
    name = f"{config.profile}/{config.row}/seed{config.seed}"
    say = _Logger(progress_mode(progress), None)
    config_dict = config.to_dict()
    record_path = out_dir / experiments.RUN_FILE
    if not force and is_finished(config, results_dir):
        old = experiments.read_run(record_path)
        say(f"skip {name}: finished with the same config (test error {100 * old['final']['test_error']:.2f}%,"
            f" {record_path}); force=True / --force reruns it")
        return RunResult(out_dir, old, skipped=True)
    if record_path.exists() and not force:
        try:
            old = experiments.read_run(record_path)
        except experiments.ResultsError as err:
            reason = f"unreadable run record ({err})"
        else:
            changed = _config_diff(old["config"], config_dict)
            reason = f"config changed ({', '.join(changed)})" if changed else f"previous status {old['status']!r}"
        say(f"rerun {name}: {reason}")

    device = resolve_device(device)
    if data is None:
        from rstn.data import load_sequences

        data = load_sequences(config.data, seed=config.data_seed)
    if build_model is None:
        from rstn.models import build_model
    torch.manual_seed(config.seed)  # model initialisation
    model = build_model(config.model)
    for stale in (record_path, out_dir / ATTENTION_NAME):
        stale.unlink(missing_ok=True)
    if not resume:
        (out_dir / LOG_NAME).unlink(missing_ok=True)

    base = {"row": config.row, "profile": config.profile, "seed": config.seed, "config": config_dict,
            "git": _git_info(), "device": device_name(device), "torch_version": torch.__version__,
            "python_version": sys.version.split()[0]}
    try:
        result = fit(model, data, config.train, seed=config.seed, dropout=config.model.dropout, device=device,
                     run_dir=out_dir, resume=resume, progress=progress, label=name,
                     checkpoint_extra={"config": config_dict}, on_epoch_end=on_epoch_end)
    except NonFiniteLossError as err:
        ckpt_path = out_dir / CHECKPOINT_NAME
        ckpt = load_checkpoint(ckpt_path) if ckpt_path.exists() else None
        history = ckpt["history"] if ckpt is not None else []
        record = base | {"status": "diverged", "error": str(err), "backends": backend_settings(),
                         "started_at": ckpt["started_at"] if ckpt else _now(), "finished_at": _now(),
                         "wall_time_s": ckpt["elapsed_s"] if ckpt else 0.0, "epochs_run": len(history),
                         "best_epoch": ckpt["best_epoch"] if ckpt and ckpt["best_epoch"] >= 0 else None,
                         "stop_reason": "non_finite_loss", "history": history,
                         "final": experiments.final_metrics(history, ckpt["best_epoch"]) if (
                             ckpt and ckpt["best_epoch"] >= 0) else None}
        experiments.write_run(record_path, record)
        raise

    t0 = time.perf_counter()
    model.load_state_dict(result.best_state)
    np.savez_compressed(out_dir / ATTENTION_NAME,
                        **attention_arrays(model, data["test"], config.train.n_attention, device))
    record = base | {
        "status": "finished", "backends": backend_settings(), "started_at": result.started_at,
        "finished_at": _now(), "wall_time_s": result.elapsed_s + time.perf_counter() - t0,
        "sessions": result.sessions, "epochs_run": len(result.history), "best_epoch": result.best_epoch,
        "stop_reason": result.stop_reason, "final": experiments.final_metrics(result.history, result.best_epoch),
        "history": result.history, "attention_file": ATTENTION_NAME}
    experiments.write_run(record_path, record)
    record = experiments.read_run(record_path)
    say(f"done {name}: test error {100 * record['final']['test_error']:.2f}% at best epoch {result.best_epoch}"
        f" ({len(result.history)} epochs, {result.stop_reason}, {record['wall_time_s']:.0f}s) -> {out_dir}")
    return RunResult(out_dir, record)



def is_finished(config: RunConfig, results_dir: str | Path = "results") -> bool:
    """Whether `config`'s run is done: its run.json is readable, finished, and holds the same resolved config.

    The one skip decision of the project: `train_run` and the book's runner (`rstn.book`) both ask it. A
    missing, unreadable or invalid run.json, a diverged run or a different config is not finished.
    """
    from rstn import experiments

    path = experiments.run_dir(results_dir, config.profile, config.row, config.seed) / experiments.RUN_FILE
    if not path.exists():
        return False
    try:
        record = experiments.read_run(path)
    except experiments.ResultsError:
        return False
    return record["status"] == "finished" and record["config"] == config.to_dict()

def train_row(
    row: str,
    profile: str = "auto",
    seed: int = 0,
    *,
    results_dir: str | Path = "results",
    device: str | torch.device | None = None,
    resume: bool = False,
    force: bool = False,
    progress: str | bool | None = "auto",
    data: Mapping[str, SplitLike] | None = None,
    **train_overrides: Any,
) -> RunResult:
    """Train one Table 1 row under a profile ('smoke' | 'quick' | 'paper' | 'auto') and seed.

    `train_overrides` replace TrainConfig fields of the profile (e.g. max_epochs=3) and become part of
    the resolved config. Example: `train_row("rnn-spn-d2", "smoke", seed=0).test_error`.
    """
    from rstn import experiments

    config = experiments.run_config(row, profile, seed, device=device, **train_overrides)
    return train_run(config, results_dir=results_dir, device=device, resume=resume, force=force,
                     progress=progress, data=data)


def load_best_model(run_dir: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The best-validation model of a run, rebuilt from run.json and its checkpoint (eval mode)."""
    from rstn import experiments
    from rstn.models import ModelConfig, build_model

    run_dir = Path(run_dir)
    record = experiments.read_run(run_dir / experiments.RUN_FILE)
    ckpt_path = run_dir / CHECKPOINT_NAME
    if not ckpt_path.exists():
        raise FileNotFoundError(f"{ckpt_path} is missing (checkpoints are not committed; rerun the row)")
    model_config = ModelConfig(**record["config"]["model"])
    model = build_model(model_config)
    model.load_state_dict(load_checkpoint(ckpt_path)["best_state"])
    return model.to(device).eval()


