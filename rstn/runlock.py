"""One process per run: a lock held while a run trains.

Two processes on one machine must never train the same run: both would write its record, checkpoint
and pack, and the one that finishes second overwrites the first. The CPU queue's lanes
(`rstn train --cpu-queue --lanes 2`) walk the same list of runs side by side, and a hand-started
`rstn train --row ...` can meet a queue; each takes a run only if it gets the run's lock, else goes on.

The lock is an advisory `flock` on <checkpoint folder>/train.lock (outside the work tree, beside the
run's checkpoint): processes that share the results folder but not the checkpoint root (another
--checkpoint-dir or $RSTN_CHECKPOINT_DIR) do not see each other's locks. The kernel drops it when its process ends, however it ends, so a killed run never
leaves its run locked. The file holds who holds it ("pid 1234 since <UTC time>"), for the message.
Where `fcntl` does not exist (Windows) no lock is taken.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rstn.progress import utc_now

try:
    import fcntl
except ImportError:  # not POSIX: runs are not locked
    fcntl = None

LOCK_NAME = "train.lock"


class RunBusyError(RuntimeError):
    """Another process is training the run (it holds the run's lock)."""


@contextmanager
def run_lock(path: str | Path, name: str) -> Iterator[None]:
    """Hold the lock file `path` while the block runs, or raise RunBusyError naming its holder at once.

    The file is left in place: unlinking a lock file races with a process that has just opened it.
    """
    path = Path(path)
    if fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "a process"
            raise RunBusyError(f"{name} is being trained by another process ({holder}, lock {path}); "
                               "left to it") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {utc_now()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)
