"""The inputs of the live explorer (`rstn.live`): the generator's own pieces, taken apart and put together.

The page builds its 100 x 100 input from pieces of the test split of a (SequenceConfig, seed): MNIST test
digits (a strip of each class, and the digits of the first test sequences), clutter patches of the
generator's pool, and the generator's layout (x offset, y0, slope; `rstn.data.draw_split`). A real test
sequence is its digits, their places and its eight patches (`Scene`); `compose` puts a scene together
exactly as `rstn.data.render` does, so that a reset sequence is the test image bit for bit, and live.js
composes the same way (tests/test_live.py and tests/browser/test_live_page.py check both).

Conventions: images (S, S) float32 in [0, 1]; digits and patches as uint8 grey levels k, value k / 256
(MNIST's grid, k <= 255); positions are top-left (x, y) pixels, pixel i covering [i, i + 1).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rstn.data import DIGIT_SIZE, SequenceConfig, SplitDraws, digit_positions, draw_pool, draw_split, render, \
    seed_streams
from rstn.explorers import encode_array
from rstn.mnist import load_mnist


@dataclass(frozen=True)
class Scene:
    """One input as the page builds it.

    digits: (D,) ids into `Material.digits`, left to right; digit_xy: (D, 2) top-left (x, y) px, each in
    [0, S - 28]; patches: (K,) ids into `Material.patches`; patch_xy: (K, 2) top-left px in [0, S - k];
    clutter: whether the patches are drawn; index: a real sequence's index in the test split, else None.
    """

    digits: tuple[int, ...]
    digit_xy: tuple[tuple[int, int], ...]
    patches: tuple[int, ...] = ()
    patch_xy: tuple[tuple[int, int], ...] = ()
    clutter: bool = True
    index: int | None = None


@dataclass(frozen=True)
class Material:
    """What the page builds inputs from.

    digits: (M, 28, 28) uint8 grey levels k (value k / 256) of MNIST test digits; labels, indices: (M,) their
    labels and indices in the MNIST test split; strip: ids of the digits offered to pick from, `per_class`
    of each class; patches: (P, k, k) uint8 clutter patches of the generator's pool; sequences: the first
    test sequences, each with its own digits and clutter; config: the generator (canvas, layout, clutter).
    """

    digits: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    strip: tuple[int, ...]
    patches: np.ndarray
    sequences: tuple[Scene, ...]
    config: SequenceConfig


def _levels(values: np.ndarray) -> np.ndarray:
    """Values k / 256 (MNIST's grid, k <= 255) -> uint8 k, exactly."""
    scaled = np.asarray(values, np.float32) * np.float32(256)
    if not np.array_equal(scaled.astype(np.uint8), scaled):
        raise ValueError("values are not on MNIST's k / 256 grid")
    return scaled.astype(np.uint8)


def _test_draws(config: SequenceConfig, seed: int, mnist: dict):
    """The generator's pool draws and the test split's draws for (config, seed), as `generate_sequences`
    draws them (each split has its own random stream, so nothing else needs drawing)."""
    streams = seed_streams(seed)
    n_sources = sum(len(mnist[name][0]) for name in config.clutter_sources)
    pool = draw_pool(config, n_sources, streams["pool"])
    return pool, draw_split(config, config.n_test, len(mnist["test"][0]), streams["test"])


def _first(draws: SplitDraws, n: int) -> SplitDraws:
    return SplitDraws(*(getattr(draws, f.name)[:n] for f in dataclasses.fields(SplitDraws)))


def _pool_patches(config: SequenceConfig, mnist: dict, pool, ids: Sequence[int]) -> np.ndarray:
    """Patches `ids` of the generator's pool, (len(ids), k, k) float32, as `rstn.data.build_pool` cuts them."""
    k = config.clutter_size
    starts = np.cumsum([0] + [len(mnist[name][0]) for name in config.clutter_sources])
    out = np.zeros((len(ids), k, k), np.float32)
    for j, p in enumerate(ids):
        source = int(pool.source[p])
        split = int(np.searchsorted(starts, source, side="right")) - 1  # the pool's sources, concatenated
        digit = mnist[config.clutter_sources[split]][0][source - starts[split]]  # (28, 28)
        out[j] = digit[pool.y[p]:pool.y[p] + k, pool.x[p]:pool.x[p] + k]
    return out


def first_test_images(config: SequenceConfig = SequenceConfig(), seed: int = 0, n: int = 1000,
                      data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first `n` test sequences of (config, seed), bit for bit those of `generate_sequences`, rendered
    alone: images (n, S, S) float32 and labels (n, D)."""
    mnist = load_mnist(data_dir)
    pool, draws = _test_draws(config, seed, mnist)
    head = _first(draws, min(n, config.n_test))
    used, inverse = np.unique(head.clutter_index, return_inverse=True)  # only the patches these images use
    head = dataclasses.replace(head, clutter_index=inverse.reshape(head.clutter_index.shape))
    images = render(config, mnist["test"][0], _pool_patches(config, mnist, pool, used), head)
    return images, mnist["test"][1][head.digit_index]


def _numbered(values: Sequence[int]) -> dict[int, int]:
    """Each distinct value -> its position among them, in first-seen order (an id into the page's arrays)."""
    return {v: i for i, v in enumerate(dict.fromkeys(int(v) for v in values))}


def scene_material(config: SequenceConfig = SequenceConfig(), seed: int = 0, n_sequences: int = 8,
                   per_class: int = 3, n_patches: int = 64, data_dir: str | Path | None = None) -> Material:
    """The page's pieces: a strip of `per_class` test digits per class, the first `n_sequences` test
    sequences of (config, seed) with their own digits and clutter, and `n_patches` more pool patches (the
    pool's first) for new clutter."""
    mnist = load_mnist(data_dir)
    digits, labels = mnist["test"]
    pool, draws = _test_draws(config, seed, mnist)
    head = _first(draws, min(n_sequences, config.n_test))
    x, y = digit_positions(config, head)  # (n, D) each
    strip = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])
    digit_id = _numbered([*strip, *head.digit_index.ravel()])  # MNIST test index -> id
    patch_id = _numbered([*head.clutter_index.ravel(), *range(min(n_patches, config.clutter_pool_size))])
    sequences = tuple(Scene(digits=tuple(digit_id[int(v)] for v in head.digit_index[i]),
                            digit_xy=tuple(zip(map(int, x[i]), map(int, y[i]))),
                            patches=tuple(patch_id[int(p)] for p in head.clutter_index[i]),
                            patch_xy=tuple(zip(map(int, head.clutter_x[i]), map(int, head.clutter_y[i]))), index=i)
                      for i in range(len(head)))
    indices = np.array(list(digit_id), np.int64)
    return Material(digits=_levels(digits[indices]), labels=labels[indices], indices=indices,
                    strip=tuple(digit_id[int(v)] for v in strip),
                    patches=_levels(_pool_patches(config, mnist, pool, list(patch_id))), sequences=sequences,
                    config=config)


def compose(material: Material, scene: Scene) -> np.ndarray:
    """The (S, S) float32 input of a scene, as live.js composes it: the digits (where two overlap, the
    brighter pixel; the generator never overlaps them), plus the clutter canvas (a later patch over an
    earlier one), clipped to 1, as `rstn.data.render`."""
    s, k = material.config.canvas_size, material.config.clutter_size
    image = np.zeros((s, s), np.float32)
    for i, (x, y) in zip(scene.digits, scene.digit_xy, strict=True):
        if not (0 <= x <= s - DIGIT_SIZE and 0 <= y <= s - DIGIT_SIZE):
            raise ValueError(f"digit at ({x}, {y}) is not inside the {s} px canvas")
        window = image[y:y + DIGIT_SIZE, x:x + DIGIT_SIZE]
        np.maximum(window, material.digits[i] / np.float32(256), out=window)
    if scene.clutter and scene.patches:
        clutter = np.zeros((s, s), np.float32)
        for j, (x, y) in zip(scene.patches, scene.patch_xy, strict=True):
            if not (0 <= x <= s - k and 0 <= y <= s - k):
                raise ValueError(f"patch at ({x}, {y}) is not inside the {s} px canvas")
            clutter[y:y + k, x:x + k] = material.patches[j] / np.float32(256)
        image = np.minimum(image + clutter, np.float32(1))
    return image


def scene_from_state(state: dict) -> Scene:
    """A Scene from live.js's `state()` ({digits, xy, patches, patchXY, clutter, sequence})."""
    return Scene(tuple(state["digits"]), tuple(map(tuple, state["xy"])), tuple(state["patches"]),
                 tuple(map(tuple, state["patchXY"])), bool(state["clutter"]), state.get("sequence"))


def material_payload(material: Material) -> dict[str, Any]:
    """The pieces as the page embeds them, with the generator's layout for live.js to draw from."""
    c = material.config
    layout = {"canvas": c.canvas_size, "digit": DIGIT_SIZE, "nDigits": c.n_digits, "xPlacement": c.x_placement,
              "slope": list(c.slope_range), "nClutter": c.n_clutter, "clutterSize": c.clutter_size}
    return {"digits": encode_array(material.digits), "labels": material.labels.tolist(),
            "indices": material.indices.tolist(), "strip": list(material.strip),
            "patches": encode_array(material.patches), "layout": layout,
            "sequences": [{"digits": list(q.digits), "xy": [list(p) for p in q.digit_xy], "patches": list(q.patches),
                           "patchXY": [list(p) for p in q.patch_xy], "clutter": q.clutter, "index": q.index}
                          for q in material.sequences]}
