"""Where a glimpse lands in the input: normalised <-> pixel coordinates, glimpse boxes and shapes, their IoU
with the digits, and the scores chapter 5 and the claims table judge the attention by.

Conventions (those of :mod:`rstn.sampler`, written down once there):

* ``theta`` (..., 2, 3) maps OUTPUT grid points to INPUT sample points, ``(x_s, y_s) = theta @ (x_t, y_t, 1)``.
* Normalised coordinates run over [-1, 1] with the end points on the centres of the corner pixels
  (``align_corners=True``); points are (x, y), x along the width.
* Pixel coordinates are those of the data's digit boxes and of every figure (``extent=(0, W, H, 0)``):
  pixel i covers [i, i + 1), so its centre is at i + 0.5. Normalised -1 is therefore 0.5 and +1 is
  W - 0.5 (:func:`normalised_to_pixels`; ``rstn/assets/explorer.js`` mirrors it as ``normalisedToPixels``).
* Boxes are (x_min, y_min, x_max, y_max) in pixel coordinates, max edges exclusive.

The attention the runs saved is read by `rstn.saved_attention`; :func:`score_rows` and
:func:`describe_glimpses` turn it into chapter 5's table and text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from rstn.progress import counted

if TYPE_CHECKING:
    from rstn.saved_attention import AttentionRun, SavedAttention

ArrayT = Any  # an np.ndarray or a torch.Tensor: the conversions below keep the type they are given

# the output grid's corners in normalised (x, y): top left, top right, bottom right, bottom left
CORNERS = ((-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0))


def _xy(like: ArrayT, x: float, y: float) -> ArrayT:
    if isinstance(like, Tensor):
        return torch.tensor([x, y], dtype=like.dtype, device=like.device)
    return np.array([x, y], dtype=np.result_type(like, np.float32))


def normalised_to_pixels(points: ArrayT, height: int, width: int) -> ArrayT:
    """Normalised (x, y) in [-1, 1] (align_corners=True) -> pixel coordinates (pixel i covers [i, i + 1)).

    -1 maps to 0.5, the centre of pixel 0, and +1 to W - 0.5, the centre of pixel W - 1:
    ``p = (g + 1) / 2 * (W - 1) + 0.5``. Points outside [-1, 1] map outside the image.

    Args:
        points: (..., 2) (x, y), an np.ndarray or a torch.Tensor (the result has the same type).
        height, width: image size H, W.

    Returns:
        (..., 2) (x, y) pixel coordinates.
    """
    if points.shape[-1] != 2:
        raise ValueError(f"points must be (..., 2) (x, y), got shape {tuple(points.shape)}")
    return (points + 1) / 2 * _xy(points, width - 1, height - 1) + 0.5


def pixels_to_normalised(pixels: ArrayT, height: int, width: int) -> ArrayT:
    """Inverse of :func:`normalised_to_pixels`: pixel coordinates (x, y) -> normalised [-1, 1].

    Args:
        pixels: (..., 2) (x, y); the centre of pixel i is i + 0.5.
        height, width: image size H, W (both > 1).

    Returns:
        (..., 2) (x, y) normalised coordinates, same type as ``pixels``.
    """
    if pixels.shape[-1] != 2:
        raise ValueError(f"pixels must be (..., 2) (x, y), got shape {tuple(pixels.shape)}")
    return (pixels - 0.5) / _xy(pixels, width - 1, height - 1) * 2 - 1


def glimpse_corners(theta: ArrayT, height: int, width: int) -> ArrayT:
    """Where the glimpse's four corner samples land in the input, in pixel coordinates.

    Args:
        theta: (..., 2, 3) output -> input, normalised.
        height, width: input size H, W.

    Returns:
        (..., 4, 2) (x, y) of the output's top-left, top-right, bottom-right and bottom-left corner points
        (:data:`CORNERS`); for any affine theta they span the quadrilateral the glimpse samples.
    """
    if theta.ndim < 2 or tuple(theta.shape[-2:]) != (2, 3):
        raise ValueError(f"theta must be (..., 2, 3), got {tuple(theta.shape)}")
    if isinstance(theta, Tensor):
        corners = torch.tensor([[x, y, 1.0] for x, y in CORNERS], dtype=theta.dtype, device=theta.device)
        points = corners @ theta.transpose(-1, -2)  # (..., 4, 2) normalised (x, y)
    else:
        corners = np.array([[x, y, 1.0] for x, y in CORNERS], dtype=np.result_type(theta, np.float32))
        points = corners @ np.swapaxes(theta, -1, -2)
    return normalised_to_pixels(points, height, width)


def theta_box(theta: Tensor, height: int, width: int) -> Tensor:
    """The axis-aligned box of the input region a glimpse covers, in pixels.

    The box of the four corner samples (:func:`glimpse_corners`, on sample centres) extended by half a
    source pixel on every side, the area those source pixels cover: the identity theta gives the whole
    canvas (0, 0, W, H) for every d, and a glimpse whose corner samples sit on the centres of pixels x0 and
    x1 covers [x0, x1 + 1). The box is not clipped to the canvas.

    Args:
        theta: (..., 2, 3).
        height, width: input image size H, W.

    Returns:
        (..., 4) boxes (x_min, y_min, x_max, y_max) in theta's dtype.
    """
    points = glimpse_corners(theta, height, width)  # (..., 4, 2)
    half = 0.5  # half a source pixel: the area of the corner pixels themselves
    low, high = points.amin(-2) - half, points.amax(-2) + half  # (..., 2) each
    return torch.cat([low, high], dim=-1)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union of boxes (x_min, y_min, x_max, y_max).

    Args:
        a, b: (..., 4), broadcastable against each other.

    Returns:
        (...) IoU in [0, 1]; 0 where both boxes are empty.
    """
    intersection = _intersection(a, b)
    return _ratio(intersection, _area(a) + _area(b) - intersection)


def box_covered(target: Tensor, box: Tensor) -> Tensor:
    """The fraction of each `target` box's area that lies inside `box` (both (..., 4), broadcastable);
    0 for an empty target."""
    return _ratio(_intersection(target, box), _area(target))


def _area(box: Tensor) -> Tensor:
    return (box[..., 2] - box[..., 0]).clamp(min=0) * (box[..., 3] - box[..., 1]).clamp(min=0)


def _intersection(a: Tensor, b: Tensor) -> Tensor:
    """Area of the intersection of boxes (..., 4), broadcastable."""
    if a.shape[-1] != 4 or b.shape[-1] != 4:
        raise ValueError(f"boxes must be (..., 4), got {tuple(a.shape)} and {tuple(b.shape)}")
    width = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    height = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp(min=0)
    return width * height


def _ratio(part: Tensor, whole: Tensor) -> Tensor:
    """part / whole, 0 where whole is 0."""
    return torch.where(whole > 0, part / whole.clamp(min=torch.finfo(whole.dtype).tiny), 0.0)


def sequence_box(boxes: Tensor) -> Tensor:
    """The box around all digits of a sequence: (..., D, 4) -> (..., 4)."""
    return torch.cat([boxes[..., :2].amin(-2), boxes[..., 2:].amax(-2)], dim=-1)


@dataclass(frozen=True)
class AttentionScore:
    """How well one model's glimpses line up with the digits, over n images.

    RNN-SPN (T = k D glimpses, k per digit; k = 1 in Table 1): ``step_iou[s]``, the mean IoU of step s's
    glimpse box with its digit's box (digit s // k), and ``on_target``, the fraction of (image, step) pairs
    where step s overlaps its digit strictly more than any other digit (a tie, as for the identity, is a
    miss). FFN-SPN (T = 1): ``sequence_iou``, the mean IoU of
    its one glimpse with the box around the whole sequence. The fields that do not apply are None.

    Both kinds: ``covered``, the mean fraction of the target box (digit t's for step t, else the
    sequence's) that lies inside the glimpse box, and ``area``, the mean area of the sampled parallelogram
    as a fraction of the canvas (|det A| of theta = [A | t]). IoU is at most min(target, glimpse) /
    max(target, glimpse) in area, so a glimpse that holds its whole digit at twice the digit's area scores
    0.5 or less: ``covered`` and ``area`` tell a wide glimpse from a misplaced one.
    """

    n: int
    step_iou: tuple[float, ...] | None = None
    on_target: float | None = None
    sequence_iou: float | None = None
    covered: float | None = None
    area: float | None = None


def step_digit_iou(theta: Tensor, boxes: Tensor, height: int, width: int) -> Tensor:
    """IoU of every glimpse with every digit box.

    Args:
        theta: (N, T, 2, 3); boxes: (N, D, 4) true digit boxes; height, width: the canvas.

    Returns:
        (N, T, D): entry (i, t, k) is the IoU of step t's glimpse box with digit k's box on image i.
    """
    theta, boxes = torch.as_tensor(theta), torch.as_tensor(boxes)
    if theta.ndim != 4 or boxes.ndim != 3 or theta.shape[0] != boxes.shape[0]:
        raise ValueError(f"theta must be (N, T, 2, 3) and boxes (N, D, 4), got {tuple(theta.shape)}, "
                         f"{tuple(boxes.shape)}")
    glimpse = theta_box(theta, height, width).to(boxes.dtype)  # (N, T, 4)
    return box_iou(glimpse[:, :, None], boxes[:, None])  # (N, T, D)


def score_attention(theta: Tensor, boxes: Tensor, height: int, width: int) -> AttentionScore:
    """Score one run's glimpses against the true digit boxes (chapter 5); see :class:`AttentionScore`.

    Args:
        theta: (N, T, 2, 3) with T = D (one glimpse per digit) or T = 1 (one glimpse for the sequence).
        boxes: (N, D, 4); height, width: the canvas.
    """
    theta, boxes = torch.as_tensor(theta, dtype=torch.float64), torch.as_tensor(boxes, dtype=torch.float64)
    n, steps, digits = theta.shape[0], theta.shape[1], boxes.shape[1]
    area = float(torch.linalg.det(theta[..., :2]).abs().mean())
    if steps == 1:
        glimpse, target = theta_box(theta[:, 0], height, width), sequence_box(boxes)  # (N, 4) each
        return AttentionScore(n=n, sequence_iou=float(box_iou(glimpse, target).mean()),
                              covered=float(box_covered(target, glimpse).mean()), area=area)
    if steps % digits:
        raise ValueError(f"{steps} glimpses for {digits} digits: expected one glimpse per digit (or k per digit), "
                         "or one in all")
    k = steps // digits  # glimpses per digit (the extension rnn-spn-d3-glimpses2: 2); step s reads digit s // k
    iou = step_digit_iou(theta, boxes, height, width)  # (N, T k, D)
    mine = torch.arange(steps) // k  # (T k,): the digit of each step
    own = iou[:, torch.arange(steps), mine]  # (N, T k): step s with its digit
    is_mine = mine[:, None] == torch.arange(digits)[None]  # (T k, D)
    other = iou.masked_fill(is_mine, -1.0).amax(-1)  # best IoU with another digit
    covered = box_covered(boxes[:, mine], theta_box(theta, height, width))  # (N, T k): its digit inside
    return AttentionScore(n=n, step_iou=tuple(float(v) for v in own.mean(0)),
                          on_target=float((own > other).double().mean()), covered=float(covered.mean()), area=area)


@dataclass(frozen=True)
class GlimpseShape:
    """The shape of one run's glimpses in the input, in pixels, averaged over images (chapter 5).

    A glimpse samples a parallelogram: its top edge is where the output's top row lands (top-left to
    top-right corner), its side edge where the left column lands. ``top_edge_deg`` is the top edge's slope
    from the horizontal, ``side_edge_deg`` the side edge's from the vertical (both clockwise on the image,
    whose y axis points down); a rotation turns both alike, a shear one more than the other, and
    ``edge_angle_deg`` is the angle between the edges (90: no shear). ``area``: the share of the canvas sampled, its mean and spread over the
    images; ``centres``: (T, 2) mean (x, y) centre of each step's glimpse; ``centre_offset_px``: the mean
    distance from step t's centre to digit t's (to the sequence's, for one glimpse), None without boxes.
    """

    area: float
    area_std: float
    x_edge_px: float
    y_edge_px: float
    top_edge_deg: float
    side_edge_deg: float
    edge_angle_deg: float
    centres: tuple[tuple[float, float], ...]
    centre_offset_px: float | None = None

    @property
    def step_spacing_px(self) -> float | None:
        """Mean distance between the centres of consecutive steps (None for one step)."""
        c = np.asarray(self.centres)
        return float(np.linalg.norm(np.diff(c, axis=0), axis=1).mean()) if len(c) > 1 else None


def glimpse_shape(theta: ArrayT, height: int, width: int, boxes: ArrayT | None = None) -> GlimpseShape:
    """Summarise the glimpses of theta (N, T, 2, 3) on an H x W canvas, and where boxes (N, D, 4) are given
    how far their centres are from their targets' (T = D: digit t; T = 1: the sequence): `GlimpseShape`."""
    corners = np.asarray(glimpse_corners(np.asarray(theta, dtype=np.float64), height, width))  # (N, T, 4, 2)
    offset = None
    if boxes is not None:
        boxes = np.asarray(boxes, dtype=np.float64)
        targets = boxes if corners.shape[1] == boxes.shape[1] else np.asarray(sequence_box(torch.as_tensor(boxes)))[:, None]
        target_centres = (targets[..., :2] + targets[..., 2:]) / 2  # (N, T, 2)
        offset = float(np.linalg.norm(corners.mean(-2) - target_centres, axis=-1).mean())
    x_edge, y_edge = corners[..., 1, :] - corners[..., 0, :], corners[..., 3, :] - corners[..., 0, :]
    area = np.abs(x_edge[..., 0] * y_edge[..., 1] - x_edge[..., 1] * y_edge[..., 0]) / (height * width)
    cos = (x_edge * y_edge).sum(-1) / (np.linalg.norm(x_edge, axis=-1) * np.linalg.norm(y_edge, axis=-1))
    return GlimpseShape(
        area=float(area.mean()), area_std=float(area.std()),
        x_edge_px=float(np.linalg.norm(x_edge, axis=-1).mean()), y_edge_px=float(np.linalg.norm(y_edge, axis=-1).mean()),
        top_edge_deg=float(np.degrees(np.arctan2(x_edge[..., 1], x_edge[..., 0])).mean()),
        side_edge_deg=float(np.degrees(np.arctan2(-y_edge[..., 0], y_edge[..., 1])).mean()),
        edge_angle_deg=float(np.degrees(np.arccos(np.clip(cos, -1, 1))).mean()),
        centres=tuple(tuple(float(v) for v in c) for c in corners.mean(-2).mean(0)), centre_offset_px=offset)


DIGIT_BOX_AREA = 28 * 28  # px: the generator pastes whole 28 x 28 MNIST digits (their boxes)
SCORE_COLUMNS = ("row", "run", "images", "step t on digit t", "IoU, steps 1 / 2 / 3", "sequence IoU",
                 "target inside", "glimpse area", "centre off by", "top / side edge")


def score_rows(saved: SavedAttention) -> list[list[str]]:
    """Chapter 5's table: for each run with saved attention, how its glimpses line up with the digits
    (`score_attention`) and what shape they have (`glimpse_shape`). Areas as % of the canvas and in
    digit boxes (28 x 28 px); distances in px; angles in degrees."""
    height, width = saved.images.shape[1:]
    rows = []
    for run in saved.runs:
        score = score_attention(run.theta, saved.boxes, height, width)
        shape = glimpse_shape(run.theta, height, width, saved.boxes)
        boxes = shape.area * height * width / DIGIT_BOX_AREA
        rows.append([
            run.row, "finished" if run.finished else f"in progress ({counted(run.epochs, 'epoch')})", str(score.n),
            "-" if score.on_target is None else f"{100 * score.on_target:.0f} %",
            " / ".join(f"{v:.2f}" for v in score.step_iou) if score.step_iou else "-",
            "-" if score.sequence_iou is None else f"{score.sequence_iou:.2f}",
            f"{100 * score.covered:.0f} %", f"{100 * shape.area:.1f} % ({boxes:.1f} digits)",
            f"{shape.centre_offset_px:.1f} px", f"{_degrees(shape.top_edge_deg)} / {_degrees(shape.side_edge_deg)}"])
    return rows


def _degrees(angle: float) -> str:
    return f"{round(angle) + 0}°"  # + 0: no "-0°"


def describe_glimpses(run: AttentionRun, saved: SavedAttention) -> str:
    """A paragraph, from the numbers, on where an RNN-SPN run's glimpses go and what shape they have,
    against the paper's text ("zoom in on each digit"). Chapter 5 prints it under Figure 3."""
    height, width = saved.images.shape[1:]
    score = score_attention(run.theta, saved.boxes, height, width)
    shape = glimpse_shape(run.theta, height, width, saved.boxes)
    digits = shape.area * height * width / DIGIT_BOX_AREA
    text = (f"{run.row}: step t's glimpse lies on digit t in {100 * score.on_target:.0f} % of the {score.n} test "
            f"images and holds {100 * score.covered:.0f} % of its box; its centre is {shape.centre_offset_px:.0f} px "
            f"from the digit's on average")
    if shape.step_spacing_px is not None:
        text += f", and the steps' centres lie {shape.step_spacing_px:.0f} px apart, left to right"
    fixed = shape.area_std < 0.1 * shape.area
    text += (f". The glimpse {'keeps nearly the same size on every image' if fixed else 'changes size between images'}"
             f" ({100 * shape.area:.1f} ± {100 * shape.area_std:.1f} % of the canvas, {digits:.1f} times a digit's "
             f"28 x 28 box)")
    sheared = abs(shape.edge_angle_deg - 90) > 10
    turned = not sheared and abs(shape.top_edge_deg) > 10
    if sheared or turned:
        how = "sheared" if sheared else "rotated"
        text += (f"; its top edge slopes at {shape.top_edge_deg:.0f}° and its side at {shape.side_edge_deg:.0f}° from "
                 f"the vertical (edges at {shape.edge_angle_deg:.0f}°), so the crop shows its digit {how}")
    if not zooms_on_each_digit(score):
        return text + ". The paper says that with d > 1 the model zooms in on each digit: by the rule of the claims " \
                      "table (chapter 4), this run does not."
    tight = "" if digits <= 1.5 else f", though not onto the digit alone: its crop is {digits:.1f} digit boxes"
    return text + (". The paper says that with d > 1 the model zooms in on each digit: by the rule of the claims table "
                   f"(chapter 4) this run does{tight}.")


# When an RNN-SPN's glimpses count as zoomed in on each digit (the claims table, chapter 4): step t overlaps
# digit t more than any other digit, holds most of it, and samples at most a quarter of the canvas (a
# magnification of 2 or more in each direction).
ZOOM_ON_TARGET, ZOOM_COVERED, ZOOM_MAX_AREA = 0.9, 0.9, 0.25


def zooms_on_each_digit(score: AttentionScore) -> bool:
    """Do a run's glimpses zoom in on each digit, by the rule above?"""
    return (score.on_target or 0) >= ZOOM_ON_TARGET and (score.covered or 0) >= ZOOM_COVERED and \
        (score.area if score.area is not None else 1.0) <= ZOOM_MAX_AREA


def identity_baseline(boxes: ArrayT, height: int, width: int) -> str:
    """One line: the identity glimpse's IoU with a digit and with a whole sequence, over `boxes` (N, T, 4):
    the score every model starts from (the identity transform covers the whole canvas)."""
    identity = torch.eye(2, 3).expand(len(boxes), 3, 2, 3)
    digit = score_attention(identity, boxes, height, width).step_iou[0]
    sequence = score_attention(identity[:, :1], boxes, height, width).sequence_iou
    return (f"the identity glimpse (the starting point): IoU {digit:.3f} with a digit, {sequence:.3f} with a whole "
            "sequence (mean over the same images)")


def describe_scored(name: str, theta: ArrayT, boxes: ArrayT, height: int, width: int) -> str:
    """One line on glimpses `theta` (N, T, 2, 3) against `boxes` (N, 3, 4), e.g. a trained model's on 1,000
    test sequences: how often step t reads digit t, how much of the target lies inside, area, centre."""
    score = score_attention(theta, boxes, height, width)
    shape = glimpse_shape(theta, height, width, boxes)
    on_target = f"step t on digit t {100 * score.on_target:.0f} %, " if score.on_target is not None else ""
    return (f"{name} on {score.n} test sequences: {on_target}target inside {100 * score.covered:.0f} %, "
            f"glimpse {100 * shape.area:.1f} % of the canvas, centre off by {shape.centre_offset_px:.1f} px")
