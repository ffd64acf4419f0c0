"""The GPU runbook (scripts/device) and the pieces of the GPU path that a CPU can check."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rstn.train import DeviceSplit, TrainConfig

ROOT = Path(__file__).resolve().parent.parent
DEVICE = ROOT / "scripts" / "device"


def test_scripts_parse_and_name_files_that_exist():
    for script in DEVICE.glob("*.sh"):
        subprocess.run(["bash", "-n", str(script)], check=True)
    for script in ("call1.sh", "checks.sh", "call_next.sh"):
        text = (DEVICE / script).read_text()
        for path in re.findall(r"(?:tests|scripts|benchmarks)/[\w/]+\.(?:py|sh)", text):
            assert (ROOT / path).is_file(), f"{script} names {path}, which does not exist"


def test_parity_script_runs_on_the_cpu_and_skips_cuda_options():
    result = subprocess.run([sys.executable, str(DEVICE / "parity.py"), "--device", "cpu", "--rows", "ffn-spn-d4",
                             "--options", "channels_last", "tf32", "--steps", "3"],
                            capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert re.search(r"ffn-spn-d4 +channels_last +max relative loss difference over 3 steps .*: ok", result.stdout)
    assert re.search(r"tf32 +skipped: needs CUDA", result.stdout)


def test_data_are_halved_on_the_host_when_exact():
    """Off the CPU the split travels as float16 when that is exact (k/256 pixels), else as float32."""
    exact = SimpleNamespace(images=np.arange(256, dtype=np.float32).reshape(1, 16, 16) / 256,
                            labels=np.zeros((1, 3), dtype=np.int64))
    inexact = SimpleNamespace(images=exact.images + np.float32(1e-4), labels=exact.labels)
    meta = torch.device("meta")  # a device that is not the CPU, without a GPU
    assert DeviceSplit.from_split(exact, meta).images.dtype == torch.float16
    assert DeviceSplit.from_split(inexact, meta).images.dtype == torch.float32
    assert DeviceSplit.from_split(exact, torch.device("cpu")).images.dtype == torch.float32


def test_compile_mode_is_checked():
    assert TrainConfig(compile=True, compile_mode="reduce-overhead").compile_mode == "reduce-overhead"
    with pytest.raises(ValueError, match="compile_mode"):
        TrainConfig(compile_mode="fast")
