"""Cluttered MNIST sequences, made exactly as the authors' generator makes them (cached by `rstn.data`).

The authors' code (``MNIST_SEQUENCE/create_mnist_sequence.py``; facts in PROTOCOL.md) draws, per image:
three digits with replacement from the split's MNIST digits; the first at x = 8 + U{-8..7}, the others
abutting at a stride of 28 px; y0 = U{0..99} and a slope U{-14..13} px per digit, digit i at y0 + i*slope,
each clamped into the canvas separately (y in [0, 72]); then 8 clutter patches of 9x9 from a shared pool,
pasted at (U{0..90}, U{0..90}) on a separate canvas (a later patch overwrites an earlier one), added to the
digit canvas and clipped to [0, 1]. The pool holds 100,000 patches, each cut from a random train-or-valid
digit at offset (U{0..18}, U{0..18}).

Every random number is drawn up front into arrays (``draw_pool``, ``draw_split``); ``render`` then places
digits and patches for a whole chunk of images at a time through strided window views of the canvas, with
one vectorised assignment per digit slot and per patch slot. Slots are written in order, so the authors'
"later patch overwrites earlier" holds exactly, and a per-image loop fed with the same arrays gives the same
images bit for bit (``benchmarks/bench_generator.py`` keeps that loop as the reference; a test compares).

Pixel convention of the boxes: pixel i covers [i, i+1), so a digit whose top-left pixel is (x, y) has the
box (x, y, x + 28, y + 28) with exclusive right and bottom edges.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import as_strided

from rstn.mnist import load_mnist

GENERATOR_VERSION = 1  # bump whenever the same (config, seed) would produce different data
DIGIT_SIZE = 28
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class SequenceConfig:
    """Every knob of the generator. The defaults are the values in the authors' code."""

    n_train: int = 60_000  # sequences drawn from the 50k MNIST train digits
    n_valid: int = 10_000  # ... from the 10k valid digits
    n_test: int = 10_000  # ... from the 10k test digits
    canvas_size: int = 100
    n_digits: int = 3
    # "abut": first digit at c + U{-c..c-1} with c = (canvas - n_digits*28) // 2, the rest at a stride of 28.
    x_placement: str = "abut"  # paper: "random" ("x positions randomly sampled, non-overlapping")
    # Inclusive range of the per-digit y step in px; the code's range(-14, 14) is about +-26.6 deg.
    slope_range: tuple[int, int] = (-14, 13)  # paper: "+-45 deg", i.e. (-28, 28) at a 28 px stride
    n_clutter: int = 8  # patches per image
    clutter_size: int = 9
    clutter_pool_size: int = 100_000
    # MNIST splits the pool's patches are cut from (the same pool clutters all three splits).
    # The code at the paper's date listed train twice: ("train", "valid", "train").
    clutter_sources: tuple[str, ...] = ("train", "valid")

    def __post_init__(self) -> None:
        if self.x_placement not in ("abut", "random"):
            raise ValueError(f"x_placement must be 'abut' or 'random', got {self.x_placement!r}")
        if self.canvas_size < self.n_digits * DIGIT_SIZE:
            raise ValueError(f"{self.n_digits} digits of {DIGIT_SIZE} px do not fit a "
                             f"{self.canvas_size} px canvas")
        if self.slope_range[0] > self.slope_range[1]:
            raise ValueError(f"slope_range must be (low, high) with low <= high, got {self.slope_range}")
        if not 0 < self.clutter_size <= DIGIT_SIZE:
            raise ValueError(f"clutter_size must be in 1..{DIGIT_SIZE}, got {self.clutter_size}")
        if not set(self.clutter_sources) <= set(SPLITS) or not self.clutter_sources:
            raise ValueError(f"clutter_sources must name MNIST splits {SPLITS}, got {self.clutter_sources}")
        negative = {name: getattr(self, name) for name in ("n_train", "n_valid", "n_test", "n_clutter",
                                                            "clutter_pool_size") if getattr(self, name) < 0}
        if negative:
            raise ValueError("sizes and counts must be >= 0, got "
                             + ", ".join(f"{name}={value}" for name, value in negative.items()))
        if self.n_clutter > 0 and self.clutter_pool_size == 0:
            raise ValueError("n_clutter > 0 needs clutter_pool_size > 0")

    def split_size(self, split: str) -> int:
        return {"train": self.n_train, "valid": self.n_valid, "test": self.n_test}[split]


@dataclass
class SequenceSplit:
    """One split of the data set.

    Attributes:
        images: (N, S, S) float32 in [0, 1], S = canvas_size; every value is k/256, k = 0..256.
        labels: (N, n_digits) int64, the digits left to right.
        boxes: (N, n_digits, 4) float32 (x_min, y_min, x_max, y_max) in pixels, x_max = x_min + 28
            (exclusive edge; pixel i covers [i, i+1)).
        digit_index: (N, n_digits) int64, index of each placed digit in its MNIST split.
    """

    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    digit_index: np.ndarray

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class PoolDraws:
    """Random draws that build the clutter pool; P = clutter_pool_size.

    source: (P,) index into the concatenated ``clutter_sources`` digits; x, y: (P,) patch offset in the digit.
    """

    source: np.ndarray
    x: np.ndarray
    y: np.ndarray


@dataclass
class SplitDraws:
    """Every random number behind N images (D = n_digits, K = n_clutter).

    digit_index: (N, D) MNIST index per slot; x_offset: (N, D) digit i starts at x = 28*i + x_offset[:, i]
    (all columns equal for "abut", as in the code's ``x_start = i*b + x_offset``); y0, slope: (N,);
    clutter_index: (N, K) pool index per patch slot; clutter_x, clutter_y: (N, K) top-left of each patch.
    """

    digit_index: np.ndarray
    x_offset: np.ndarray
    y0: np.ndarray
    slope: np.ndarray
    clutter_index: np.ndarray
    clutter_x: np.ndarray
    clutter_y: np.ndarray

    def __len__(self) -> int:
        return len(self.digit_index)


def seed_streams(seed: int) -> dict[str, np.random.Generator]:
    """One independent generator each for the pool and the three splits (so n_train does not change test)."""
    # deviation: the code draws from np.random (MT19937, seed 1234) image by image, interleaved; these are
    # PCG64 streams drawn array by array. Same distributions, a different (not bit-identical) data set.
    streams = np.random.SeedSequence(seed).spawn(1 + len(SPLITS))
    return {name: np.random.default_rng(s) for name, s in zip(("pool", *SPLITS), streams)}


def draw_pool(config: SequenceConfig, n_source_digits: int, rng: np.random.Generator) -> PoolDraws:
    """Draw the pool's patches: a source digit and an offset U{0..28-k} per patch (k = clutter_size)."""
    p, span = config.clutter_pool_size, DIGIT_SIZE - config.clutter_size  # code: randint(28 - 9)
    return PoolDraws(source=rng.integers(0, n_source_digits, p), x=rng.integers(0, span, p),
                     y=rng.integers(0, span, p))


def draw_split(config: SequenceConfig, n: int, n_split_digits: int, rng: np.random.Generator) -> SplitDraws:
    """Draw the random numbers of ``n`` images from a split of ``n_split_digits`` MNIST digits."""
    d, k, s = config.n_digits, config.n_clutter, config.canvas_size
    digit_index = rng.integers(0, n_split_digits, (n, d))  # with replacement within the split
    slack = s - d * DIGIT_SIZE
    if config.x_placement == "abut":
        c = slack // 2  # code: x_offset = (100 - 3*28)//2 = 8; x_offset += choice(range(-8, 8))
        jitter = rng.integers(-c, c, n) if c > 0 else np.zeros(n, np.int64)
        x_offset = np.repeat((c + jitter)[:, None], d, axis=1)
    else:
        # paper: random, non-overlapping x; sorted shifts in 0..slack keep the digits in order, gaps >= 0.
        x_offset = np.sort(rng.integers(0, slack + 1, (n, d)), axis=1)
    y0 = rng.integers(0, s, n)  # code: choice(range(100))
    slope = rng.integers(config.slope_range[0], config.slope_range[1] + 1, n)
    span = s - config.clutter_size  # code: randint(100 - 9), so 0..90
    clutter_index = rng.integers(0, max(config.clutter_pool_size, 1), (n, k))
    clutter_x = rng.integers(0, span, (n, k))
    clutter_y = rng.integers(0, span, (n, k))
    return SplitDraws(digit_index, x_offset, y0, slope, clutter_index, clutter_x, clutter_y)


def digit_positions(config: SequenceConfig, draws: SplitDraws) -> tuple[np.ndarray, np.ndarray]:
    """Top-left (x, y) of every digit, each (N, D) int64; y clamped into the canvas digit by digit."""
    i = np.arange(config.n_digits)
    x = DIGIT_SIZE * i + draws.x_offset
    y = np.clip(draws.y0[:, None] + i * draws.slope[:, None], 0, config.canvas_size - DIGIT_SIZE)
    return x, y


def _windows(canvas: np.ndarray, k: int) -> np.ndarray:
    """Writable view (C, S-k+1, S-k+1, k, k) of a (C, S, S) canvas: [n, y, x] is the k x k block at (x, y)."""
    c, h, w = canvas.shape
    s0, s1, s2 = canvas.strides
    return as_strided(canvas, (c, h - k + 1, w - k + 1, k, k), (s0, s1, s2, s1, s2))


def build_pool(config: SequenceConfig, source_digits: np.ndarray, draws: PoolDraws) -> np.ndarray:
    """Cut the pool's patches: (P, k, k) float32 from ``source_digits`` (M, 28, 28)."""
    source_digits = np.ascontiguousarray(source_digits)
    windows = _windows(source_digits, config.clutter_size)
    return windows[draws.source, draws.y, draws.x]  # (P, k, k)


def render(config: SequenceConfig, digits: np.ndarray, pool: np.ndarray, draws: SplitDraws,
           out: np.ndarray | None = None, chunk: int = 256,
           callback: Callable[[int], None] | None = None) -> np.ndarray:
    """Place digits and clutter for every image of ``draws``.

    Args:
        digits: (M, 28, 28) float32, the split's MNIST digits.
        pool: (P, k, k) float32 clutter patches.
        out: optional (N, S, S) float32 array to write into.
        callback: called with the number of images finished after each chunk (progress bars).
    Returns:
        (N, S, S) float32 in [0, 1].
    """
    n, s, k = len(draws), config.canvas_size, config.clutter_size
    out = np.empty((n, s, s), np.float32) if out is None else out  # each chunk is zeroed below
    x, y = digit_positions(config, draws)
    # The code's separate clutter canvas, one chunk's worth.
    scratch = np.zeros((min(chunk, n), s, s), np.float32) if config.n_clutter > 0 else None
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        rows = np.arange(b - a)
        canvas = out[a:b]
        canvas[...] = 0.0
        windows = _windows(canvas, DIGIT_SIZE)
        for i in range(config.n_digits):  # code: output[y_start:y_end, x_start:x_end] = digit
            windows[rows, y[a:b, i], x[a:b, i]] = digits[draws.digit_index[a:b, i]]
        if scratch is not None:
            cy, cx = draws.clutter_y[a:b], draws.clutter_x[a:b]
            clutter = scratch[: b - a]
            clutter[...] = 0.0
            patches = _windows(clutter, k)
            # One image per row, so no pixel is written twice within a slot; slots go in order, so a
            # later patch overwrites an earlier one exactly as the code's loop does.
            for j in range(config.n_clutter):
                patches[rows, cy[:, j], cx[:, j]] = pool[draws.clutter_index[a:b, j]]
            canvas += clutter
            # code: np.clip(clutter + digits, 0, 1); both terms are >= 0, so only the upper bound acts.
            np.minimum(canvas, 1.0, out=canvas)
        if callback is not None:
            callback(b - a)
    return out


def boxes_from_positions(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N, D, 4) float32 boxes (x_min, y_min, x_max, y_max), exclusive max edges, from (N, D) top-lefts."""
    return np.stack([x, y, x + DIGIT_SIZE, y + DIGIT_SIZE], axis=-1).astype(np.float32)


def generate_sequences(config: SequenceConfig = SequenceConfig(), seed: int = 0,
                       data_dir: str | Path | None = None,
                       progress: bool = False) -> dict[str, SequenceSplit]:
    """Generate the three splits (no disk cache; see ``rstn.data.load_sequences``). Deterministic per ``seed``.

    Returns:
        {"train" | "valid" | "test": SequenceSplit} with config.n_train / n_valid / n_test images.
    """
    mnist = load_mnist(data_dir)
    rngs = seed_streams(seed)
    sources = np.concatenate([mnist[name][0] for name in config.clutter_sources])  # (M, 28, 28)
    pool = build_pool(config, sources, draw_pool(config, len(sources), rngs["pool"]))
    del sources
    bar = _progress_bar(sum(config.split_size(s) for s in SPLITS), progress)
    out = {}
    for split in SPLITS:
        digits, labels = mnist[split]
        draws = draw_split(config, config.split_size(split), len(digits), rngs[split])
        bar.set_description(split)
        images = render(config, digits, pool, draws, callback=bar.update)
        x, y = digit_positions(config, draws)
        out[split] = SequenceSplit(images=images, labels=labels[draws.digit_index],
                                   boxes=boxes_from_positions(x, y), digit_index=draws.digit_index)
    bar.close()
    return out


def _progress_bar(total: int, enabled: bool):
    # Plain tqdm, not tqdm.auto: in executed notebooks the auto bar becomes a stored widget.
    from tqdm import tqdm

    return tqdm(total=total, unit="img", disable=not enabled, dynamic_ncols=True)
