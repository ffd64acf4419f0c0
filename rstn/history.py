"""The repository's git history as a budget: what it holds, and whether another resume pack fits in it.

Every resume pack ever committed stays in the history, which the project keeps under `HISTORY_LIMIT_MIB`
(what a clone carries). The CPU queue weighs a run it would start from epoch 0 against what is left: the
history now, the packs the runs in progress will leave, and the pack of the new run itself
(`rstn.checkpoints.pack_history_estimate`); a run whose pack does not fit is not started.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from rstn.checkpoints import PACK_NAME, history_bytes, pack_history_estimate
from rstn.experiments import RunConfig
from rstn.records import RUN_FILE, ResultsError, read_run

# The project's limit on its git history, which keeps every resume pack ever committed.
HISTORY_LIMIT_MIB = 150


def history_mib(folder: str | Path) -> float | None:
    """The size on disk of every object the refs of the git repository holding `folder` reach (what a clone
    carries: `git rev-list --objects --all`), in MiB; None outside a git work tree or without git. A folder
    not made yet (a results folder before its first run) stands for the nearest folder above it."""
    folder = next(p for p in (Path(folder).resolve(), *Path(folder).resolve().parents) if p.is_dir())

    def git(*args: str, stdin: str | None = None) -> str:
        return subprocess.run(["git", "-C", str(folder), *args], input=stdin, capture_output=True, text=True,
                              timeout=120, check=True).stdout

    try:
        names = "".join(line.split(" ", 1)[0] + "\n" for line in git("rev-list", "--objects", "--all").splitlines())
        sizes = git("cat-file", "--batch-check=%(objectsize:disk)", stdin=names) if names else ""
    except (OSError, subprocess.SubprocessError):
        return None
    return sum(int(size) for size in sizes.split() if size.isdigit()) / 2**20


def pack_cost_mib(config: RunConfig) -> float:
    """About what the resume pack of `config`'s model costs the history once committed, in MiB."""
    from rstn.models import build_model

    return pack_history_estimate(build_model(config.model)) / 2**20


def packs_in_progress_mib(results_dir: str | Path) -> float:
    """What the resume packs beside the runs in progress under `results_dir` (<profile>/<row>/seed<n>) will
    cost the history when committed, in MiB: each is rewritten, a new file to git, at every checkpoint."""
    total = 0
    for pack in Path(results_dir).glob(f"*/*/seed*/{PACK_NAME}"):
        try:
            running = read_run(pack.parent / RUN_FILE).status == "running"
        except (OSError, ResultsError):
            running = False
        total += history_bytes(pack) if running else 0
    return total / 2**20


def no_room_reason(after_mib: float, pack_mib: float) -> str:
    """Why a run is not started when its pack (`pack_mib`) would take the history to `after_mib`."""
    return (f"its resume pack (about {pack_mib:.0f} MiB of history) would take the repository's history to about "
            f"{after_mib:.0f} MiB, over its {HISTORY_LIMIT_MIB:g} (every committed pack stays in it)")


def why_no_room(config: RunConfig, results_dir: str | Path) -> str | None:
    """Why the history has no room for the pack that a run of `config` started now would leave, beside those
    of the runs in progress under `results_dir` (`no_room_reason`); None where it has, or outside git."""
    used = history_mib(results_dir)
    if used is None:
        return None
    pack_mib = pack_cost_mib(config)
    after = used + packs_in_progress_mib(results_dir) + pack_mib
    return no_room_reason(after, pack_mib) if after > HISTORY_LIMIT_MIB else None
