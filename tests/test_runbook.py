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
    for script in [*DEVICE.glob("*.sh"), *DEVICE.glob("*.py"), DEVICE / "README.md"]:
        for path in re.findall(r"(?:tests|scripts|benchmarks)/[\w/-]+\.(?:py|sh)", script.read_text()):
            assert (ROOT / path).is_file(), f"{script.name} names {path}, which does not exist"


def test_the_dry_run_passes(mnist_file):
    """window.sh end to end on this CPU (temporary folders only), $OUT within a device call's limits, and
    the tree a call would take within its 64 MiB. (mnist_file: MNIST is in the cache, where `rstn mnist`
    finds it.)"""
    result = subprocess.run(["bash", str(DEVICE / "dry-run.sh")], capture_output=True, text=True, cwd=ROOT,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    out = result.stdout
    assert "check_out: within the limits of a device call, all present" in out
    assert re.search(r"travel: \d+ files, [\d.]+ MiB: within the call's 64 MiB", out)
    assert out.count("finished after 2 epochs") == 3 and "3 weights files" in out


def _git_tree(root: Path) -> Path:
    """A git repository with one run's record and its two binary results, committed."""
    folder = root / "results" / "paper" / "rnn-spn-d2" / "seed0"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text("{}")
    (folder / "resume.pt").write_bytes(b"p" * 1000)
    (folder / "weights.safetensors").write_bytes(b"w" * 100)
    for args in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", "-C", str(root), *args], check=True)
    return folder


def test_binary_results_are_set_aside_for_a_call_and_restored(tmp_path):
    sys.path.insert(0, str(DEVICE))
    import travel

    folder = _git_tree(tmp_path)
    (tmp_path / ".git" / "info" / "exclude").write_text("/.carry/\n")  # as prepare.sh leaves it
    (tmp_path / ".carry").mkdir()
    (tmp_path / ".carry" / "mnist.pkl.gz").write_bytes(b"m" * 50)
    total, text = travel.size_report(tmp_path, [".carry"], False, [])
    assert total == 2 + 1000 + 100 + 50 and "within the call's 64 MiB" in text
    assert travel.size_report(tmp_path, [".carry"], True, [])[0] == 2 + 50

    assert len(travel.aside(tmp_path)) == 2
    assert not (folder / "resume.pt").exists() and travel.size_report(tmp_path, [], False, [])[0] == 2
    assert "/.aside/" in (tmp_path / ".git" / "info" / "exclude").read_text().splitlines()
    with pytest.raises(SystemExit, match="restore"):  # a second aside before the restore
        (folder / "resume.pt").write_bytes(b"newer")
        travel.aside(tmp_path)
    lines = travel.restore(tmp_path)
    assert (folder / "resume.pt").read_bytes() == b"newer"  # the newer file is kept...
    assert any(line.startswith("kept the newer results/paper/rnn-spn-d2/seed0/resume.pt") for line in lines)
    assert (tmp_path / ".aside" / folder.relative_to(tmp_path) / "resume.pt").exists()  # ...the older stays aside
    assert (folder / "weights.safetensors").read_bytes() == b"w" * 100


def test_check_out_names_what_a_call_would_not_give_back(tmp_path):
    sys.path.insert(0, str(DEVICE))
    import check_out

    for name in ("window.log", "window.json", "jobs.log", "a b.txt"):
        (tmp_path / name).write_text("x")
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c" / "deep.txt").write_text("x")
    for i in range(5):
        (tmp_path / f"extra{i}.txt").write_text("x")
    _, problems = check_out.limit_problems(tmp_path)
    assert any("'a b.txt'" in p for p in problems) and any("3 folders down" in p for p in problems)
    assert "10 files, more than 8" in problems
    assert check_out.window_problems(tmp_path, "paper", []) == ["sweep-paper.tar.gz: missing"]


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
