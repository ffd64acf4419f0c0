"""The spatial transformer's grid generator and samplers (STN paper, Sect. 3.2-3.3; RNN-SPN paper eqs. 1-4).

Convention, used by every function here and by the rest of the package:

* ``theta`` (B, 2, 3) maps points of the OUTPUT grid to sample points in the INPUT image
  (target -> source, STN eq. 1): ``(x_s, y_s) = theta @ (x_t, y_t, 1)``.
* Coordinates are normalised to [-1, 1] in both axes, with the end points on the centres of the corner
  pixels: -1 is the centre of pixel 0 and +1 the centre of pixel W-1. This is PyTorch's
  ``align_corners=True`` and the authors' ``linspace(-1, 1, n)`` grid; it is passed explicitly everywhere.
* The last dimension of a grid holds (x, y) in that order: x runs along the width (columns), y along the
  height (rows). Note the RNN-SPN paper writes grid points as (y, x); the maths is the same.
* Sample points outside the image read zeros (zero padding).
* Images are (B, C, H, W); a glimpse of down-sampling factor d is floor(H/d) x floor(W/d) (RNN-SPN eq. 4;
  Lasagne's ``int(H // d)``), so d=3 on 100x100 gives 33x33.

Three implementations of the same sampler:

* ``method="torch"``: ``F.affine_grid``/``F.grid_sample`` (fast, cuDNN on GPU); the default for training.
* ``method="equations"``: :func:`affine_grid` and :func:`bilinear_sample`/:func:`nearest_sample`, written
  from STN eqs. (1), (4), (5); the tests check it against PyTorch's, forward and backward.
* ``method="lasagne2015"``: the Lasagne ``TransformerLayer`` the paper ran with (before 2015-09-29). It
  scaled normalised coordinates to pixels as ``(g + 1) * W / 2`` instead of ``(g + 1) * (W - 1) / 2`` and
  read zero unless both bilinear neighbours lie inside the image. The identity theta then samples pixel k
  at ``k * W / (W - 1)`` (a stretch of 1/(W-1) px per pixel) and leaves the last row and column zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

METHODS = ("torch", "equations", "lasagne2015")
KERNELS = ("bilinear", "nearest")


def output_size(
    height: int, width: int, d: float | None = None, size: tuple[int, int] | None = None
) -> tuple[int, int]:
    """The glimpse size (h, w): ``size`` if given, else floor(height/d) x floor(width/d) (d defaults to 1).

    Raises:
        ValueError: d <= 0, or a size smaller than 1x1.
    """
    if size is not None:
        h, w = (int(s) for s in size)
    else:
        d = 1 if d is None else d
        if not d > 0:
            raise ValueError(f"down-sampling factor d must be > 0, got {d}")
        # RNN-SPN eq. (4): (H/d) x (W/d) points, rounded down as Lasagne's int(H // d)
        h, w = int(height // d), int(width // d)
    if h < 1 or w < 1:
        raise ValueError(f"output size must be at least 1x1, got {h}x{w} (H={height}, W={width}, d={d})")
    return h, w


def _linspace(n: int, like: Tensor) -> Tensor:
    # n points from -1 to +1 inclusive (pixel centres); a single point sits at 0, as in F.affine_grid.
    if n == 1:
        return torch.zeros(1, dtype=like.dtype, device=like.device)
    return torch.linspace(-1.0, 1.0, n, dtype=like.dtype, device=like.device)


def affine_grid(theta: Tensor, size: tuple[int, int]) -> Tensor:
    """Sample points of an output grid of ``size`` (h, w) under ``theta``.

    Args:
        theta: (B, 2, 3), output -> input, normalised coordinates.
        size: (h, w) of the output grid.

    Returns:
        grid: (B, h, w, 2), (x, y) input sample points in [-1, 1] coordinates (outside the image allowed).
    """
    _check_theta(theta)
    h, w = size
    y_t, x_t = torch.meshgrid(_linspace(h, theta), _linspace(w, theta), indexing="ij")
    target = torch.stack([x_t, y_t, torch.ones_like(x_t)], dim=-1)  # (h, w, 3)
    # STN eq. (1): (x_s, y_s) = A_theta (x_t, y_t, 1)
    grid = target.reshape(1, h * w, 3) @ theta.transpose(1, 2)  # (B, h*w, 2)
    return grid.reshape(theta.shape[0], h, w, 2)


def _to_pixels(grid: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    # align_corners=True: -1 -> centre of pixel 0, +1 -> centre of pixel W-1 (PyTorch's order of operations)
    x = (grid[..., 0] + 1) / 2 * (width - 1)
    y = (grid[..., 1] + 1) / 2 * (height - 1)
    return x, y


def _gather(image: Tensor, n: Tensor, m: Tensor) -> Tensor:
    """U[:, :, n, m] for integer rows n and columns m (B, h, w), zero where (n, m) is outside the image."""
    batch, channels, height, width = image.shape
    inside = (n >= 0) & (n < height) & (m >= 0) & (m < width)
    index = (n.clamp(0, height - 1) * width + m.clamp(0, width - 1)).reshape(batch, 1, -1)
    values = image.reshape(batch, channels, height * width).gather(2, index.expand(-1, channels, -1))
    return values.reshape(batch, channels, *n.shape[1:]) * inside.unsqueeze(1).to(image.dtype)


def _bilinear(image: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Sum of eq. (5) over the only two columns and two rows where the kernel is nonzero."""
    m0, n0 = x.detach().floor(), y.detach().floor()
    wx1, wy1 = x - m0, y - n0  # max(0, 1 - |x - m|) at m = m0 + 1; at m = m0 it is 1 - wx1
    m0, n0 = m0.long(), n0.long()
    wx0, wx1 = (1 - wx1).unsqueeze(1), wx1.unsqueeze(1)
    wy0, wy1 = (1 - wy1).unsqueeze(1), wy1.unsqueeze(1)
    return (
        wy0 * wx0 * _gather(image, n0, m0)
        + wy0 * wx1 * _gather(image, n0, m0 + 1)
        + wy1 * wx0 * _gather(image, n0 + 1, m0)
        + wy1 * wx1 * _gather(image, n0 + 1, m0 + 1)
    )


def _check_sample_args(image: Tensor, grid: Tensor) -> None:
    _check_image(image)
    if grid.ndim != 4 or grid.shape[-1] != 2 or grid.shape[0] != image.shape[0]:
        raise ValueError(
            f"grid must be (B, h, w, 2) with B = image batch {image.shape[0]}, got {tuple(grid.shape)}"
        )


def bilinear_sample(image: Tensor, grid: Tensor) -> Tensor:
    """Bilinear sampling of ``image`` at ``grid`` (STN eq. 5), zeros outside.

    At a sample point on an exact pixel coordinate the gradient w.r.t. the point is the right-sided
    derivative of the kernel, as in PyTorch.

    Args:
        image: (B, C, H, W).
        grid: (B, h, w, 2), (x, y) in [-1, 1] coordinates, align_corners=True.

    Returns:
        (B, C, h, w).
    """
    _check_sample_args(image, grid)
    x, y = _to_pixels(grid, image.shape[2], image.shape[3])
    # STN eq. (5): V = sum_nm U_nm max(0, 1 - |x_s - m|) max(0, 1 - |y_s - n|)
    return _bilinear(image, x, y)


def nearest_sample(image: Tensor, grid: Tensor) -> Tensor:
    """Nearest-neighbour sampling of ``image`` at ``grid`` (STN eq. 4), zeros outside.

    Differentiable w.r.t. the image only (its gradient w.r.t. the grid is zero almost everywhere).

    Args:
        image: (B, C, H, W).
        grid: (B, h, w, 2), (x, y) in [-1, 1] coordinates, align_corners=True.

    Returns:
        (B, C, h, w).
    """
    _check_sample_args(image, grid)
    x, y = _to_pixels(grid, image.shape[2], image.shape[3])
    # STN eq. (4): V = U at (floor(y_s + 0.5), floor(x_s + 0.5))
    return _gather(image, (y.detach() + 0.5).floor().long(), (x.detach() + 0.5).floor().long())


def lasagne2015_sample(image: Tensor, grid: Tensor) -> Tensor:
    """Bilinear sampling as Lasagne's TransformerLayer did before 2015-09-29 (the paper's runs).

    Pixel coordinates are ``(g + 1) * W / 2`` (not ``(W - 1)``), and the output is zero unless both
    neighbours floor(x), floor(x) + 1 (and likewise in y) lie inside the image: the 2015 code clipped the
    neighbour indices, so outside [0, W - 1) its two weights cancelled on the same pixel.

    Args:
        image: (B, C, H, W).
        grid: (B, h, w, 2), (x, y) in [-1, 1] coordinates.

    Returns:
        (B, C, h, w).
    """
    _check_sample_args(image, grid)
    height, width = image.shape[2], image.shape[3]
    # deviation from align_corners=True, kept on purpose: (g + 1) W / 2 puts +1 one pixel past the last centre
    x = (grid[..., 0] + 1) * width / 2
    y = (grid[..., 1] + 1) * height / 2
    m0, n0 = x.detach().floor(), y.detach().floor()
    both_inside = (m0 >= 0) & (m0 <= width - 2) & (n0 >= 0) & (n0 <= height - 2)
    return _bilinear(image, x, y) * both_inside.unsqueeze(1).to(image.dtype)


def attention_theta(s: Tensor | float, tx: Tensor | float, ty: Tensor | float) -> Tensor:
    """The attention-restricted transform: isotropic scale s and translation (tx, ty) (STN eq. 2).

    Args:
        s, tx, ty: scalars or tensors of one broadcastable shape (...).

    Returns:
        theta: (..., 2, 3) = [[s, 0, tx], [0, s, ty]].
    """
    values = [v if isinstance(v, Tensor) else torch.tensor(float(v)) for v in (s, tx, ty)]
    s, tx, ty = torch.broadcast_tensors(*values)
    zero = torch.zeros_like(s)
    # STN eq. (2): A_theta = [[s, 0, t_x], [0, s, t_y]]
    return torch.stack([torch.stack([s, zero, tx], -1), torch.stack([zero, s, ty], -1)], -2)


def transform(
    image: Tensor,
    theta: Tensor,
    d: float = 1,
    size: tuple[int, int] | None = None,
    method: str = "torch",
    kernel: str = "bilinear",
) -> Tensor:
    """Warp ``image`` by ``theta`` into a glimpse of floor(H/d) x floor(W/d) (or ``size``).

    Args:
        image: (B, C, H, W) floating point.
        theta: (B, 2, 3), output -> input, normalised coordinates (see the module docstring).
        d: down-sampling factor (> 0); ignored when ``size`` is given.
        size: explicit output size (h, w).
        method: "torch" (F.affine_grid/F.grid_sample, align_corners=True), "equations" (this module's
            STN eqs.), or "lasagne2015" (the 2015 Lasagne sampler; bilinear only).
        kernel: "bilinear" (STN eq. 5) or "nearest" (STN eq. 4).

    Returns:
        (B, C, h, w) in the common dtype of image and theta.

    Raises:
        ValueError: image not 4-D, theta not (B, 2, 3) with the image's B, d <= 0, unknown method/kernel.
    """
    _check_image(image)
    _check_theta(theta, batch=image.shape[0])
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if method == "lasagne2015" and kernel != "bilinear":
        raise ValueError("the 2015 Lasagne sampler is bilinear only")
    h, w = output_size(image.shape[2], image.shape[3], d=d, size=size)
    dtype = torch.promote_types(image.dtype, theta.dtype)
    image, theta = image.to(dtype), theta.to(dtype)
    if method == "torch":
        grid = F.affine_grid(theta, [image.shape[0], image.shape[1], h, w], align_corners=True)
        return F.grid_sample(image, grid, mode=kernel, padding_mode="zeros", align_corners=True)
    grid = affine_grid(theta, (h, w))
    if method == "lasagne2015":
        return lasagne2015_sample(image, grid)
    return bilinear_sample(image, grid) if kernel == "bilinear" else nearest_sample(image, grid)


def _check_image(image: Tensor) -> None:
    if image.ndim != 4:
        raise ValueError(f"image must be 4-D (B, C, H, W), got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(f"image must be floating point, got {image.dtype}")


def _check_theta(theta: Tensor, batch: int | None = None) -> None:
    if theta.ndim != 3 or theta.shape[1:] != (2, 3):
        raise ValueError(f"theta must be (B, 2, 3), got shape {tuple(theta.shape)}")
    if batch is not None and theta.shape[0] != batch:
        raise ValueError(f"theta batch {theta.shape[0]} does not match image batch {batch}")
