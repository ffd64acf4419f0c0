"""Runs on disk: one Table 1 run (`train_run`) and the one "is it done?" check (many in a row: `rstn.runlist`).

A run is (row, profile, seed). Its results go to results/<profile>/<row>/seed<k>/ (`rstn.results`), its
checkpoint to a folder outside the work tree, `checkpoint_dir()`/<profile>/<row>/seed<k>/checkpoint.pt,
so that checkpoints survive a fresh checkout of the repository but never enter git. Beside run.json, a
run in progress keeps its resume pack resume.pt (`rstn.checkpoints`), committed with the results, so that
a fresh clone on another machine continues it; a finished run keeps its best weights instead
(weights.safetensors, `load_trained`).

Records are never lost to a code change: a record whose config differs from the one asked for (after
`rstn.experiments.config_differences`, which reads fields an old record lacks as the code then ran) is
left untouched, and ConfigChangedError names the fields and --force.

Long runs: with a deadline the trainer stops cleanly at an epoch boundary; run.json then says "running"
(stop_reason "time_budget", the best-so-far metrics) and `resume=True` continues it. run.json is rewritten
after every epoch, the checkpoint every `checkpoint_every` (default 1: `kill -9` loses the epoch in progress).
While it trains, a run is locked to its process (`rstn.runlock`): another process leaves it alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rstn.attention_export import attention_arrays
from rstn.backends import backend_settings, device_name, processor_id, processor_name, resolve_device
from rstn.checkpoints import PACK_NAME, ResumePoint, describe_pack_size, latest_state, resume_point, write_pack
from rstn.experiments import (
    RunConfig,
    config_differences,
    describe_differences,
    run_dir,
    same_config,
)
from rstn.progress import ProgressLog, counted, format_duration, progress_mode, utc_now
from rstn.records import RUN_FILE, ResultsError, RunRecord, final_metrics, read_run, write_run
from rstn.runlock import LOCK_NAME, run_lock
from rstn.train import ATTENTION_NAME, CHECKPOINT_NAME, LOG_NAME, FitResult, NonFiniteLossError, SplitLike, fit
from rstn.trained import (  # noqa: F401 (re-exported)
    describe_trained_glimpses,
    has_weights,
    load_trained,
    save_best_weights,
    trained_glimpses,
)
from rstn.weights import WEIGHTS_NAME


class RunInProgressError(RuntimeError):
    """A run is in progress (status "running") and neither resume nor force was asked for."""


class ConfigChangedError(RuntimeError):
    """The run's record was made with another config; it is kept, and only --force replaces it."""


def checkpoint_dir() -> Path:
    """Where checkpoints live: $RSTN_CHECKPOINT_DIR, else <user cache>/rstn/checkpoints (outside git)."""
    if os.environ.get("RSTN_CHECKPOINT_DIR"):
        return Path(os.environ["RSTN_CHECKPOINT_DIR"])
    from rstn.mnist import cache_dir

    return cache_dir() / "checkpoints"


def checkpoint_path(config: RunConfig, root: str | Path | None = None) -> Path:
    """<root or checkpoint_dir()>/<profile>/<row>/seed<k>/checkpoint.pt."""
    return run_dir(root if root is not None else checkpoint_dir(), config.profile, config.row,
                   config.seed) / CHECKPOINT_NAME


def existing_record(config: RunConfig, results_dir: str | Path = "results") -> RunRecord | None:
    """The run's run.json, or None when there is none. Raises ResultsError when it is corrupt."""
    path = run_dir(results_dir, config.profile, config.row, config.seed) / RUN_FILE
    return read_run(path) if path.exists() else None


def is_finished(config: RunConfig, results_dir: str | Path = "results") -> bool:
    """Has this run finished with this config (up to result-neutral fields)? The one place this is decided.

    A corrupt run.json counts as not finished.
    """
    try:
        record = existing_record(config, results_dir)
    except ResultsError:
        return False
    return record is not None and record.finished and same_config(record.config, config.to_dict())


@dataclass(frozen=True)
class RunResult:
    """A run after `train_run`: its folder, its record, and whether it was skipped as already finished."""

    run_dir: Path
    record: RunRecord
    skipped: bool = False

    @property
    def status(self) -> str:
        return self.record.status

    @property
    def test_error(self) -> float | None:
        """Per-digit test error at the best-validation epoch (so far), a fraction."""
        return self.record.test_error

    @property
    def test_sequence_error(self) -> float | None:
        return self.record.test_sequence_error

    @property
    def best_epoch(self) -> int | None:
        return self.record.best_epoch

    @property
    def history(self) -> list[dict]:
        return self.record.history

    def __repr__(self) -> str:
        r = self.record
        error = f"{100 * r.test_error:.2f}%" if r.test_error is not None else "-"
        return (f"RunResult({r.row}, profile={r.profile}, seed={r.seed}, status={r.status}, "
                f"test_error={error}, best_epoch={r.best_epoch}, epochs={r.epochs_run}, skipped={self.skipped})")


def git_info() -> dict:
    """{commit, dirty} of the checkout the package runs from ({None, None} outside git); dirty: uncommitted
    changes to tracked files outside results/ and book/."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        # outputs (results/, the executed book/) change while runs train; only code counts as dirty
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--",
                                 ".", ":!results", ":!book"], capture_output=True, text=True, check=True,
                                timeout=10).stdout
        return {"commit": commit, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _record(config: RunConfig, state: FitResult, device: torch.device, git: dict, *, status: str | None = None,
            stop_reason: str | None = None, error: str | None = None, attention: bool = False) -> RunRecord:
    history = state.history
    best = state.best_epoch if 0 <= state.best_epoch < len(history) else None
    return RunRecord(
        row=config.row, profile=config.profile, seed=config.seed, status=status or state.status,
        config=config.to_dict(), git=git, device=device_name(device), torch_version=torch.__version__,
        python_version=sys.version.split()[0], backends=backend_settings(), started_at=state.started_at,
        updated_at=utc_now(), wall_time_s=state.elapsed_s, epochs_run=len(history), best_epoch=best,
        stop_reason=stop_reason if status else state.stop_reason,
        final=final_metrics(history, best) if best is not None else None, history=history,
        sessions=state.sessions, attention_file=ATTENTION_NAME if attention else None, error=error)


def train_run(
    config: RunConfig,
    *,
    results_dir: str | Path = "results",
    checkpoint_root: str | Path | None = None,
    device: str | torch.device | None = None,
    resume: bool = False,
    force: bool = False,
    deadline: float | None = None,
    checkpoint_every: int = 1,
    progress: str | bool | None = "auto",
    data: Mapping[str, SplitLike] | None = None,
    build_model: Callable[[Any], nn.Module] | None = None,
    lanes: int = 1,
) -> RunResult:
    """Train one (row, profile, seed) and keep results/<profile>/<row>/seed<k>/ up to date.

    A run finished with the same config (`is_finished`) is kept and returned (`skipped=True`) unless
    `force`. A run in progress continues with `resume` from its local checkpoint or its resume pack,
    whichever got further (`rstn.checkpoints.resume_point`); without either it starts over, saying so.
    Without `resume` (and without `force`) RunInProgressError says what to do. A record made with another
    config is never replaced without `force`: ConfigChangedError names what differs.

    Args:
        config: the resolved run (`rstn.experiments.run_config`).
        checkpoint_root: folder of the checkpoints (default `checkpoint_dir()`).
        deadline: a time.monotonic() value; the run stops cleanly at an epoch boundary before it and is
            left "running" (see `rstn.train.fit`).
        checkpoint_every: epochs between checkpoints and packs (and always at the end or the deadline).
        data: the three splits, if already loaded; by default `rstn.data.load_sequences(config.data,
            config.data_seed)`.
        build_model: ModelConfig -> nn.Module; by default `rstn.models.build_model`.
        lanes: how many runs this machine trains side by side (`rstn train --cpu-queue --lanes`), recorded
            with the session: its epoch times were measured sharing the cores.

    Raises:
        RunBusyError: another process is training the run (`rstn.runlock`); nothing is touched.
        NonFiniteLossError: after writing run.json with status "diverged".
        RunInProgressError: the run is in progress and neither `resume` nor `force` was given.
        ConfigChangedError: the record was made with another config and `force` was not given.
        ResultsError: the existing run.json is corrupt and `force` was not given.
    """
    files = _RunFiles(run_dir(results_dir, config.profile, config.row, config.seed),
                      checkpoint_path(config, checkpoint_root))
    name = f"{config.profile}/{config.row}/seed{config.seed}"
    with run_lock(files.checkpoint.with_name(LOCK_NAME), name):
        return _train_locked(config, files, name, device=device, resume=resume, force=force, deadline=deadline,
                             checkpoint_every=checkpoint_every, progress=progress, data=data,
                             build_model=build_model, lanes=lanes)


def _train_locked(config: RunConfig, files: _RunFiles, name: str, *, device, resume: bool, force: bool,
                  deadline: float | None, checkpoint_every: int, progress, data, build_model, lanes: int
                  ) -> RunResult:
    """`train_run`'s work, once this process holds the run's lock."""
    say = ProgressLog(progress_mode(progress), None)
    old = _record_to_continue(config, files, name, resume=resume, force=force, say=say)
    if old is not None and old.finished:
        return RunResult(files.folder, old, skipped=True)
    start = _start_point(config, files, old, name, say) if resume and old is not None and \
        old.status == "running" else None

    device = resolve_device(device)
    if data is None:
        from rstn.data import load_sequences

        data = load_sequences(config.data, seed=config.data_seed)
    if build_model is None:
        from rstn.models import build_model
    torch.manual_seed(config.seed)  # model initialisation
    model = build_model(config.model)
    # the splits now (a lazy mapping loads here): a missing MNIST fails before any folder is made
    data = {split: data[split] for split in ("train", "valid", "test")}
    files.folder.mkdir(parents=True, exist_ok=True)
    if start is None:  # the checkpoint too: a run that diverges before its first one must not read another's
        files.clear()
    git = git_info()
    state = _fit_recorded(config, model, data, files, start, device, git, name, deadline=deadline,
                          checkpoint_every=checkpoint_every, progress=progress, lanes=lanes)
    return _finish(config, state, model, data["test"], files, device, git, name, say)


@dataclass(frozen=True)
class _RunFiles:
    """The files of one run: its results folder (record, log, attention, weights, pack) and its checkpoint."""

    folder: Path
    checkpoint: Path

    @property
    def record(self) -> Path:
        return self.folder / RUN_FILE

    @property
    def pack(self) -> Path:
        return self.folder / PACK_NAME

    @property
    def attention(self) -> Path:
        return self.folder / ATTENTION_NAME

    def clear(self) -> None:
        """Delete what an earlier start of the run left: it starts over."""
        for stale in (self.record, self.attention, self.folder / LOG_NAME, self.folder / WEIGHTS_NAME, self.pack,
                      self.checkpoint):
            stale.unlink(missing_ok=True)


def _record_to_continue(config: RunConfig, files: _RunFiles, name: str, *, resume: bool, force: bool,
                        say: Callable[[str], None]) -> RunRecord | None:
    """The run's record if it is kept: finished (to skip) or one to resume; None: the run starts anew.

    Raises ConfigChangedError (another config's record), RunInProgressError (in progress, neither resume nor
    force) and ResultsError (a corrupt record, without force)."""
    if not files.record.exists():
        return None
    if force:
        say(f"{name}: force: trained anew, its results replaced")
        return None
    old = read_run(files.record)  # a corrupt file raises ResultsError, which names --force
    changes = config_differences(old.config, config.to_dict())
    if changes:
        raise ConfigChangedError(
            f"{name}: its record ({old.status}, {counted(old.epochs_run, 'epoch')}, {files.record}) was made "
            f"with another config ({describe_differences(changes)}); it is kept: --force retrains the run "
            "and replaces it")
    if old.finished:
        say(f"skip {name}: finished with the same config (test error {100 * old.test_error:.2f}% at epoch "
            f"{old.best_epoch}, {files.record}); force=True / --force retrains it")
    elif old.status == "running" and not resume:
        raise RunInProgressError(
            f"{name} is in progress ({old.epochs_run} epochs, {files.record}): --resume continues it, "
            "--force starts it over")
    elif old.status == "diverged":
        say(f"rerun {name}: it diverged before ({old.error})")
    return old


def _start_point(config: RunConfig, files: _RunFiles, old: RunRecord, name: str,
                 say: Callable[[str], None]) -> ResumePoint | None:
    """Where a run in progress goes on from: its checkpoint or its pack, whichever got further; None: over."""
    wanted = config.to_dict()
    start = resume_point(files.checkpoint, files.pack, lambda c: same_config(c, wanted),
                         lambda line: say(f"{name}: {line}"))
    if start is None:
        say(f"{name}: neither a checkpoint at {files.checkpoint} nor a resume pack at {files.pack} (another "
            f"machine?): starting over; {old.epochs_run} epochs are lost")
    else:
        say(f"{name}: resuming from {start.describe()}")
    return start


def _fit_recorded(config: RunConfig, model: nn.Module, data: Mapping[str, SplitLike], files: _RunFiles,
                  start: ResumePoint | None, device: torch.device, git: dict, name: str, *, deadline: float | None,
                  checkpoint_every: int, progress: str | bool | None, lanes: int = 1) -> FitResult:
    """`fit` with run.json rewritten after every epoch and the pack at every checkpoint; a divergence is
    recorded (status "diverged", the epochs as last saved) and re-raised."""
    def write_progress(state: FitResult) -> None:
        # attention.npz, if any, is the one saved when the run last paused
        write_run(files.record, _record(config, state, device, git, attention=files.attention.exists()))

    try:
        return fit(model, data, config.train, seed=config.seed, dropout=config.model.dropout, device=device,
                   run_dir=files.folder, checkpoint_path=files.checkpoint, checkpoint_every=checkpoint_every,
                   resume_from=start, deadline=deadline, progress=progress, label=name,
                   checkpoint_extra={"config": config.to_dict()},
                   session={**git, "device": device_name(device), "processor": processor_name(),
                            "cpu": processor_id(), "lanes": lanes},
                   on_epoch_end=write_progress, on_checkpoint=lambda ckpt: write_pack(files.pack, ckpt))
    except NonFiniteLossError as err:
        ckpt = latest_state(files.checkpoint, files.pack)  # the epochs before the divergence, as last saved
        state = FitResult(ckpt["history"], ckpt["best_epoch"], None, "diverged", None, ckpt["elapsed_s"],
                          ckpt["sessions"], ckpt["started_at"]) if ckpt else \
            FitResult([], -1, None, "diverged", None, 0.0, [], utc_now())
        write_run(files.record, _record(config, state, device, git, status="diverged",
                                        stop_reason="non_finite_loss", error=str(err)))
        files.pack.unlink(missing_ok=True)  # a diverged run is not resumed
        raise


def _finish(config: RunConfig, state: FitResult, model: nn.Module, test: SplitLike, files: _RunFiles,
            device: torch.device, git: dict, name: str, say: Callable[[str], None]) -> RunResult:
    """After `fit` returns: the best weights' attention, the record, and the weights (finished) or the
    pack (paused) beside it; says what happened."""
    t0 = time.perf_counter()
    has_attention = state.best_state is not None
    if has_attention:
        model.load_state_dict(state.best_state)
        tmp = files.folder / f".{ATTENTION_NAME}.tmp.npz"  # then renamed: a kill never leaves half a file
        np.savez_compressed(tmp, **attention_arrays(model, test, config.train.n_attention, device))
        os.replace(tmp, files.attention)
    state.elapsed_s += time.perf_counter() - t0
    record = _record(config, state, device, git, attention=has_attention)
    if record.finished and state.best_state is not None:
        save_best_weights(files.folder / WEIGHTS_NAME, state.best_state, record)
    write_run(files.record, record)
    error = f"test error {100 * record.test_error:.2f}% at best epoch {record.best_epoch}" \
        if record.test_error is not None else "no epoch finished"
    if record.finished:
        files.pack.unlink(missing_ok=True)  # only runs in progress have a pack
        say(f"done {name}: {error} ({record.epochs_run} epochs, {record.stop_reason}, "
            f"{format_duration(record.wall_time_s)}) -> {files.folder}")
    else:
        size = describe_pack_size(files.pack) if files.pack.exists() else "none written"
        say(f"paused {name} (time budget): {error}, {counted(record.epochs_run, 'epoch')} so far, "
            f"{format_duration(record.wall_time_s)}; --resume continues it from {files.checkpoint} or its resume "
            f"pack {files.pack} ({size})")
    return RunResult(files.folder, record)


def carry_run(config: RunConfig, results_dir: str | Path = "results", checkpoint_root: str | Path | None = None
              ) -> str:
    """From a run's local checkpoint, write what carries it past this machine: the resume pack of a run in
    progress, the best weights of a finished one (for runs trained by code older than packs and weights).
    Returns what it did, in one line. Raises FileNotFoundError or ConfigChangedError."""
    from rstn.checkpoints import load_checkpoint

    folder = run_dir(results_dir, config.profile, config.row, config.seed)
    name = f"{config.profile}/{config.row}/seed{config.seed}"
    ckpt_path = checkpoint_path(config, checkpoint_root)
    if not (folder / RUN_FILE).exists():
        raise FileNotFoundError(f"{name}: no {RUN_FILE} in {folder}")
    if not ckpt_path.exists():
        raise FileNotFoundError(f"{name}: no local checkpoint at {ckpt_path}: nothing to carry from here")
    record, state = read_run(folder / RUN_FILE), load_checkpoint(ckpt_path)
    changes = config_differences(state.get("extra", {}).get("config", {}), record.config)
    if changes:
        raise ConfigChangedError(f"{name}: the checkpoint {ckpt_path} is of another config than its record "
                                 f"({describe_differences(changes)}): not carried")
    if record.finished:
        if state["best_state"] is None:
            return f"{name}: finished, but its checkpoint holds no best weights"
        size = save_best_weights(folder / WEIGHTS_NAME, state["best_state"], record)
        return f"{name}: finished: wrote {folder / WEIGHTS_NAME} ({size / 1e6:.1f} MB)"
    if record.status != "running":
        return f"{name}: {record.status}: nothing to carry"
    pack = folder / PACK_NAME
    write_pack(pack, state)
    note = "" if state["epoch"] + 1 == record.epochs_run else \
        f" (its record has {record.epochs_run}: a resume from it retrains the rest)"
    return (f"{name}: in progress: wrote {pack} ({describe_pack_size(pack)}) from the checkpoint after "
            f"epoch {state['epoch']}{note}")
