"""What the browser tests share: where things are, a localhost server, and the check that Chromium,
node and playwright-core are there (scripts/ci-browser-deps.sh installs them)."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ARTIFACTS = ROOT / "artifacts" / "browser"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
needs_browser = pytest.mark.skipif(os.environ.get("RSTN_BROWSER_TEST") != "1",
                                   reason="needs headless Chromium: run `make browser-test`")


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        pass


@contextmanager
def serve(directory: Path) -> Iterator[str]:
    """http.server on a free localhost port, serving `directory`; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def ensure_browser() -> None:
    """Fail (not skip) when the test was asked for and its browser is missing; install the npm packages."""
    if shutil.which("node") is None or not CHROMIUM.exists():
        pytest.fail(f"needs node and {CHROMIUM}: run `bash scripts/ci-browser-deps.sh`")
    if not (HERE / "node_modules" / "playwright-core").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
