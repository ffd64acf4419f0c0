"""One epoch's passes over device-resident data: the training pass and the evaluation pass.

Speed: the data live on the training device as one tensor per split (`DeviceSplit`); batches are gathered
by index on the device; loss, correct counts and gradient norms accumulate in device tensors and are read
once per epoch (by the caller), so a step never waits for the host.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from rstn.metrics import sequence_loss
from rstn.optim import clip_gradients
from rstn.protocol import TrainConfig


class SplitLike(Protocol):
    images: Any  # (N, H, W) float in [0, 1]
    labels: Any  # (N, T) int


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


class BudgetExhausted(Exception):
    """Raised inside an epoch that runs past the deadline; the epoch is discarded."""


@dataclass(frozen=True)
class Deadline:
    """The time to stop by, a time.monotonic() value (None: no deadline): the one test of it, wherever asked."""

    at: float | None = None

    def passed(self, after: float = 0.0) -> bool:
        """Would `after` more seconds from now end past the deadline?"""
        return self.at is not None and time.monotonic() + after > self.at

    def left(self) -> float | None:
        """Seconds left (never below 0), None without a deadline."""
        return None if self.at is None else max(0.0, self.at - time.monotonic())


def as_deadline(deadline: Deadline | float | None) -> Deadline:
    """A Deadline from a Deadline, a time.monotonic() value or None."""
    return deadline if isinstance(deadline, Deadline) else Deadline(deadline)


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
    deadline: Deadline | float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One pass over `split` in the order `order` (a device tensor), dropping a last partial batch.

    Each step: forward (bf16 autocast if configured), loss, backward, clip, RMSprop step. Nothing is read
    back to the host. Past `deadline` (a Deadline or time.monotonic() value) it raises
    BudgetExhausted.

    Returns:
        (sum of batch losses, sum of gradient norms, correct training digits): 0-d device tensors.
    """
    device, deadline = split.labels.device, as_deadline(deadline)
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
        if deadline.passed():
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
