"""Shared fixtures: the MNIST file, a small generated data set, and the per-image reference generator.

RSTN_DATA_DIR: when unset and ../shared/data holds the MNIST pickle, the tests use it (no download).
Without either, the ``mnist_file`` fixture fetches MNIST into the cache dir, as a fresh machine would.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

if not os.environ.get("RSTN_DATA_DIR") and (SHARED_DATA / "mnist.pkl.gz").is_file():
    os.environ["RSTN_DATA_DIR"] = str(SHARED_DATA)

from rstn.data import SequenceConfig, generate_sequences  # noqa: E402
from rstn.mnist import load_mnist, mnist_path  # noqa: E402

# Small enough to generate in a fraction of a second, large enough to cover every draw's range often.
SMALL_CONFIG = SequenceConfig(n_train=150, n_valid=50, n_test=50)


@pytest.fixture(autouse=True)
def checkpoints_in_tmp(tmp_path_factory, monkeypatch):
    """Tests never write checkpoints into the user's cache (rstn.runs.checkpoint_dir)."""
    monkeypatch.setenv("RSTN_CHECKPOINT_DIR", str(tmp_path_factory.mktemp("checkpoints")))


@pytest.fixture(scope="session")
def mnist_file() -> Path:
    """Path of the verified mnist.pkl.gz ($RSTN_DATA_DIR, the cache dir, or fetched)."""
    return mnist_path()


@pytest.fixture(scope="session")
def mnist(mnist_file: Path) -> dict:
    """{"train" | "valid" | "test": (images (N, 28, 28) float32, labels (N,) int64)}."""
    return load_mnist(mnist_file.parent)


@pytest.fixture(scope="session")
def small_config() -> SequenceConfig:
    return SMALL_CONFIG


@pytest.fixture(scope="session")
def small_sequences(mnist_file: Path) -> dict:
    """SMALL_CONFIG generated with seed 0 (treat as read-only: it is shared by the session)."""
    return generate_sequences(SMALL_CONFIG, seed=0, data_dir=mnist_file.parent)


@pytest.fixture(scope="session")
def reference() -> ModuleType:
    """benchmarks/bench_generator.py, which holds the per-image reference loop."""
    path = ROOT / "benchmarks" / "bench_generator.py"
    spec = importlib.util.spec_from_file_location("bench_generator", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def structured_image() -> np.ndarray:
    """A 100 x 100 grey image with structure everywhere (gradients and a few bright strokes), no data set
    needed: the explorers' tests (Python and browser) warp it and compare pixels."""
    y, x = np.mgrid[0:100, 0:100] / 99.0
    picture = 0.5 + 0.25 * np.sin(7 * x + 3 * y) * np.cos(5 * y)
    picture[20:24, 10:60] = 1.0
    picture[30:80, 70:73] = 0.9
    return picture
