"""Parity of a speed option: the same short training run with and without it, from one seed.

For each option, `steps` training steps of a row from the same initial weights, data and order, once with
the package's defaults and once with the option on; the per-step losses must agree within the option's
tolerance (float32 options: 2e-3 relative, as rounding and tied max-pool sub-gradients let two runs
drift; bf16: 5e-2). Options that the device lacks are skipped with a note. Exit status 1 if any fails.

    PYTHONPATH=. python3 scripts/device/parity.py --device cuda --rows rnn-spn-d2 ffn-spn-d2 --steps 20
    PYTHONPATH=. python3 scripts/device/parity.py --device cpu --rows rnn-spn-d4 --options channels_last bf16
"""

from __future__ import annotations

import argparse
import sys
from types import SimpleNamespace

import torch

from rstn.backends import configure_backends
from rstn.experiments import ROWS
from rstn.models import build_model
from rstn.optim import LasagneRMSprop
from rstn.optim import clip_gradients
from rstn.train import DeviceSplit, TrainConfig, element_clip_for, sequence_loss

OPTIONS = {  # name: (TrainConfig changes, relative tolerance on each step's loss, needs CUDA)
    "channels_last": ({"channels_last": False}, 2e-3, False),  # the default is on: compare with it off
    "tf32": ({"tf32": True}, 2e-3, True),
    "bf16": ({"bf16": True}, 5e-2, False),
    "cuda_graphs": ({"compile": True, "compile_mode": "reduce-overhead"}, 2e-3, True),
}


def losses(row: str, config: TrainConfig, steps: int, device: torch.device, seed: int = 0) -> list[float]:
    """Per-step training losses of `steps` steps (batch config.batch_size) from seed `seed`."""
    configure_backends(config.tf32, config.cudnn_benchmark)
    generator = torch.Generator().manual_seed(seed)
    n = steps * config.batch_size
    images = torch.randint(0, 257, (n, 100, 100), generator=generator).float() / 256
    labels = torch.randint(0, 10, (n, 3), generator=generator)
    split = DeviceSplit.from_split(SimpleNamespace(images=images, labels=labels), device)
    torch.manual_seed(seed)
    model = build_model(ROWS[row].model_config()).to(device).train()
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model, mode=config.compile_mode) if config.compile else model
    optimizer = LasagneRMSprop(model.parameters(), lr=config.lr, rho=config.rho, eps=config.eps)
    clip = element_clip_for(config, model)
    out = []
    for i in range(steps):
        x, y = split.batch(torch.arange(i * config.batch_size, (i + 1) * config.batch_size, device=device),
                           config.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
            logits = step_model(x).logits
        loss = sequence_loss(logits, y, config.softmax_tol)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_gradients(list(model.parameters()), config.max_grad_norm, clip)
        optimizer.step()
        out.append(loss.item())
    return out


def check(row: str, option: str, steps: int, device: torch.device) -> tuple[bool, str]:
    changes, tolerance, needs_cuda = OPTIONS[option]
    if needs_cuda and device.type != "cuda":
        return True, f"{row:<11} {option:<14} skipped: needs CUDA"
    base = losses(row, TrainConfig(), steps, device)
    other = losses(row, TrainConfig(**changes), steps, device)
    worst = max(abs(a - b) / abs(a) for a, b in zip(base, other, strict=True))
    ok = worst <= tolerance
    return ok, (f"{row:<11} {option:<14} max relative loss difference over {steps} steps {worst:.2e} "
                f"(tolerance {tolerance:.0e}): {'ok' if ok else 'FAILED'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", nargs="+", default=["rnn-spn-d2", "ffn-spn-d2"], choices=list(ROWS))
    parser.add_argument("--options", nargs="+", default=list(OPTIONS), choices=list(OPTIONS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    failed = 0
    for row in args.rows:
        for option in args.options:
            ok, line = check(row, option, args.steps, device)
            print(line, flush=True)
            failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
