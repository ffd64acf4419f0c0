"""Table 1: the rows, the run profiles, the results schema and the table of ours vs the paper.

Rows (`ROWS`): the nine models of the paper's Table 1 with its per-digit test errors (%), e.g.
`rnn-spn-d2` (RNN-SPN, d = 2, 1.5 %). Profiles (`PROFILES`) set the data sizes and the trainer:

    smoke  seconds on a CPU, for tests: 200 / 100 / 100 sequences, 2 epochs
    quick  all nine rows on a 2-core CPU in about 20-25 minutes: 5,000/500/500 sequences, 5 epochs; its
           numbers are far from the paper's and are labelled "quick" everywhere
    paper  the authors' protocol on the full data (60k / 10k / 10k, up to 300 epochs): a GPU
    auto   paper where the run's device is CUDA, else quick

Results layout, one directory per run: results/<profile>/<row>/seed<k>/
    run.json       the record below, written when the run ends (finished or diverged)
    attention.npz  for the first `n_attention` test images at the best-validation epoch: indices (n,),
                   theta (n, T, 2, 3) float32 (T = 3 RNN-SPN, 1 FFN-SPN, 0 conv net), probabilities
                   (n, 3, 10) float32, predictions (n, 3), labels (n, 3), boxes (n, 3, 4) float32
    train.log      one line per epoch
    checkpoint.pt  model, optimiser, history, best state, RNG states after the last epoch (not committed:
                   git-ignored as results/**/checkpoint*.pt)

run.json (schema_version 1), every key required unless marked optional:
    schema_version  int, 1
    row, profile    str: a key of ROWS; the concrete profile (smoke | quick | paper)
    seed            int: the training seed (initialisation, shuffles, dropout); data use config.data_seed
    status          "finished" | "diverged" (non-finite loss)
    error           str, only when diverged
    config          the resolved RunConfig: {row, profile, seed, data_seed, model: ModelConfig fields,
                    data: SequenceConfig fields, train: TrainConfig fields}
    git             {commit: str | null, dirty: bool | null}
    device          str, e.g. "NVIDIA H100 80GB HBM3" or "cpu (2 cores, 2 threads)"
    torch_version, python_version   str
    backends        {TF32 / fp32-precision settings, cudnn_benchmark, num_threads, ...}
    started_at, finished_at         ISO 8601 UTC
    wall_time_s     float: training time summed over sessions (a resumed run counts each once)
    sessions        int, optional: 1 + number of resumes
    epochs_run      int: len(history)
    best_epoch      int (0-based) | null
    stop_reason     "early_stopping" | "max_epochs" | "non_finite_loss"
    final           metrics at best_epoch {epoch, train_loss, valid_error, valid_sequence_error,
                    test_error, test_sequence_error}; null if diverged before any epoch finished
    history         one record per epoch: {epoch, lr, dropout, train_loss, train_error, grad_norm,
                    valid_error, valid_sequence_error, test_error, test_sequence_error, time_s}
    attention_file  str, optional: "attention.npz"
All errors are fractions in [0, 1]; the table shows %. `read_run` checks all of this and names the file
and every problem it finds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rstn.data import SequenceConfig
from rstn.models import ModelConfig
from rstn.train import TrainConfig

SCHEMA_VERSION = 1
RUN_FILE = "run.json"


# ---- the Table 1 registry -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One row of Table 1: a model and the paper's per-digit test error (%)."""

    name: str
    kind: str  # ModelConfig.kind: "rnn_spn" | "ffn_spn" | "conv_net"
    d: int | None  # the down-sampling factor; None for the conv net
    paper_error: float

    @property
    def model_name(self) -> str:
        return {"rnn_spn": "RNN-SPN", "ffn_spn": "FFN-SPN", "conv_net": "CNN"}[self.kind]

    def model_config(self, **overrides: Any) -> ModelConfig:
        fields = {"kind": self.kind} | ({"d": self.d} if self.d is not None else {})
        return ModelConfig(**(fields | overrides))


# paper: Table 1 of Sønderby et al. (2015), per-digit test error (%).
ROWS: dict[str, Row] = {row.name: row for row in [
    Row("rnn-spn-d1", "rnn_spn", 1, 1.8),
    Row("rnn-spn-d2", "rnn_spn", 2, 1.5),
    Row("rnn-spn-d3", "rnn_spn", 3, 1.8),
    Row("rnn-spn-d4", "rnn_spn", 4, 2.3),
    Row("ffn-spn-d1", "ffn_spn", 1, 4.4),
    Row("ffn-spn-d2", "ffn_spn", 2, 2.0),
    Row("ffn-spn-d3", "ffn_spn", 3, 2.9),
    Row("ffn-spn-d4", "ffn_spn", 4, 5.3),
    Row("conv-net", "conv_net", None, 2.9),  # no script published: trained with the FFN-SPN protocol
]}


@dataclass(frozen=True)
class Profile:
    """A named set of data sizes and trainer settings; `train` replaces the trainer's defaults."""

    name: str
    description: str
    n_train: int
    n_valid: int
    n_test: int
    train: TrainConfig


PROFILES: dict[str, Profile] = {p.name: p for p in [
    Profile("smoke", "smoke test: 200/100/100 sequences, 2 epochs; the numbers mean nothing",
            200, 100, 100, TrainConfig(max_epochs=2, eval_batch_size=100, n_attention=8)),
    # deviation: quick shrinks the data (5,000/500/500) and stops after 5 epochs (250 steps), so that all nine
    # rows take ~20-25 min on 2 CPU cores (measured per row: benchmarks/README.md); otherwise the authors'
    # protocol (the lr decay and early stopping are never reached). The models are far from converged.
    Profile("quick", "quick CPU profile: 5,000/500/500 sequences, 5 epochs; far from converged, "
            "not comparable with the paper", 5000, 500, 500, TrainConfig(max_epochs=5)),
    Profile("paper", "the authors' protocol: 60,000/10,000/10,000 sequences, up to 300 epochs",
            60_000, 10_000, 10_000, TrainConfig()),
]}
PROFILE_CHOICES = (*PROFILES, "auto")


class RegistryError(ValueError):
    """An unknown row, profile or TrainConfig field, or an invalid TrainConfig value."""


def get_row(name: str) -> Row:
    if name not in ROWS:
        raise RegistryError(f"unknown row {name!r}; valid rows: {', '.join(ROWS)}")
    return ROWS[name]


def resolve_profile(name: str, device: str | torch.device | None = None) -> Profile:
    """The Profile called `name`; 'auto' is 'paper' when the run's device is CUDA, else 'quick'.

    device: the device the run will use (None: CUDA if available).
    """
    if name == "auto":
        cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
        name = "paper" if cuda else "quick"
    if name not in PROFILES:
        raise RegistryError(f"unknown profile {name!r}; valid profiles: {', '.join(PROFILE_CHOICES)}")
    return PROFILES[name]


# ---- the resolved configuration of one run --------------------------------------------------------------


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's result; saved in run.json and compared for skip/resume."""

    row: str
    profile: str
    seed: int
    model: ModelConfig
    data: SequenceConfig
    train: TrainConfig
    data_seed: int = 0  # one fixed data set for every seed and row, as in the paper

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists, as they come back from run.json)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


def run_config(row: str, profile: str = "auto", seed: int = 0, *, device: str | torch.device | None = None,
               **train_overrides: Any) -> RunConfig:
    """The resolved config of (row, profile, seed); `train_overrides` replace TrainConfig fields."""
    row_ = get_row(row)
    prof = resolve_profile(profile, device)
    valid = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(train_overrides) - valid)
    if unknown:
        raise RegistryError(f"unknown TrainConfig field(s) {unknown}; valid: {', '.join(sorted(valid))}")
    try:
        train = dataclasses.replace(prof.train, **train_overrides)
    except (TypeError, ValueError) as err:
        raise RegistryError(f"invalid TrainConfig override {train_overrides}: {err}") from err
    data = SequenceConfig(n_train=prof.n_train, n_valid=prof.n_valid, n_test=prof.n_test)
    return RunConfig(row=row_.name, profile=prof.name, seed=int(seed), model=row_.model_config(), data=data,
                     train=train)


def run_dir(results_dir: str | Path, profile: str, row: str, seed: int) -> Path:
    return Path(results_dir) / profile / row / f"seed{seed}"


# ---- run.json: writing, reading, validating -------------------------------------------------------------


class ResultsError(ValueError):
    """A results file is missing, unreadable or does not follow the schema."""


HISTORY_FIELDS = ("epoch", "lr", "dropout", "train_loss", "train_error", "grad_norm", "valid_error",
                  "valid_sequence_error", "test_error", "test_sequence_error", "time_s")
ERROR_FIELDS = ("valid_error", "valid_sequence_error", "test_error", "test_sequence_error")
FINAL_FIELDS = ("epoch", "train_loss", *ERROR_FIELDS)
_NUMBER = (int, float)
_TOP_FIELDS: dict[str, tuple[type, ...]] = {
    "schema_version": (int,), "row": (str,), "profile": (str,), "seed": (int,), "status": (str,),
    "config": (dict,), "git": (dict,), "device": (str,), "torch_version": (str,), "python_version": (str,),
    "backends": (dict,), "started_at": (str,), "finished_at": (str,), "wall_time_s": _NUMBER,
    "epochs_run": (int,), "best_epoch": (int, type(None)), "stop_reason": (str,), "history": (list,),
    "final": (dict, type(None)),
}
STATUSES = ("finished", "diverged")
STOP_REASONS = ("early_stopping", "max_epochs", "non_finite_loss")


def final_metrics(history: list[dict], best_epoch: int) -> dict:
    """The metrics of the best-validation epoch: what a run reports."""
    best = next(r for r in history if r["epoch"] == best_epoch)
    return {k: best[k] for k in FINAL_FIELDS}


def _is_number(x: Any) -> bool:
    return isinstance(x, _NUMBER) and not isinstance(x, bool)


def validate_run_record(record: Any) -> list[str]:
    """Every way `record` departs from the run.json schema (module docstring); [] when it follows it."""
    if not isinstance(record, dict):
        return [f"the top level is a {type(record).__name__}, not an object"]
    problems = []
    for key, types in _TOP_FIELDS.items():
        if key not in record:
            problems.append(f"missing key {key!r}")
        elif not isinstance(record[key], types) or (int in types and isinstance(record[key], bool)):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            problems.append(f"{key!r} is {record[key]!r}, expected {names}")
    if problems:
        return problems
    if record["schema_version"] != SCHEMA_VERSION:
        problems.append(f"schema_version {record['schema_version']} is not {SCHEMA_VERSION} (rerun with --force)")
    if record["row"] not in ROWS:
        problems.append(f"row {record['row']!r} is not one of {', '.join(ROWS)}")
    if record["profile"] not in PROFILES:
        problems.append(f"profile {record['profile']!r} is not one of {', '.join(PROFILES)}")
    if record["status"] not in STATUSES:
        problems.append(f"status {record['status']!r} is not one of {', '.join(STATUSES)}")
    if record["stop_reason"] not in STOP_REASONS:
        problems.append(f"stop_reason {record['stop_reason']!r} is not one of {', '.join(STOP_REASONS)}")
    if record["status"] == "diverged" and not isinstance(record.get("error"), str):
        problems.append("a diverged run needs an 'error' message")
    config = record["config"]
    for key in ("model", "data", "train"):
        if not isinstance(config.get(key), dict):
            problems.append(f"config.{key} is missing or not an object")
    for key in ("row", "profile", "seed"):
        if config.get(key) != record[key]:
            problems.append(f"config.{key} = {config.get(key)!r} but {key} = {record[key]!r}")
    history = record["history"]
    for i, entry in enumerate(history):
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
    if record["epochs_run"] != len(history):
        problems.append(f"epochs_run is {record['epochs_run']} but history has {len(history)} epochs")
    final, best = record["final"], record["best_epoch"]
    if record["status"] == "finished":
        if final is None or best is None:
            problems.append("a finished run needs 'final' metrics and a 'best_epoch'")
        elif not 0 <= best < len(history):
            problems.append(f"best_epoch {best} is outside the {len(history)} epochs run")
    if isinstance(final, dict):
        for k in FINAL_FIELDS:
            if not _is_number(final.get(k)) or (k in ERROR_FIELDS and not 0 <= final[k] <= 1):
                problems.append(f"final.{k} is {final.get(k)!r}, expected a number" +
                                (" in [0, 1]" if k in ERROR_FIELDS else ""))
    return problems


def _check(record: Any, source: str | Path) -> dict:
    problems = validate_run_record(record)
    if problems:
        raise ResultsError(f"{source} is not a valid run record: " + "; ".join(problems))
    return record


def read_run(path: str | Path) -> dict:
    """Read and validate a run.json; raises ResultsError naming the file and what is wrong."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ResultsError(f"{path} is not readable JSON ({err})") from err
    return _check(record, path)


def write_run(path: str | Path, record: dict) -> None:
    """Validate and write a run.json atomically (temporary file, then rename)."""
    path = Path(path)
    record = {"schema_version": SCHEMA_VERSION} | record
    text = json.dumps(_check(json.loads(json.dumps(record)), path), indent=1, allow_nan=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


def load_runs(profile: str, results_dir: str | Path = "results", rows: Iterable[str] | None = None) -> list[dict]:
    """Every run.json under results/<profile>/ (validated), sorted by row order then seed.

    Raises:
        ResultsError: a file is malformed, or its row/profile/seed disagree with its directory.
    """
    resolve_profile(profile)
    wanted = [get_row(r).name for r in rows] if rows is not None else list(ROWS)
    runs = []
    for row in wanted:
        for path in sorted((Path(results_dir) / profile / row).glob(f"seed*/{RUN_FILE}")):
            record = read_run(path)
            expected = (profile, row, path.parent.name)
            found = (record["profile"], record["row"], f"seed{record['seed']}")
            if found != expected:
                raise ResultsError(f"{path} holds profile/row/seed {found}, but its directory says {expected}")
            runs.append(record)
    return sorted(runs, key=lambda r: (wanted.index(r["row"]), r["seed"]))


# ---- the table ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableRecord:
    """One Table 1 row: the paper's number and ours over the finished seeds (errors in %)."""

    row: str
    model: str
    d: int | None
    paper_error: float
    profile: str
    seeds: tuple[int, ...]
    test_errors: tuple[float, ...]  # per-digit test error at the best-validation epoch, %, per seed
    sequence_errors: tuple[float, ...]  # whole-sequence test error, %, per seed
    best_epochs: tuple[int, ...]
    devices: tuple[str, ...]
    n_diverged: int

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.test_errors) if self.test_errors else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation over seeds (None for fewer than two)."""
        return statistics.stdev(self.test_errors) if len(self.test_errors) > 1 else None

    @property
    def sequence_mean(self) -> float | None:
        return statistics.fmean(self.sequence_errors) if self.sequence_errors else None


def default_table_profile(results_dir: str | Path = "results") -> str:
    """The most complete profile with any results: paper, then quick, then smoke (paper if none)."""
    for name in ("paper", "quick", "smoke"):
        if any((Path(results_dir) / name).glob(f"*/seed*/{RUN_FILE}")):
            return name
    return "paper"


def load_table(profile: str | None = None, results_dir: str | Path = "results") -> list[TableRecord]:
    """Ours vs the paper for the nine rows under `profile` (None: `default_table_profile`)."""
    profile = profile or default_table_profile(results_dir)
    if profile == "auto":
        profile = resolve_profile(profile).name
    runs = load_runs(profile, results_dir)
    table = []
    for row in ROWS.values():
        mine = [r for r in runs if r["row"] == row.name]
        done = [r for r in mine if r["status"] == "finished"]
        table.append(TableRecord(
            row=row.name, model=row.model_name, d=row.d, paper_error=row.paper_error, profile=profile,
            seeds=tuple(r["seed"] for r in done),
            test_errors=tuple(100 * r["final"]["test_error"] for r in done),
            sequence_errors=tuple(100 * r["final"]["test_sequence_error"] for r in done),
            best_epochs=tuple(r["best_epoch"] for r in done),
            devices=tuple(sorted({r["device"] for r in done})), n_diverged=len(mine) - len(done)))
    return table


def format_table(table: list[TableRecord]) -> str:
    """Plain-text Table 1: per-digit test error (%), ours as mean ± sample std over seeds."""
    if not table:
        return "(no rows)"
    profile = table[0].profile
    lines = [f"Table 1, per-digit test error (%) at the best-validation epoch; profile {profile!r}: "
             f"{PROFILES[profile].description}",
             f"{'row':<12} {'model':<8} {'d':>2} {'paper':>6}  {'ours':<15} {'n':>2}  {'seq. err':>8}  device"]
    for r in table:
        if r.mean is None:
            ours, seq = "-", "-"
        else:
            ours = f"{r.mean:.2f}" + (f" ± {r.std:.2f}" if r.std is not None else "")
            seq = f"{r.sequence_mean:.2f}"
        extra = f"  ({r.n_diverged} diverged)" if r.n_diverged else ""
        lines.append(f"{r.row:<12} {r.model:<8} {r.d if r.d is not None else '-':>2} {r.paper_error:>6.1f}  "
                     f"{ours:<15} {r.n_seeds:>2}  {seq:>8}  {', '.join(r.devices) or '-'}{extra}")
    return "\n".join(lines)


def print_table(profile: str | None = None, results_dir: str | Path = "results") -> list[TableRecord]:
    """`rstn table`: print `format_table(load_table(...))` and return the records."""
    table = load_table(profile, results_dir)
    print(format_table(table))
    return table


def train_all(rows: Iterable[str] | None = None, profile: str = "auto", seeds: Iterable[int] = (0,), *,
              results_dir: str | Path = "results", device: str | None = None, resume: bool = False,
              force: bool = False, progress: str | bool | None = "auto", **train_overrides: Any) -> list:
    """`rstn train`: train rows x seeds in order; a diverged run is reported and the others go on.

    Returns:
        [RunResult | NonFiniteLossError] in the order run.
    """
    from rstn.train import NonFiniteLossError, train_run

    names = [get_row(r).name for r in rows] if rows is not None else list(ROWS)
    configs = [run_config(r, profile, s, device=device, **train_overrides) for r in names for s in seeds]
    data_cache: dict[str, Mapping] = {}
    outcomes = []
    for config in configs:
        key = json.dumps([dataclasses.asdict(config.data), config.data_seed])
        try:
            outcomes.append(train_run(config, results_dir=results_dir, device=device, resume=resume, force=force,
                                      progress=progress, data=_LazyData(config, data_cache, key)))
        except NonFiniteLossError as err:
            print(f"diverged: {err}")
            outcomes.append(err)
    return outcomes


class _LazyData(Mapping):
    """The splits of a config, loaded on first access and shared by the runs of one train_all call."""

    def __init__(self, config: RunConfig, cache: dict, key: str):
        self.config, self.cache, self.key = config, cache, key

    def _splits(self) -> Mapping:
        if self.key not in self.cache:
            from rstn.data import load_sequences

            self.cache.clear()  # keep one data set in memory at a time
            self.cache[self.key] = load_sequences(self.config.data, seed=self.config.data_seed)
        return self.cache[self.key]

    def __getitem__(self, name: str):
        return self._splits()[name]

    def __iter__(self):
        return iter(self._splits())

    def __len__(self) -> int:
        return len(self._splits())
