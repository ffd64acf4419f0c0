"""What git holds of the results: the runs a clean clone would not see.

The book is rendered from the results in the work tree, but nbval re-executes it on a clean clone, which has
only the committed ones; `rstn chapters` warns before it draws on the others.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def uncommitted_runs(results_dir: str | Path) -> list[str]:
    """The run folders (<profile>/<row>/seed<n>, relative to `results_dir`) with files that git does not
    hold as committed: new, changed or deleted. Empty outside a git work tree or without git."""
    results = Path(results_dir).resolve()
    if not results.is_dir():
        return []
    try:
        status = subprocess.run(["git", "-C", str(results), "status", "--porcelain", "--untracked-files=all",
                                 "--no-renames", "-z", "--", "."], capture_output=True, text=True, timeout=60,
                                check=True).stdout
        top = Path(subprocess.run(["git", "-C", str(results), "rev-parse", "--show-toplevel"],
                                  capture_output=True, text=True, timeout=60, check=True).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return []
    runs = set()
    for entry in filter(None, status.split("\0")):
        path = (top / entry[3:]).resolve()
        parts = path.relative_to(results).parts if path.is_relative_to(results) else ()
        if len(parts) >= 4:  # <profile>/<row>/seed<n>/<file>
            runs.add("/".join(parts[:3]))
    return sorted(runs)


def warn_uncommitted(results: Path, root: Path, out) -> None:
    """Say on `out` which runs under `results` git does not hold, if any (before the chapters draw on them)."""
    runs = uncommitted_runs(results)
    if runs:
        print(f"chapters: uncommitted results in {os.path.relpath(results, root)}/ ({', '.join(runs)}): book/ will "
              "show them, and nbval on a clean clone differs until they are committed", file=out, flush=True)
