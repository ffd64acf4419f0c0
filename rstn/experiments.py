"""Table 1: the rows, the run profiles and the resolved configuration of one run (the registry).

Rows (`ROWS`): the nine models of the paper's Table 1 with its per-digit test errors (%), e.g.
`rnn-spn-d2` (RNN-SPN, d = 2, 1.5 %). Variants (`ABLATIONS`), e.g. `rnn-spn-d4-bf16`, change one thing of
a Table 1 row and are measured against it; `REGISTRY` holds both. Profiles (`PROFILES`) set the data
sizes and the trainer:

    smoke  seconds on a CPU, for tests: 200 / 100 / 100 sequences, 2 epochs
    quick  all nine rows on a 2-core CPU in about 20-25 minutes: 5,000/500/500 sequences, 5 epochs; its
           numbers are far from the paper's and are labelled "quick" everywhere
    paper  the authors' protocol on the full data (60k / 10k / 10k, up to 300 epochs): minutes per epoch
           on a 2-core CPU for the cheap rows (`CPU_QUEUE`), a GPU for the whole table
    auto   paper where the run's device is CUDA, else quick (the profile to train)
    best   the best profile that has results: paper, then quick, then smoke (the profile to show, `BEST`)

The CPU queue (`CPU_QUEUE`) is the order in which a 2-core machine trains the paper profile's runs
(`rstn.queue` plans it for the machine it is on). A run on disk (results folder, run.json, resume) is
`rstn.runs`; its record is `rstn.records`, and Table 1 from the records `rstn.table`.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rstn.configs import differences, neutral_fields
from rstn.generator import SequenceConfig
from rstn.models import ModelConfig
from rstn.train import TrainConfig


@dataclass(frozen=True)
class Row:
    """One model to train: a row of Table 1 (group "table1"), or a variant measured against one.

    model, data, train: the config fields this row sets, over the profile's and under the command line's;
    compare_with: the row it is measured against (variants only).
    """

    name: str
    kind: str  # ModelConfig.kind: "rnn_spn" | "ffn_spn" | "conv_net"
    d: int | None  # the down-sampling factor; None for the conv net
    paper_error: float | None  # Table 1's per-digit test error (%); None for a variant the paper did not run
    group: str = "table1"  # "table1" | "ablation" | "extension"
    model: tuple[tuple[str, Any], ...] = ()  # ModelConfig fields this row sets, e.g. (("sampler", "lasagne2015"),)
    data: tuple[tuple[str, Any], ...] = ()  # SequenceConfig fields
    train: tuple[tuple[str, Any], ...] = ()  # TrainConfig fields
    compare_with: str | None = None
    note: str = ""  # what a variant tests, in a few words
    # training cost per example, forward + backward, in GFLOP (benchmarks/README.md): balances the sweep's
    # lanes and turns epoch times into TFLOP/s; None: that of the row it is compared with
    gflop: float | None = None

    @property
    def model_name(self) -> str:
        return {"rnn_spn": "RNN-SPN", "ffn_spn": "FFN-SPN", "conv_net": "CNN"}[self.kind]

    def model_config(self, **overrides: Any) -> ModelConfig:
        fields = {"kind": self.kind} | ({"d": self.d} if self.d is not None else {})
        return ModelConfig(**(fields | overrides))


# paper: Table 1 of Sønderby et al. (2015), per-digit test error (%).
ROWS: dict[str, Row] = {row.name: row for row in [
    Row("rnn-spn-d1", "rnn_spn", 1, 1.8, gflop=0.616),
    Row("rnn-spn-d2", "rnn_spn", 2, 1.5, gflop=0.149),
    Row("rnn-spn-d3", "rnn_spn", 3, 1.8, gflop=0.064),
    Row("rnn-spn-d4", "rnn_spn", 4, 2.3, gflop=0.042),
    Row("ffn-spn-d1", "ffn_spn", 1, 4.4, gflop=1.486),
    Row("ffn-spn-d2", "ffn_spn", 2, 2.0, gflop=0.328),
    Row("ffn-spn-d3", "ffn_spn", 3, 2.9, gflop=0.117),
    Row("ffn-spn-d4", "ffn_spn", 4, 5.3, gflop=0.062),
    Row("conv-net", "conv_net", None, 2.9, gflop=1.454),  # no script published: trained with the FFN-SPN protocol
]}
# Variants of a Table 1 row, each measured against it: ablations (one thing of the paper or the code
# changed) and extensions (the paper's future work); trained when named (`rstn train --row NAME`) or by the
# CPU queue, never by `--all` or `rstn replicate`, which mean Table 1.
ABLATIONS: dict[str, Row] = {row.name: row for row in [
    # deviation: bf16 autocast instead of float32 (a GPU window trains in bf16): does it move the result?
    Row("rnn-spn-d4-bf16", "rnn_spn", 4, None, group="ablation", train=(("bf16", True),),
        compare_with="rnn-spn-d4", note="bf16 autocast instead of float32"),
    Row("rnn-spn-d3-lasagne2015", "rnn_spn", 3, None, group="ablation", model=(("sampler", "lasagne2015"),),
        compare_with="rnn-spn-d3", note="the sampler the authors ran (Lasagne's before 2015-09-29)"),
    # its test set is drawn by the other generator too: the comparison is across data sets
    Row("rnn-spn-d3-papertext", "rnn_spn", 3, None, group="ablation",
        data=(("x_placement", "random"), ("slope_range", (-28, 28))), compare_with="rnn-spn-d3",
        note="the generator as the paper's text describes it: random x, slopes up to 45°"),
    Row("rnn-spn-d3-fixed-h0", "rnn_spn", 3, None, group="ablation", model=(("gru_learn_init", False),),
        compare_with="rnn-spn-d3", note="the GRU starts from a fixed zero state, not a learned one"),
    # the paper's future work (Sect. 6), in our design (rstn.models.ModelConfig): extensions, not the paper's
    Row("rnn-spn-d3-glimpses2", "rnn_spn", 3, None, group="extension", model=(("glimpses_per_digit", 2),),
        compare_with="rnn-spn-d3", note="two glimpses per digit, their features pooled before the softmax"),
    Row("rnn-spn-d3-feedback", "rnn_spn", 3, None, group="extension", model=(("glimpse_feedback", True),),
        compare_with="rnn-spn-d3", note="each glimpse's features fed back into the GRU's next step"),
]}
REGISTRY: dict[str, Row] = ROWS | ABLATIONS  # every row a run may name


def cost(row: str) -> float:
    """A row's training GFLOP per example (`Row.gflop`); a variant without its own, its base row's."""
    entry = get_row(row)
    return entry.gflop if entry.gflop is not None else cost(entry.compare_with)


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
PROFILE_CHOICES = (*PROFILES, "auto")  # the profiles to train; auto: paper on CUDA, else quick
# The profile to show by default, `best`: the first of DISPLAY_RANK that has results, as the book,
# `rstn table`, `rstn chapters` and the attention loader pick it (`rstn.records.display_profile`, the one
# rule). Not `auto`, which picks the profile to train.
BEST = "best"
DISPLAY_RANK = ("paper", "quick", "smoke")
DISPLAY_CHOICES = (*PROFILES, BEST)  # the profiles to show
# The paper profile's runs on a 2-core CPU, (row, seed), in the order the queue trains them (a run that
# can resume goes first, see rstn.queue): the finished seed-0 rows, the rest of seed 0, the bf16 A/B run,
# the ablations, then more seeds. The d = 1 rows and the conv net need a GPU (measured epoch times: benchmarks/README.md).
CPU_QUEUE: tuple[tuple[str, int], ...] = (
    ("rnn-spn-d4", 0), ("ffn-spn-d4", 0), ("rnn-spn-d3", 0),
    ("ffn-spn-d3", 0), ("rnn-spn-d2", 0), ("rnn-spn-d4-bf16", 0), ("ffn-spn-d2", 0),
    ("rnn-spn-d3-lasagne2015", 0), ("rnn-spn-d3-glimpses2", 0), ("rnn-spn-d3-feedback", 0),
    ("rnn-spn-d3-papertext", 0), ("rnn-spn-d3-fixed-h0", 0),
    *((row, seed) for row in ("rnn-spn-d2", "rnn-spn-d3", "rnn-spn-d4") for seed in (1, 2)),
    *((row, seed) for row in ("ffn-spn-d2", "ffn-spn-d3", "ffn-spn-d4") for seed in (1, 2)),
)


class RegistryError(ValueError):
    """An unknown row, profile or TrainConfig field, or an invalid TrainConfig value."""


def get_row(name: str) -> Row:
    """A row of Table 1 or a variant (`REGISTRY`)."""
    if name not in REGISTRY:
        raise RegistryError(f"unknown row {name!r}; valid rows: {', '.join(REGISTRY)}")
    return REGISTRY[name]


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
               model: Mapping[str, Any] | None = None, data: Mapping[str, Any] | None = None,
               **train_overrides: Any) -> RunConfig:
    """The resolved config of (row, profile, seed): the profile's data sizes and trainer, the row's own
    `model`, `data` and `train` fields, then the caller's: `model` (ModelConfig fields), `data`
    (SequenceConfig fields) and `train_overrides` (TrainConfig fields)."""
    row_ = get_row(row)
    prof = resolve_profile(profile, device)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise RegistryError(f"seed {seed!r}: a training seed is an integer >= 0")
    sizes = SequenceConfig(n_train=prof.n_train, n_valid=prof.n_valid, n_test=prof.n_test)
    base = {"model": row_.model_config(**dict(row_.model)), "data": dataclasses.replace(sizes, **dict(row_.data)),
            "train": dataclasses.replace(prof.train, **dict(row_.train))}
    chosen = {"model": dict(model or {}), "data": dict(data or {}), "train": train_overrides}
    resolved = {section: _override(section, base[section], fields) for section, fields in chosen.items()}
    return RunConfig(row=row_.name, profile=prof.name, seed=int(seed), **resolved)


def _override(section: str, config: Any, fields: Mapping[str, Any]) -> Any:
    """`config` (a config dataclass) with `fields` replaced, each checked against its annotation."""
    cls = type(config)
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(fields) - set(hints))
    if unknown:
        raise RegistryError(f"unknown {cls.__name__} field(s) {unknown}; valid: {', '.join(sorted(hints))} "
                            f"(--set {section}.NAME)")
    for name, value in fields.items():
        if not _fits(value, hints[name]):
            kind = _KINDS.get(hints[name], str(hints[name]))
            raise RegistryError(f"{name}={value!r}: {name} must be {kind} (the default is {getattr(config, name)!r})")
    try:
        return dataclasses.replace(config, **{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    except (TypeError, ValueError) as err:
        raise RegistryError(f"invalid {cls.__name__} override {dict(fields)}: {err}") from None


_KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


SECTIONS = {"model": ModelConfig, "data": SequenceConfig, "train": TrainConfig}  # RunConfig's nested configs
RESULT_NEUTRAL_FIELDS = neutral_fields(TrainConfig)  # speed and rounding only: a run may resume across them


def config_differences(old: Mapping, new: Mapping) -> list[tuple[str, Any, Any]]:
    """(dotted field, old value, new value) for every field in which two RunConfig dicts really differ.

    The one comparison of configs (skip, resume, the sweep, the table's "another config"): a field that
    an old record lacks stands for what the code did before it existed (`rstn.configs.added`), and
    speed-only fields are not compared (`rstn.configs.neutral`).
    """
    def outer(config: Mapping) -> dict:  # row, profile, seed, data_seed
        return {k: v for k, v in config.items() if k not in SECTIONS}

    nested = [differences(cls, old.get(key) or {}, new.get(key) or {}, f"{key}.") for key, cls in SECTIONS.items()]
    return differences(RunConfig, outer(old), outer(new)) + [d for section in nested for d in section]


def same_config(old: Mapping, new: Mapping) -> bool:
    """Do two RunConfig dicts describe the same run (`config_differences` is empty)?"""
    return not config_differences(old, new)


def describe_differences(changes: list[tuple[str, Any, Any]]) -> str:
    """'lr 0.0005 -> 0.001, model.d 2 -> 3' (absent fields as 'absent')."""
    def show(value: Any) -> str:
        return "absent" if value is None else json.dumps(value)

    return ", ".join(f"{name} {show(a)} -> {show(b)}" for name, a, b in changes)


def is_profile_config(config: Mapping) -> bool:
    """Was a run (its run.json config) made with its profile's config as the registry gives it today?
    False for a run with --set overrides, or one made before a change of the protocol's defaults."""
    try:
        today = run_config(config["row"], config["profile"], seed=config["seed"])
    except (KeyError, RegistryError):
        return False
    return same_config(config, today.to_dict())


BF16_FIELD = "train.bf16"  # the one config field whose difference is a named deviation, not another run


def differences_but_bf16(old: Mapping, new: Mapping) -> list[tuple[str, Any, Any]]:
    """`config_differences` of two RunConfig dicts, train.bf16 left out: what makes them two experiments
    rather than one row in two precisions."""
    return [d for d in config_differences(old, new) if d[0] != BF16_FIELD]


def bf16_deviation(config: Mapping) -> bool:
    """Is a record's config (run.json's) its row's profile config as the registry gives it today, in bf16
    autocast: train.bf16 true where the row and profile say false, every other field the same?

    Such a run is that row in bf16 (a GPU window trains the heavy rows so), kept in the row's own folder;
    the table labels it "bf16 (deviation)" rather than "another config". False for a variant whose row
    sets bf16 itself (rnn-spn-d4-bf16: its profile config) and for a config that is not a run's.
    """
    try:
        today = run_config(config["row"], config["profile"], seed=config["seed"]).to_dict()
    except (KeyError, TypeError, RegistryError):
        return False
    return config_differences(today, config) == [(BF16_FIELD, False, True)]


def _fits(value: Any, hint: Any) -> bool:
    """A --set value for a config field: bool for bool, int (not bool) for int, a number for float, a list of
    the items' type for a tuple."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return isinstance(value, (list, tuple)) and all(_fits(v, args[0]) for v in value)
    if origin is not None:  # a union such as int | None: any of its members
        return any(_fits(value, a) if a is not type(None) else value is None for a in typing.get_args(hint))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint)


def run_dir(results_dir: str | Path, profile: str, row: str, seed: int) -> Path:
    return Path(results_dir) / profile / row / f"seed{seed}"
