"""The GPU window's pre-flight (window.sh gives it 30 s): may the heavy rows train here in bf16?

Three checks on the device the window trains on, one line each:
1. the sampler the models use (`grid_sample`: method "torch", float32) against STN eqs. (4)-(5) (method
   "equations") in float64 on the CPU, forward and backward, on a random image and theta:
   ||ours - ref|| / ||ref|| of the glimpse and of both gradients within 1e-4 (float32 lands far under);
2. the models' CUDA bf16 test through pytest (`-o addopts=""`: the project's addopts name nbval, which the
   GPU machine lacks; skipped on a CPU);
3. `--steps` bf16-autocast training steps of each row against the same steps in float32 from one seed
   (`parity.losses`): every loss finite, each within bf16's tolerance of float32's (parity.OPTIONS).
Exit status 0 when every check passes, 1 when one fails: window.sh then trains in float32 and says so.

    PYTHONPATH=. python3 scripts/device/preflight.py --device cuda --rows rnn-spn-d1 ffn-spn-d1 conv-net
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # parity.py, beside this file

from parity import OPTIONS, losses  # noqa: E402

from rstn.backends import configure_backends  # noqa: E402
from rstn.experiments import REGISTRY  # noqa: E402
from rstn.sampler import transform  # noqa: E402
from rstn.train import TrainConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SAMPLER_TOLERANCE = 1e-4  # relative, float32 on the device against float64


def relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """||ours - ref|| / ||ref||, in float64 on the CPU (NaN stays NaN, and fails every bound)."""
    ours, ref = ours.detach().double().cpu(), ref.detach().double().cpu()
    return (torch.linalg.vector_norm(ours - ref) / torch.linalg.vector_norm(ref)).item()


def check_sampler(device: torch.device, method: str) -> tuple[bool, str]:
    """The models' sampler on `device` in float32 against the equations in float64: glimpse, d/dimage,
    d/dtheta of a (8, 1, 100, 100) image into (8, 1, 33, 33) glimpses (d = 3), zooms and shears included."""
    configure_backends(False, True)  # no TF32: the check is of float32
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(8, 1, 100, 100, generator=generator, dtype=torch.float64)
    theta = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64) \
        + 0.3 * torch.randn(8, 2, 3, generator=generator, dtype=torch.float64)
    upstream = torch.randn(8, 1, 33, 33, generator=generator, dtype=torch.float64)

    def glimpse_and_grads(image, theta, method, upstream):
        image, theta = image.clone().requires_grad_(), theta.clone().requires_grad_()
        out = transform(image, theta, size=(33, 33), method=method)
        return (out, *torch.autograd.grad(out, (image, theta), upstream))

    ref = glimpse_and_grads(image, theta, "equations", upstream)
    ours = glimpse_and_grads(image.float().to(device), theta.float().to(device), method,
                             upstream.float().to(device))
    errors = [relative_error(a, b) for a, b in zip(ours, ref, strict=True)]
    ok = all(e <= SAMPLER_TOLERANCE for e in errors)  # False for NaN
    return ok, (f"sampler '{method}' on {device.type} (float32) against the equations (float64): glimpse "
                f"{errors[0]:.1e}, d/dimage {errors[1]:.1e}, d/dtheta {errors[2]:.1e} "
                f"(tolerance {SAMPLER_TOLERANCE:.0e}): {'ok' if ok else 'FAILED'}")


def check_pytest() -> tuple[bool, str]:
    """tests/test_models.py's CUDA bf16 test, in this process (one torch import for the whole pre-flight)."""
    import pytest

    args = ["-q", "-p", "no:cacheprovider", "-o", "addopts=", str(ROOT / "tests" / "test_models.py"),
            "-k", "cuda_bf16"]
    code = int(pytest.main(args))
    return code == 0, (f"pytest tests/test_models.py -k cuda_bf16 -o addopts='': exit {code}: "
                       f"{'ok' if code == 0 else 'FAILED'}")


def check_bf16_steps(row: str, device: torch.device, steps: int, batch: int) -> tuple[bool, str]:
    """`steps` training steps of `row` in bf16 autocast and in float32 from one seed: finite and close."""
    tolerance = OPTIONS["bf16"][1]
    base = losses(row, TrainConfig(batch_size=batch), steps, device)
    bf16 = losses(row, TrainConfig(batch_size=batch, bf16=True), steps, device)
    finite = all(math.isfinite(x) for x in base + bf16)
    worst = max(abs(a - b) / abs(a) for a, b in zip(base, bf16, strict=True)) if finite else math.nan
    ok = finite and worst <= tolerance
    return ok, (f"{row} bf16: {steps} steps of {batch}, losses {' '.join(f'{x:.3f}' for x in bf16)}, largest "
                f"relative difference from float32 {worst:.1e} (tolerance {tolerance:.0e}): "
                f"{'ok' if ok else 'FAILED'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rows", nargs="+", default=["rnn-spn-d1", "ffn-spn-d1", "conv-net"], choices=list(REGISTRY))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=None, help="(default: the protocol's 100 on CUDA, 2 on a CPU)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    batch = args.batch or (100 if device.type == "cuda" else 2)
    samplers = sorted({REGISTRY[row].model_config().sampler for row in args.rows})
    checks = [lambda method=method: check_sampler(device, method) for method in samplers] + [check_pytest]
    checks += [lambda row=row: check_bf16_steps(row, device, args.steps, batch) for row in args.rows]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU"
    cuda = torch.version.cuda or "none"
    print(f"preflight: torch {torch.__version__} (CUDA {cuda}), {device.type}: {name}", flush=True)
    failed, start = 0, time.monotonic()
    for check in checks:
        t0 = time.monotonic()
        ok, line = check()
        print(f"preflight: {line} [{time.monotonic() - t0:.1f}s]", flush=True)
        failed += not ok
    took = time.monotonic() - start
    print(f"preflight: {'all checks passed' if not failed else f'{failed} check(s) FAILED'} in {took:.0f}s",
          flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
