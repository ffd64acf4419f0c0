"""The authors' optimiser and gradient constraints, as Lasagne (2015) computed them.

Three small pieces, each written out because PyTorch's built-ins differ in a detail that matters:

- `LasagneRMSprop`: Lasagne's `rmsprop` puts eps *inside* the square root,
      acc <- rho * acc + (1 - rho) * g^2
      p   <- p - lr * g / sqrt(acc + eps)
  while `torch.optim.RMSprop` computes `p - lr * g / (sqrt(acc) + eps)`. With eps = 1e-6 inside, the
  denominator never falls below sqrt(1e-6) = 1e-3, so a parameter whose gradients are tiny moves at most
  lr * g / 1e-3; PyTorch's floor is 1e-6, a thousand times smaller, and lets such steps grow to ~lr.
  The first step also differs: with acc = 0.1 g^2, Lasagne steps lr * g / sqrt(0.1 g^2 + eps), PyTorch
  lr * g / (sqrt(0.1) |g| + eps): the same for |g| >> 3e-3, very different below.
- `clip_gradients`: for RNN-SPN the code clips every gradient element to [-1, 1] and *then* rescales all
  gradients together to total norm <= 5 (`lasagne.updates.total_norm_constraint`); the FFN-SPN script
  applies only the norm constraint. Lasagne's multiplier is min(norm, max_norm) / (norm + 1e-7), so it
  scales by norm / (norm + 1e-7) even below the bound; `torch.nn.utils.clip_grad_norm_` uses
  max_norm / (norm + 1e-6) clamped to 1. We follow Lasagne.
- `learning_rate`: the code's schedule, lr / 1.5 after (0-based) epochs 31, 43, 55, ...

All three run without a host sync, so a training step never waits on the GPU.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

LASAGNE_NORM_EPS = 1e-7  # lasagne.updates.total_norm_constraint(epsilon=1e-7)


class LasagneRMSprop(torch.optim.Optimizer):
    """RMSprop with eps inside the square root (lasagne.updates.rmsprop).

    Args:
        params: the parameters (or parameter groups) to optimise.
        lr: learning rate; the trainer changes `param_groups[i]["lr"]` once per epoch.
        rho: decay of the running mean of squared gradients (Lasagne's `rho`, PyTorch's `alpha`).
        eps: added to the running mean *before* the square root.
    """

    def __init__(self, params: Iterable, lr: float = 5e-4, rho: float = 0.9, eps: float = 1e-6):
        if lr < 0 or not 0.0 <= rho < 1.0 or eps < 0:
            raise ValueError(f"invalid RMSprop hyper-parameters lr={lr}, rho={rho}, eps={eps}")
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 (torch.optim.Optimizer.step)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            accs = []
            for p in params:
                state = self.state[p]
                if "acc" not in state:
                    state["acc"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                accs.append(state["acc"])
            # acc <- rho * acc + (1 - rho) * g^2
            torch._foreach_mul_(accs, group["rho"])
            torch._foreach_addcmul_(accs, grads, grads, value=1.0 - group["rho"])
            # p <- p - lr * g / sqrt(acc + eps)   (eps inside the root: Lasagne, not PyTorch)
            denom = torch._foreach_add(accs, group["eps"])
            torch._foreach_sqrt_(denom)
            torch._foreach_addcdiv_(params, grads, denom, value=-group["lr"])
        return loss


def clip_gradients(
    params: Iterable[torch.nn.Parameter],
    max_norm: float | None = 5.0,
    element_clip: float | None = None,
) -> torch.Tensor:
    """Clip gradients in place the way the authors' scripts do; returns the total norm (a 0-d tensor).

    Order (rnn_spn.py): first every element to [-element_clip, element_clip], then the total-norm
    constraint over all gradients together. The returned norm is the one the constraint saw (after the
    element clipping), as Lasagne's `return_norm=True` gives it.

    Args:
        params: parameters whose `.grad` is modified.
        max_norm: bound on the 2-norm of all gradients concatenated; None skips the constraint.
        element_clip: bound on each element's magnitude; None skips element clipping.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    if element_clip is not None:
        torch._foreach_clamp_min_(grads, -element_clip)
        torch._foreach_clamp_max_(grads, element_clip)
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    if max_norm is not None:
        # lasagne total_norm_constraint: g * min(norm, max_norm) / (norm + 1e-7)
        multiplier = norm.clamp(max=max_norm) / (norm + LASAGNE_NORM_EPS)
        torch._foreach_mul_(grads, multiplier)
    return norm


def learning_rate(
    epoch: int,
    base_lr: float = 5e-4,
    first_decay_epoch: int = 31,
    decay_every: int = 12,
    factor: float = 1.5,
) -> float:
    """Learning rate used while training (0-based) `epoch`.

    The scripts decay at the end of epoch e when `last_decay > 10 and e > 30`, which first fires after
    epoch 31 and then every 12 epochs (43, 55, ...): epochs 0..31 use lr, 32..43 lr/1.5, 44..55 lr/1.5^2.
    (The scripts' flags `-nodecay 30 -decayinterval 10` mean exactly this.) `decay_every=0` disables it.
    """
    if decay_every <= 0 or epoch <= first_decay_epoch:
        return base_lr
    n_decays = (epoch - first_decay_epoch - 1) // decay_every + 1
    return base_lr / factor**n_decays
