"""Seeds and random-number state: what makes a run a function of its seed, and a resume exact.

Each epoch's shuffle and dropout draws come from generators seeded by (seed, epoch, stream), so a run resumed
from the checkpoint of epoch k continues exactly as the uninterrupted run would (bit for bit on CPU).
"""

from __future__ import annotations

import random

import numpy as np
import torch


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
