"""A run's record (run.json): its one typed home, reading, writing and validating it, and the runs of a profile.

Results layout, one folder per run: results/<profile>/<row>/seed<k>/
    run.json       the `RunRecord` below, rewritten after every epoch while the run trains
    attention.npz  the first test images' theta and predictions at the best epoch (`rstn.attention`)
    train.log      one line per epoch
The checkpoint lives outside the work tree (`rstn.runs.checkpoint_path`); it is never committed.

All errors are fractions in [0, 1]. `RunRecord.from_json` checks every field against the dataclass's own
annotations plus the rules in `RunRecord.problems`, and names the file and every problem it finds.

Which profile to show (`display_profile`): the one named, or for `best` (`rstn.experiments.BEST`) the first
of paper, quick, smoke that has results (`best_profile`), paper where none has. Table 1 from the records is
`rstn.table`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rstn.experiments import BEST, DISPLAY_RANK, PROFILES, REGISTRY, ROWS, get_row, resolve_profile

SCHEMA_VERSION = 2
RUN_FILE = "run.json"
STATUSES = ("running", "finished", "diverged")
# running: None between epochs (or killed there), "time_budget" when stopped by a deadline to resume later.
STOP_REASONS = {"running": (None, "time_budget"), "finished": ("early_stopping", "max_epochs"),
                "diverged": ("non_finite_loss",)}
HISTORY_FIELDS = ("epoch", "lr", "dropout", "train_loss", "train_error", "grad_norm", "valid_error",
                  "valid_sequence_error", "test_error", "test_sequence_error", "time_s")
ERROR_FIELDS = ("valid_error", "valid_sequence_error", "test_error", "test_sequence_error")
FINAL_FIELDS = ("epoch", "train_loss", *ERROR_FIELDS)
TIMING_FIELDS = ("time_s",)  # measurements of time, not results: excluded when runs are compared


class ResultsError(ValueError):
    """A results file is missing, unreadable or does not follow the schema."""


@dataclass
class RunRecord:
    """One (row, profile, seed) run: what run.json holds (schema_version 2).

    status "running" (in progress: resumable from its checkpoint), "finished" or "diverged";
    `final` is the best-validation epoch's metrics so far (None before a first epoch); `sessions` has
    one entry per process that trained the run ({commit, dirty, device, processor, started_at, ended_at,
    first_epoch, epochs}; older records lack processor), so a run resumed across commits or machines says so.
    """

    row: str  # a key of rstn.experiments.REGISTRY
    profile: str  # the concrete profile: smoke | quick | paper
    seed: int  # the training seed (initialisation, shuffles, dropout); the data use config["data_seed"]
    status: str
    config: dict  # the resolved RunConfig as a dict (RunConfig.to_dict())
    git: dict  # {commit: str | None, dirty: bool | None} of the last session
    device: str  # e.g. "NVIDIA H100 80GB HBM3" or "cpu (2 cores, 2 threads)"
    torch_version: str
    python_version: str
    backends: dict  # rstn.backends.backend_settings() of the last session
    started_at: str  # ISO 8601 UTC
    updated_at: str  # ISO 8601 UTC: when this record was written
    wall_time_s: float  # training time summed over sessions
    epochs_run: int  # len(history)
    best_epoch: int | None  # 0-based; None before a first epoch
    stop_reason: str | None  # see STOP_REASONS
    final: dict | None  # {epoch, train_loss, valid_error, valid_sequence_error, test_error, test_sequence_error}
    history: list = field(repr=False)  # one dict per epoch with HISTORY_FIELDS
    sessions: list = field(default_factory=list)
    attention_file: str | None = None  # "attention.npz" when written
    error: str | None = None  # the message of a diverged run
    schema_version: int = SCHEMA_VERSION

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def test_error(self) -> float | None:
        """Per-digit test error at the best-validation epoch (so far), a fraction."""
        return self.final["test_error"] if self.final else None

    @property
    def test_sequence_error(self) -> float | None:
        return self.final["test_sequence_error"] if self.final else None

    def problems(self) -> list[str]:
        """Every way this record departs from the schema; [] when it follows it."""
        problems = [f"{f.name!r} is {getattr(self, f.name)!r}, expected {_type_name(hint)}"
                    for f, hint in zip(dataclasses.fields(self), _HINTS.values(), strict=True)
                    if not _conforms(getattr(self, f.name), hint)]
        if problems:
            return problems
        if self.schema_version != SCHEMA_VERSION:
            problems.append(f"schema_version {self.schema_version} is not {SCHEMA_VERSION} (rerun with --force)")
        if self.row not in REGISTRY:
            problems.append(f"row {self.row!r} is not one of {', '.join(REGISTRY)}")
        if self.profile not in PROFILES:
            problems.append(f"profile {self.profile!r} is not one of {', '.join(PROFILES)}")
        if self.status not in STATUSES:
            problems.append(f"status {self.status!r} is not one of {', '.join(STATUSES)}")
        elif self.stop_reason not in STOP_REASONS[self.status]:
            problems.append(f"stop_reason {self.stop_reason!r} does not fit status {self.status!r} "
                            f"(expected one of {STOP_REASONS[self.status]})")
        if self.status == "diverged" and not self.error:
            problems.append("a diverged run needs an 'error' message")
        for key in ("model", "data", "train"):
            if not isinstance(self.config.get(key), dict):
                problems.append(f"config.{key} is missing or not an object")
        for key in ("row", "profile", "seed"):
            if self.config.get(key) != getattr(self, key):
                problems.append(f"config.{key} = {self.config.get(key)!r} but {key} = {getattr(self, key)!r}")
        for i, entry in enumerate(self.history):
            if not isinstance(entry, dict):
                problems.append(f"history[{i}] is not an object")
                continue
            missing = [k for k in HISTORY_FIELDS if k not in entry]
            if missing:
                problems.append(f"history[{i}] lacks {missing}")
            elif entry["epoch"] != i:
                problems.append(f"history[{i}] has epoch {entry['epoch']}, expected {i}")
            bad = [k for k in ERROR_FIELDS if k in entry and not (_is_number(entry[k]) and 0 <= entry[k] <= 1)]
            if bad:
                problems.append(f"history[{i}]: {', '.join(f'{k}={entry[k]!r}' for k in bad)} not in [0, 1]")
        if self.epochs_run != len(self.history):
            problems.append(f"epochs_run is {self.epochs_run} but history has {len(self.history)} epochs")
        if self.status == "finished" and (self.final is None or self.best_epoch is None):
            problems.append("a finished run needs 'final' metrics and a 'best_epoch'")
        if self.best_epoch is not None and not 0 <= self.best_epoch < len(self.history):
            problems.append(f"best_epoch {self.best_epoch} is outside the {len(self.history)} epochs run")
        if self.final is not None:
            for k in FINAL_FIELDS:
                if not _is_number(self.final.get(k)) or (k in ERROR_FIELDS and not 0 <= self.final[k] <= 1):
                    problems.append(f"final.{k} is {self.final.get(k)!r}, expected a number" +
                                    (" in [0, 1]" if k in ERROR_FIELDS else ""))
        return problems

    def to_json(self) -> str:
        """The validated JSON text of run.json (no NaN: the schema has none)."""
        problems = self.problems()
        if problems:
            raise ResultsError(f"refusing to write an invalid run record: {'; '.join(problems)}")
        return json.dumps(dataclasses.asdict(self), indent=1, allow_nan=False)

    @classmethod
    def from_json(cls, data: str | Mapping, source: str | Path = "run record") -> RunRecord:
        """Parse and validate; raises ResultsError naming `source` and every problem."""
        try:
            raw = json.loads(data) if isinstance(data, str) else dict(data)
        except json.JSONDecodeError as err:
            raise ResultsError(f"{source} is not readable JSON ({err}): restore it from git, or retrain the "
                               "row with --force") from None
        if not isinstance(raw, dict):
            raise ResultsError(f"{source} is not a valid run record: the top level is a {type(raw).__name__}, not an "
                               "object (restore the file from git, or retrain the row with --force)")
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        problems = [f"missing key {k!r}" for k in sorted(required - set(raw))]
        problems += [f"unknown key {k!r}" for k in sorted(set(raw) - names)]
        if not problems:
            record = cls(**raw)
            problems = record.problems()
        if problems:
            hint = " (an older schema: rerun the row with --force)" if raw.get("schema_version") != SCHEMA_VERSION \
                else " (rerun the row with --force, or restore the file from git)"
            raise ResultsError(f"{source} is not a valid run record: {'; '.join(problems)}{hint}")
        return record


_HINTS = typing.get_type_hints(RunRecord)


def _conforms(value: Any, hint: Any) -> bool:
    """isinstance against an annotation: unions, generics by their origin, bool is not a number."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, arg) for arg in typing.get_args(hint))
    if origin is not None:
        return isinstance(value, origin)
    if hint is type(None):
        return value is None
    if hint is float:
        return _is_number(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return " or ".join("null" if a is type(None) else getattr(a, "__name__", str(a)) for a in args)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def final_metrics(history: list[dict], best_epoch: int) -> dict:
    """The metrics of the best-validation epoch: what a run reports."""
    best = next(r for r in history if r["epoch"] == best_epoch)
    return {k: best[k] for k in FINAL_FIELDS}


def without_timing(history: Iterable[Mapping]) -> list[dict]:
    """History records with the timing fields removed: what must match between two runs of one seed."""
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in history]


def read_run(path: str | Path) -> RunRecord:
    """Read and validate a run.json; raises ResultsError naming the file and what is wrong."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ResultsError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ResultsError(f"{path} is not readable ({err})") from err
    return RunRecord.from_json(text, path)


def write_run(path: str | Path, record: RunRecord) -> None:
    """Validate and write a run.json atomically (temporary file, then rename)."""
    path = Path(path)
    text = record.to_json()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


def history_excerpt(record: RunRecord, head: int = 3, tail: int = 3) -> str:
    """The first `head` and last `tail` epochs of a run as its training log prints them
    (`rstn.train.epoch_line`), formatted from its record, with the count of the epochs left out between."""
    from rstn.train import epoch_line

    lines, best, best_error = [], -1, None
    for r in record.history:  # the best epoch so far: the first with the lowest validation error
        if best_error is None or r["valid_error"] < best_error:
            best, best_error = r["epoch"], r["valid_error"]
        lines.append(epoch_line(r, best))
    if len(lines) <= head + tail:
        return "\n".join(lines)
    return "\n".join([*lines[:head], f"[... {len(lines) - head - tail} epochs ...]", *lines[-tail:]])


def load_runs(profile: str, results_dir: str | Path = "results", rows: Iterable[str] | None = None
              ) -> list[RunRecord]:
    """Every run.json under results/<profile>/ (validated), sorted by row order then seed.

    Raises:
        ResultsError: a file is malformed, or its row/profile/seed disagree with its folder.
    """
    resolve_profile(profile)
    wanted = [get_row(r).name for r in rows] if rows is not None else list(ROWS)
    runs = []
    for row in wanted:
        for path in sorted((Path(results_dir) / profile / row).glob(f"seed*/{RUN_FILE}")):
            record = read_run(path)
            expected = (profile, row, path.parent.name)
            found = (record.profile, record.row, f"seed{record.seed}")
            if found != expected:
                raise ResultsError(f"{path} holds profile/row/seed {found}, but its folder says {expected}")
            runs.append(record)
    return sorted(runs, key=lambda r: (wanted.index(r.row), r.seed))


def best_profile(results_dir: str | Path = "results", has: Callable[[Path], bool] | None = None) -> str | None:
    """The first profile of `DISPLAY_RANK` (paper, quick, smoke) whose folder under `results_dir` `has`
    what is wanted (default: any run.json); None if none has."""
    has = has or (lambda folder: any(folder.glob(f"*/seed*/{RUN_FILE}")))
    return next((name for name in DISPLAY_RANK if has(Path(results_dir) / name)), None)


def display_profile(profile: str | None = BEST, results_dir: str | Path = "results",
                    has: Callable[[Path], bool] | None = None) -> str:
    """The profile to show: `profile` itself, or for `BEST` (or None) the best profile whose folder `has`
    what is wanted (`best_profile`; default: any run.json), paper when none has.

    The one rule behind `rstn table`, `rstn chapters`, the book and the attention loader. It never
    resolves 'auto', which names the profile to train (`rstn.experiments.resolve_profile`).
    """
    if profile and profile != BEST:
        return profile
    return best_profile(results_dir, has) or "paper"
