"""Does a trained RNN-SPN's glimpse follow a digit that moves? Chapter 7 measures it; the browser test checks
that the live page's model does it too.

A move shifts one digit of a scene by (dx, dy) px. The glimpse that looks at the digit is the step whose
glimpse centre (theta applied to the output's centre) is nearest the digit's centre before the move. Its
`along` is the displacement of that centre projected on the move, over the move's length squared: 1 when
the glimpse moves with the digit, 0 when it stays, negative when it moves the other way. `others` is the
same for the other glimpses: a move of every glimpse at once is the whole reading shifting, not one glimpse
following. `covered` is the fraction of the moved digit's 28-pixel place inside that glimpse's box
(`rstn.glimpses.theta_box`) after the move: whether it still looks at the digit.

`measure` moves each digit of the page's first test sequences up and down, only where the result is still
a layout the generator makes (the digit inside the canvas, each digit's height step from the one before
inside `SequenceConfig.slope_range`): outside it the model was never trained.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rstn.data import DIGIT_SIZE
from rstn.glimpses import box_covered, glimpse_corners, theta_box
from rstn.scenes import Material, Scene, compose

VERTICAL_MOVES = ((0, -8), (0, 8))  # px; a horizontal move breaks the abutting layout ("abut")


@dataclass(frozen=True)
class Following:
    """How the glimpses answered one move (see the module's docstring). digit, glimpse: 0-based."""

    digit: int
    glimpse: int
    move: tuple[int, int]
    along: float
    others: tuple[float, ...]
    covered: float


def glimpse_centres(theta: np.ndarray, size: int) -> np.ndarray:
    """(T, 2) pixel (x, y) centres of the glimpses of theta (T, 2, 3) on a size x size input: the mean of
    their corner samples, as `rstn.glimpses.glimpse_shape` takes it (theta applied to the output's centre)."""
    return glimpse_corners(np.asarray(theta, np.float64), size, size).mean(-2)


def following(theta_before: np.ndarray, theta_after: np.ndarray, digit_xy: tuple[int, int], move: tuple[int, int],
              digit: int, size: int) -> Following:
    """The answer to moving the digit at top-left `digit_xy` by `move`, from theta (T, 2, 3) before and after."""
    before, after = glimpse_centres(theta_before, size), glimpse_centres(theta_after, size)
    start = np.asarray(digit_xy, np.float64) + DIGIT_SIZE / 2
    shift = np.asarray(move, np.float64)
    if not shift.any():
        raise ValueError("a move of (0, 0) has no direction to follow")
    along = (after - before) @ shift / (shift @ shift)  # (T,)
    looking = int(np.argmin(np.hypot(*(before - start).T)))
    x, y = start + shift - DIGIT_SIZE / 2
    place = torch.tensor([x, y, x + DIGIT_SIZE, y + DIGIT_SIZE], dtype=torch.float64)
    box = theta_box(torch.as_tensor(np.asarray(theta_after, np.float64)[looking]), size, size)
    return Following(digit, looking, (int(move[0]), int(move[1])), float(along[looking]),
                     tuple(float(a) for j, a in enumerate(along) if j != looking), float(box_covered(place, box)))


def in_layout(scene: Scene, material: Material) -> bool:
    """Whether the scene's digits are where the generator could have put them (height steps and canvas)."""
    config = material.config
    low, high = config.slope_range
    ys = [y for _, y in scene.digit_xy]
    inside = all(0 <= v <= config.canvas_size - DIGIT_SIZE for xy in scene.digit_xy for v in xy)
    return inside and all(low <= b - a <= high for a, b in itertools.pairwise(ys))


def moved(scene: Scene, digit: int, move: tuple[int, int]) -> Scene:
    """The scene with one digit shifted by `move` px."""
    xy = list(scene.digit_xy)
    xy[digit] = (xy[digit][0] + move[0], xy[digit][1] + move[1])
    return dataclasses.replace(scene, digit_xy=tuple(xy))


@torch.no_grad()
def _theta(model: nn.Module, images: Sequence[np.ndarray]) -> np.ndarray:
    """(n, T, 2, 3) theta of the model on (S, S) float32 images."""
    batch = torch.from_numpy(np.stack(images))[:, None]
    return model(batch).theta.reshape(len(images), -1, 2, 3).double().numpy()


def measure(model: nn.Module, material: Material, moves: Sequence[tuple[int, int]] = VERTICAL_MOVES) -> list[Following]:
    """Every in-layout move of every digit of `material.sequences`, answered by the model (eval mode)."""
    cases = [(scene, d, move) for scene in material.sequences for d in range(len(scene.digits)) for move in moves
             if in_layout(moved(scene, d, move), material)]
    if not cases:
        return []
    size = material.config.canvas_size
    before = _theta(model, [compose(material, scene) for scene, _, _ in cases])
    after = _theta(model, [compose(material, moved(scene, d, move)) for scene, d, move in cases])
    return [following(b, a, scene.digit_xy[d], move, d, size)
            for (scene, d, move), b, a in zip(cases, before, after)]


def describe(answers: Sequence[Following]) -> str:
    """How far the glimpses followed, in words: medians and quartiles over the moves, and whether the
    glimpse looking at the digit moved on its own or with the other two."""
    if not answers:
        return "No move kept the digits in the generator's layout: nothing measured."
    along = np.array([a.along for a in answers])
    others = np.median([o for a in answers for o in a.others])
    covered = np.array([a.covered for a in answers])
    q1, med, q3 = np.percentile(along, [25, 50, 75])
    step = max(abs(v) for a in answers for v in a.move)
    together = ("so the three glimpses mostly move together: the model shifts its whole reading towards the "
                "moved digit more than it sends one glimpse after it" if others >= 0.7 * med else
                "so the glimpse looking at the digit moves on its own more than the others do")
    return (f"{len(answers)} moves of a digit {step} px up or down that keep the generator's layout: the glimpse "
            f"looking at the digit moved {100 * med:.0f} % as far as the digit (median; quartiles "
            f"{100 * q1:.0f}-{100 * q3:.0f} %; in the digit's direction in {100 * (along > 0).mean():.0f} % of the "
            f"moves), the other two {100 * others:.0f} % (median), {together}. After the move its box still held "
            f"at least 90 % of the digit's 28-pixel place in {100 * (covered >= 0.9).mean():.0f} % of the moves.")
