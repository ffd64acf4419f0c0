"""Where the models look: attention export, saved attention, glimpse boxes and their IoU with the digits.

Conventions (those of :mod:`rstn.sampler`, written down once there):

* ``theta`` (..., 2, 3) maps OUTPUT grid points to INPUT sample points, ``(x_s, y_s) = theta @ (x_t, y_t, 1)``.
* Normalised coordinates run over [-1, 1] with the end points on the centres of the corner pixels
  (``align_corners=True``); points are (x, y), x along the width.
* Pixel coordinates are those of the data's digit boxes and of every figure (``extent=(0, W, H, 0)``):
  pixel i covers [i, i + 1), so its centre is at i + 0.5. Normalised -1 is therefore 0.5 and +1 is
  W - 0.5 (:func:`normalised_to_pixels`; ``rstn/assets/explorer.js`` mirrors it as ``normalisedToPixels``).
* Boxes are (x_min, y_min, x_max, y_max) in pixel coordinates, max edges exclusive.

The chapters read the attention a run saved (``attention.npz``, written by :func:`attention_arrays` at the
best-validation epoch) with :func:`load_saved_attention`, and score it with :func:`score_attention`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from rstn import experiments, results
from rstn.data import SequenceConfig, cache_path, generate_sequences, load_sequences
from rstn.progress import counted

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


@torch.no_grad()
def attention_arrays(model: nn.Module, split: Any, n: int, device: torch.device) -> dict[str, np.ndarray]:
    """theta, predictions and labels for the first n images of `split` (what a run saves as attention.npz).

    Args:
        model: an rstn model whose output has ``logits`` (B, 3, K) and ``theta`` (B, T, 2, 3) or None.
        split: images (N, H, W) in [0, 1], labels (N, 3), optionally boxes (N, 3, 4).

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


@dataclass(frozen=True)
class AttentionRun:
    """Saved attention of one trained model on a fixed set of test images.

    row: Table 1 row ("rnn-spn-d2"); label: what the explorer shows for it; d: its down-sampling factor;
    theta: (N, T, 2, 3) float32, T = 3 for RNN-SPN and 1 for FFN-SPN; predictions: (N, 3) digits;
    finished: whether the run has ended (False: saved when a run in progress paused); epochs: epochs run.
    """

    row: str
    label: str
    d: int
    theta: np.ndarray
    predictions: np.ndarray
    finished: bool = True
    epochs: int | None = None


@dataclass(frozen=True)
class SavedAttention:
    """The attention of the trained Table 1 rows on the same fixed test images, read from results/.

    images: (N, H, W) in [0, 1]; labels: (N, 3); boxes: (N, 3, 4) true digit boxes; indices: (N,) in the
    test split; runs: one per row, in Table 1 order; profile, seed: where they come from; description:
    the profile's one-line description.
    """

    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    indices: np.ndarray
    runs: tuple[AttentionRun, ...]
    profile: str
    seed: int
    description: str

    def run(self, row: str) -> AttentionRun | None:
        """The run of Table 1 row ``row``, or None when it saved no attention."""
        return next((r for r in self.runs if r.row == row), None)

    def pick(self, rows: Sequence[str]) -> AttentionRun | None:
        """The run to show among ``rows`` (in order of preference): `first_to_show` of their runs."""
        return first_to_show([run for run in map(self.run, rows) if run is not None])

    def pick_note(self, rows: Sequence[str], chosen: AttentionRun | None) -> str:
        """Why `chosen` (what `pick(rows)` returned) stands in for ``rows[0]``; "" when it is that row."""
        wanted = rows[0]
        if chosen is None or chosen.row == wanted:
            return ""
        run = self.run(wanted)
        state = "has no saved attention" if run is None else f"is in progress ({counted(run.epochs, 'epoch')})"
        how = "the first finished run" if chosen.finished else "the run trained longest"
        return f"{wanted} {state}: drawn instead is {chosen.row}, {how} of {', '.join(rows)}"


def first_to_show(runs: Sequence[AttentionRun]) -> AttentionRun | None:
    """The first run that has finished, else the one trained longest (the first of those), so that a row
    just started does not stand in for a trained one; None for no runs."""
    finished = [run for run in runs if run.finished]
    if finished:
        return finished[0]
    return max(runs, key=lambda run: run.epochs or 0, default=None)


def _test_split(data: dict, data_dir: str | Path | None):
    """The test split of a run's data config (as saved in run.json): from the sequence cache when it holds
    it, else generated alone (its random stream does not depend on the training and validation sizes)."""
    # run.json stores tuples as lists
    config = SequenceConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data["data"].items()})
    seed = data["data_seed"]
    if cache_path(config, seed).exists():
        return load_sequences(config, seed=seed, data_dir=data_dir)["test"]
    return generate_sequences(dataclasses.replace(config, n_train=0, n_valid=0), seed=seed, data_dir=data_dir)["test"]


def _profile_with_attention(results_dir: str | Path, seed: int) -> str:
    """The first of paper, quick, smoke with an attention.npz of a run that did not diverge."""
    def has_attention(folder: Path) -> bool:
        return any((saved.parent / results.RUN_FILE).exists()
                   and results.read_run(saved.parent / results.RUN_FILE).status != "diverged"
                   for saved in folder.glob(f"*/seed{seed}/attention.npz"))

    return results.best_profile(results_dir, has_attention) or "paper"


def load_saved_attention(results_dir: str | Path = "results", profile: str | None = None, seed: int = 0,
                         n_images: int | None = 16, rows: Sequence[str] | None = None,
                         data_dir: str | Path | None = None) -> SavedAttention:
    """theta and predictions saved by the runs (results/<profile>/<row>/seed<k>/attention.npz), with the
    test images they were computed on (regenerated from the run's data config, or read from the cache).

    Args:
        profile: None picks the most complete profile with saved attention for this seed: paper, then
            quick, then smoke (a paper run in progress saves its attention each time it pauses).
        n_images: keep the first n saved images (None: all).
        rows: Table 1 rows to include (default: every transformer row that has an attention.npz; a
            diverged run's is skipped, as it predates the divergence).

    Raises:
        FileNotFoundError: no attention.npz for this profile and seed.
        ValueError: the runs disagree on the test images they saved, or the regenerated test split differs
            from what they saved (labels or boxes).
    """
    profile = profile or _profile_with_attention(results_dir, seed)
    names = [r for r in (rows or experiments.ROWS) if experiments.get_row(r).d is not None]  # conv net: no theta
    runs, first, record = [], None, None
    keep = slice(None, n_images)
    for name in names:
        run = experiments.run_dir(results_dir, profile, name, seed)
        if not (run / "attention.npz").exists():
            continue
        with np.load(run / "attention.npz") as saved:
            arrays = {key: saved[key] for key in ("indices", "theta", "predictions", "labels", "boxes")
                      if key in saved.files}
        this = results.read_run(run / results.RUN_FILE)
        if this.status == "diverged":
            continue  # its attention.npz is from a pause before the divergence: not this run's model
        if first is None:
            first, record = arrays, this
        elif not (np.array_equal(arrays["indices"], first["indices"])
                  and np.array_equal(arrays["labels"], first["labels"])):
            raise ValueError(f"{run}: its attention.npz holds other test images than the first run's")
        row = experiments.get_row(name)
        progress = "" if this.finished else f", in progress: {counted(this.epochs_run, 'epoch')}"
        runs.append(AttentionRun(row=name, label=f"{row.model_name}, d = {row.d} ({name}{progress})", d=row.d,
                                 theta=arrays["theta"][keep], predictions=arrays["predictions"][keep],
                                 finished=this.finished, epochs=this.epochs_run))
    if first is None:
        raise FileNotFoundError(f"no attention.npz under {Path(results_dir) / profile}/*/seed{seed}/")
    indices = first["indices"][keep]
    test = _test_split(record.config, data_dir)
    if not np.array_equal(test.labels[indices], first["labels"][keep]):
        raise ValueError("the regenerated test split's labels differ from the saved ones: data changed since the runs")
    if "boxes" in first and not np.array_equal(test.boxes[indices], first["boxes"][keep]):
        raise ValueError("the regenerated test split's boxes differ from the saved ones: data changed since the runs")
    return SavedAttention(images=test.images[indices], labels=first["labels"][keep],
                          boxes=np.asarray(test.boxes[indices], dtype=np.float32), indices=indices,
                          runs=tuple(runs), profile=profile, seed=seed,
                          description=experiments.PROFILES[profile].description)
