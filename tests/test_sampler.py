"""The sampler against references: PyTorch's own sampler, the literal kernel sums of STN eqs. (4)-(5), a
transcription of the 2015 Lasagne indexing, float64 gradcheck, and known geometry (glimpse boxes and IoU: tests/test_attention.py)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rstn.sampler import (
    affine_grid,
    attention_theta,
    bilinear_sample,
    nearest_sample,
    output_size,
    transform,
)

IDENTITY = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def random_theta(batch: int, scale: float = 0.4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Identity plus noise: zooms, shears, rotations, and points outside the image."""
    return IDENTITY + scale * torch.randn(batch, 2, 3, generator=generator)


def torch_reference(image, theta, size, mode="bilinear"):
    grid = F.affine_grid(theta, [image.shape[0], image.shape[1], *size], align_corners=True)
    return F.grid_sample(image, grid, mode=mode, padding_mode="zeros", align_corners=True)


@pytest.mark.parametrize("d, expected", [(1, 100), (2, 50), (3, 33), (4, 25)])
def test_output_size_from_d(d, expected):
    assert output_size(100, 100, d=d) == (expected, expected)
    image = torch.zeros(2, 1, 100, 100)
    theta = IDENTITY.expand(2, 2, 3)
    for method in ("torch", "equations", "lasagne2015"):
        assert transform(image, theta, d=d, method=method).shape == (2, 1, expected, expected)


def test_output_size_explicit_and_rectangular():
    assert output_size(60, 100, d=3) == (20, 33)
    assert output_size(100, 100, d=3, size=(7, 9)) == (7, 9)
    assert transform(torch.zeros(1, 1, 10, 12), IDENTITY[None], size=(4, 5)).shape == (1, 1, 4, 5)


@pytest.mark.parametrize(
    "shape, size",
    [((3, 2, 17, 23), (11, 13)), ((2, 1, 20, 20), (20, 20)), ((2, 3, 9, 8), (15, 14))],
)
def test_equations_match_torch_forward_and_backward(shape, size):
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(*shape, generator=gen, requires_grad=True)
    theta = random_theta(shape[0], generator=gen).requires_grad_()
    ours = transform(image, theta, size=size, method="equations")
    ref = torch_reference(image, theta, size)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    upstream = torch.randn(ref.shape, generator=gen)
    grads_ours = torch.autograd.grad(ours, (image, theta), upstream)
    grads_ref = torch.autograd.grad(ref, (image, theta), upstream)
    for g_ours, g_ref in zip(grads_ours, grads_ref):
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:Since version 1.3.0, affine_grid")
def test_affine_grid_matches_torch():
    theta = random_theta(4, generator=torch.Generator().manual_seed(1))
    ref = F.affine_grid(theta, [4, 1, 7, 9], align_corners=True)
    torch.testing.assert_close(affine_grid(theta, (7, 9)), ref, rtol=1e-6, atol=1e-6)
    # a single output row or column sits at 0, as in PyTorch
    ref1 = F.affine_grid(theta, [4, 1, 1, 9], align_corners=True)
    torch.testing.assert_close(affine_grid(theta, (1, 9)), ref1, rtol=1e-6, atol=1e-6)


def test_bilinear_matches_literal_eq5_kernel_sum():
    gen = torch.Generator().manual_seed(2)
    image = torch.rand(2, 3, 8, 11, generator=gen, dtype=torch.float64)
    grid = 1.3 * (2 * torch.rand(2, 5, 6, 2, generator=gen, dtype=torch.float64) - 1)  # some outside
    x = (grid[..., 0] + 1) / 2 * (11 - 1)
    y = (grid[..., 1] + 1) / 2 * (8 - 1)
    m = torch.arange(11, dtype=torch.float64)
    n = torch.arange(8, dtype=torch.float64)
    kx = (1 - (x[..., None] - m).abs()).clamp(min=0)  # (B, h, w, W) = max(0, 1 - |x_s - m|)
    ky = (1 - (y[..., None] - n).abs()).clamp(min=0)  # (B, h, w, H)
    literal = torch.einsum("bcnm,bijm,bijn->bcij", image, kx, ky)
    torch.testing.assert_close(bilinear_sample(image, grid), literal, rtol=1e-12, atol=1e-12)


def test_gradcheck_float64_image_and_theta():
    gen = torch.Generator().manual_seed(3)
    image = torch.rand(2, 2, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    theta = random_theta(2, scale=0.3, generator=gen).double().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda img, th: transform(img, th, size=(4, 5), method="equations"), (image, theta)
    )
    assert torch.autograd.gradcheck(
        lambda img, th: transform(img, th, size=(4, 5), method="lasagne2015"), (image, theta)
    )


@pytest.mark.parametrize("method", ["torch", "equations"])
def test_identity_returns_input_at_d1(method):
    image = torch.rand(2, 3, 12, 17, generator=torch.Generator().manual_seed(4))
    out = transform(image, IDENTITY.expand(2, 2, 3), d=1, method=method)
    torch.testing.assert_close(out, image, rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", ["torch", "equations"])
@pytest.mark.parametrize("k", [1, 3])
def test_translation_by_k_pixels(method, k):
    height, width = 9, 13
    image = torch.rand(1, 1, height, width, generator=torch.Generator().manual_seed(5))
    # theta maps output -> input: tx = +2k/(W-1) samples k pixels to the right, so content moves left by k
    shift_x = torch.tensor([[[1.0, 0.0, 2 * k / (width - 1)], [0.0, 1.0, 0.0]]])
    out = transform(image, shift_x, method=method)
    torch.testing.assert_close(out[..., : width - k], image[..., k:], rtol=0, atol=1e-5)
    assert out[..., width - k :].abs().max() < 1e-5  # sampled beyond the last pixel centre: zeros
    shift_y = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, -2 * k / (height - 1)]]])
    out = transform(image, shift_y, method=method)
    torch.testing.assert_close(out[..., k:, :], image[..., : height - k, :], rtol=0, atol=1e-5)
    assert out[..., :k, :].abs().max() < 1e-5


def literal_nearest(image: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """STN eq. (4) pixel by pixel: U at (floor(y + 0.5), floor(x + 0.5)), zero outside."""
    batch, channels, height, width = image.shape
    out = np.zeros((batch, channels, *grid.shape[1:3]), dtype=image.dtype)
    for b in range(batch):
        for i in range(grid.shape[1]):
            for j in range(grid.shape[2]):
                x = (grid[b, i, j, 0] + 1) / 2 * (width - 1)
                y = (grid[b, i, j, 1] + 1) / 2 * (height - 1)
                m, n = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
                if 0 <= m < width and 0 <= n < height:
                    out[b, :, i, j] = image[b, :, n, m]
    return out


def test_nearest_kernel_matches_references():
    gen = torch.Generator().manual_seed(6)
    image = torch.rand(2, 2, 10, 12, generator=gen, dtype=torch.float64)
    theta = random_theta(2, generator=gen).double()
    ours = transform(image, theta, size=(7, 8), method="equations", kernel="nearest")
    torch.testing.assert_close(ours, torch_reference(image, theta, (7, 8), mode="nearest"))
    grid = affine_grid(theta, (7, 8))
    literal = literal_nearest(image.numpy(), grid.numpy())
    np.testing.assert_array_equal(nearest_sample(image, grid).numpy(), literal)
    assert transform(image, theta, size=(7, 8), kernel="nearest").shape == (2, 2, 7, 8)


def lasagne2015_reference(image: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """A transcription of the 2015 Lasagne _interpolate: indices clipped, weights from the clipped indices."""
    batch, channels, height, width = image.shape
    x = (grid[..., 0] + 1.0) * width / 2.0
    y = (grid[..., 1] + 1.0) * height / 2.0
    x0 = np.floor(x).astype(int)
    y0 = np.floor(y).astype(int)
    x1, y1 = np.clip(x0 + 1, 0, width - 1), np.clip(y0 + 1, 0, height - 1)
    x0, y0 = np.clip(x0, 0, width - 1), np.clip(y0, 0, height - 1)
    out = np.zeros((batch, channels, *grid.shape[1:3]))
    for b in range(batch):
        ia, ib = image[b][:, y0[b], x0[b]], image[b][:, y1[b], x0[b]]
        ic, id_ = image[b][:, y0[b], x1[b]], image[b][:, y1[b], x1[b]]
        wa = (x1[b] - x[b]) * (y1[b] - y[b])
        wb = (x1[b] - x[b]) * (y[b] - y0[b])
        wc = (x[b] - x0[b]) * (y1[b] - y[b])
        wd = (x[b] - x0[b]) * (y[b] - y0[b])
        out[b] = wa * ia + wb * ib + wc * ic + wd * id_
    return out


def test_lasagne2015_matches_transcription_of_2015_code():
    gen = torch.Generator().manual_seed(7)
    image = torch.rand(3, 2, 10, 13, generator=gen, dtype=torch.float64)
    theta = random_theta(3, generator=gen).double()
    ours = transform(image, theta, size=(8, 9), method="lasagne2015")
    ref = lasagne2015_reference(image.numpy(), affine_grid(theta, (8, 9)).numpy())
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-12, atol=1e-12)


def test_lasagne2015_identity_zeroes_last_row_and_column_and_stretches():
    height, width = 10, 13
    image = torch.rand(2, 1, height, width, generator=torch.Generator().manual_seed(8)) + 0.1
    out = transform(image, IDENTITY.expand(2, 2, 3), method="lasagne2015")
    assert out[..., -1, :].abs().max() == 0 and out[..., :, -1].abs().max() == 0
    assert out[..., :-1, :-1].min() > 0
    torch.testing.assert_close(out[..., 0, 0], image[..., 0, 0])
    # elsewhere it is the input read at pixel k * W / (W - 1), not at k: a stretch of 1/(W-1) px per pixel
    x = torch.arange(width - 1) * width / (width - 1)
    y = torch.arange(height - 1) * height / (height - 1)
    grid_y, grid_x = torch.meshgrid(2 * y / (height - 1) - 1, 2 * x / (width - 1) - 1, indexing="ij")
    grid = torch.stack([grid_x, grid_y], -1).expand(2, -1, -1, -1)
    stretched = F.grid_sample(image, grid, align_corners=True)
    torch.testing.assert_close(out[..., :-1, :-1], stretched, rtol=1e-5, atol=1e-5)
    assert (out[..., :-1, :-1] - image[..., :-1, :-1]).abs().max() > 1e-2


def test_bad_inputs_raise_value_error():
    image = torch.zeros(2, 1, 10, 10)
    theta = IDENTITY.expand(2, 2, 3)
    with pytest.raises(ValueError, match="theta"):
        transform(image, theta.reshape(2, 6))
    with pytest.raises(ValueError, match="theta"):
        transform(image, torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="batch"):
        transform(image, IDENTITY.expand(3, 2, 3))
    with pytest.raises(ValueError, match="d must be > 0"):
        transform(image, theta, d=0)
    with pytest.raises(ValueError, match="d must be > 0"):
        transform(image, theta, d=-2)
    with pytest.raises(ValueError, match="at least 1x1"):
        transform(image, theta, d=11)
    with pytest.raises(ValueError, match="4-D"):
        transform(image[0], theta)
    with pytest.raises(ValueError, match="method"):
        transform(image, theta, method="cuda")
    with pytest.raises(ValueError, match="kernel"):
        transform(image, theta, kernel="bicubic")
    with pytest.raises(ValueError, match="bilinear only"):
        transform(image, theta, method="lasagne2015", kernel="nearest")
    with pytest.raises(ValueError, match="grid"):
        bilinear_sample(image, torch.zeros(2, 4, 4, 3))
    with pytest.raises(ValueError, match="grid"):
        bilinear_sample(image, torch.zeros(1, 4, 4, 2))


def test_attention_theta_is_eq2_and_zooms_on_centre():
    theta = attention_theta(torch.tensor([0.5, 2.0]), torch.tensor([0.1, 0.0]), -0.2)
    expected = torch.tensor([[[0.5, 0.0, 0.1], [0.0, 0.5, -0.2]], [[2.0, 0.0, 0.0], [0.0, 2.0, -0.2]]])
    torch.testing.assert_close(theta, expected)
    assert attention_theta(1.0, 0.0, 0.0).shape == (2, 3)
    torch.testing.assert_close(attention_theta(1.0, 0.0, 0.0), IDENTITY)
    # s = 1/2 on a 9x9 image with a 5x5 output reads exactly the central 5x5 pixels
    image = torch.rand(1, 1, 9, 9, generator=torch.Generator().manual_seed(9))
    out = transform(image, attention_theta(0.5, 0.0, 0.0)[None], size=(5, 5), method="equations")
    torch.testing.assert_close(out, image[..., 2:7, 2:7], rtol=0, atol=1e-6)
