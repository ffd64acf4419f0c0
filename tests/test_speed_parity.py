"""The CPU speed-ups change no result beyond float rounding: the tolerance they are held to.

Two speed-ups are on by default (benchmarks/README.md, `bench_train.py --compare`):
- the ReLU after each max-pool (`rstn.models.pool_relu`): bit-identical, tested in tests/test_models.py;
- channels_last memory (`TrainConfig.channels_last`): other convolution and pooling kernels. Stated
  tolerance for one forward/backward step, where no max-pool window holds two equal maxima: logits within
  1e-5 absolute, every parameter's gradient within 1e-4 of that tensor's largest gradient. Where a window
  does hold tied maxima (flat, e.g. zero-padded, regions), the two layouts' kernels may send the gradient
  to different ones of the tied positions: both are valid sub-gradients, as another machine's would be.
  Near-ties count too: two values of a window within float32 rounding of each other may swap order
  between the layouts (seen for the conv net on an AMD EPYC of family 25: one window in 600,000 of the
  second pool, which moved the first convs' gradients by 1e-3 of their largest). Where that happens the
  gradients are held to 1e-2, and the conv net, which runs in float64 too, must match to 1e-10 there.
  Training runs therefore do not repeat bit for bit across the two layouts; they differ as runs on two
  kinds of hardware do.
"""

from __future__ import annotations

import pytest
import torch

from rstn.models import ModelConfig, build_model
from rstn.train import sequence_loss

LOGIT_ATOL = 1e-5
GRAD_RTOL = 1e-4  # of each tensor's largest |gradient|
NEAR_TIE_GRAD_RTOL = 1e-2  # ... where a near-tie in a max-pool window swapped its argmax between the layouts


def _step(model, x, y, channels_last: bool):
    model = model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    model.zero_grad()
    logits = model(x).logits
    sequence_loss(logits, y).backward()
    return logits.detach().clone(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("kind, d", [("rnn_spn", 4), ("ffn_spn", 2), ("conv_net", 1)])
def test_channels_last_step_matches_within_the_stated_tolerance(kind, d):
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind=kind, d=d))
    with torch.no_grad():  # away from Glorot's init, but theta stays the identity: no zero padding, no ties
        for name, p in model.named_parameters():
            if not name.startswith("theta"):
                p.add_(0.02 * torch.randn_like(p))
    x, y = torch.rand(12, 1, 100, 100), torch.randint(0, 10, (12, 3))
    swapped, windows = _pool_order_swaps(model, x)
    assert swapped <= 1e-5 * windows  # near-ties are rare: a few windows at most
    logits_a, grads_a = _step(model, x, y, channels_last=False)
    logits_b, grads_b = _step(model, x, y, channels_last=True)
    assert (logits_a - logits_b).abs().max() <= LOGIT_ATOL
    rtol = GRAD_RTOL if swapped == 0 else NEAR_TIE_GRAD_RTOL
    for name, g in grads_a.items():
        scale = g.abs().max().clamp_min(1e-12)
        assert (g - grads_b[name]).abs().max() <= rtol * scale, (name, swapped)
    if kind == "conv_net":  # in float64 no window is that close: the two layouts compute the same gradients
        model = model.double()
        _, grads_a = _step(model, x.double(), y, channels_last=False)
        _, grads_b = _step(model, x.double(), y, channels_last=True)
        for name, g in grads_a.items():
            assert (g - grads_b[name]).abs().max() <= 1e-10 * g.abs().max().clamp_min(1e-30), name


def _pool_order_swaps(model, x) -> tuple[int, int]:
    """(windows whose max-pool argmax differs between the layouts, windows) over every max-pool of `model`."""
    def pool_inputs(channels_last: bool) -> list[torch.Tensor]:
        seen = []
        hooks = [m.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].detach().contiguous()))
                 for m in model.modules() if isinstance(m, torch.nn.MaxPool2d)]
        with torch.no_grad():
            model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            model(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
        for h in hooks:
            h.remove()
        model.to(memory_format=torch.contiguous_format)
        return seen

    swapped = windows = 0
    for a, b in zip(pool_inputs(False), pool_inputs(True), strict=True):
        index_a = torch.nn.functional.max_pool2d(a, 2, return_indices=True)[1]
        index_b = torch.nn.functional.max_pool2d(b, 2, return_indices=True)[1]
        swapped += int((index_a != index_b).sum())
        windows += index_a.numel()
    return swapped, windows


def test_the_tolerance_would_catch_a_real_difference():
    """A 1% change of one weight moves the gradients far outside the tolerance (the check is not vacuous)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="conv_net"))
    x, y = torch.rand(12, 1, 100, 100), torch.randint(0, 10, (12, 3))
    _, grads_a = _step(model, x, y, channels_last=False)
    with torch.no_grad():
        model.classifier[0][0].weight.mul_(1.01)
    _, grads_b = _step(model, x, y, channels_last=True)
    worst = max(((grads_a[n] - grads_b[n]).abs().max() / grads_a[n].abs().max()).item() for n in grads_a)
    assert worst > 10 * GRAD_RTOL
