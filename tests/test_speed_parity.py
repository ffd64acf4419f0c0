"""The CPU speed-ups change no result beyond float rounding: the tolerance they are held to.

Two speed-ups are on by default (benchmarks/README.md, `bench_train.py --compare`):
- the ReLU after each max-pool (`rstn.models.pool_relu`): bit-identical, tested in tests/test_models.py;
- channels_last memory (`TrainConfig.channels_last`): other convolution and pooling kernels. Stated
  tolerance for one forward/backward step, where no max-pool window holds two equal maxima: logits within
  1e-5 absolute, every parameter's gradient within 1e-4 of that tensor's largest gradient. Where a window
  does hold tied maxima (flat, e.g. zero-padded, regions), the two layouts' kernels may send the gradient
  to different ones of the tied positions: both are valid sub-gradients, as another machine's would be.
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


def _step(model, x, y, channels_last: bool):
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
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
    logits_a, grads_a = _step(model, x, y, channels_last=False)
    logits_b, grads_b = _step(model, x, y, channels_last=True)
    assert (logits_a - logits_b).abs().max() <= LOGIT_ATOL
    for name, g in grads_a.items():
        scale = g.abs().max().clamp_min(1e-12)
        assert (g - grads_b[name]).abs().max() <= GRAD_RTOL * scale, name


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
