"""No code change invalidates a result: fields an old record lacks read as the code then ran; speed-only
fields are not compared; a real difference is named with both values."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from rstn.configs import added, comparable_values, differences, filled, neutral
from rstn.experiments import config_differences, describe_differences, run_config, same_config
from rstn.results import load_table
from rstn.runs import ConfigChangedError, train_run

ROOT = Path(__file__).resolve().parents[1]
FINISHED_PAPER_ROWS = ("rnn-spn-d3", "rnn-spn-d4", "ffn-spn-d4")  # committed, finished with early stopping


@dataclass(frozen=True)
class Knobs:
    lr: float = 0.5
    learn_h0: bool = added(True, absent=False)
    fast: bool = neutral(True)


def test_an_absent_field_reads_as_its_declared_past_and_neutral_fields_are_dropped():
    assert comparable_values(Knobs, {"lr": 0.5}) == {"lr": 0.5, "learn_h0": False}
    assert comparable_values(Knobs, {"lr": 0.5, "learn_h0": True, "fast": False}) == {"lr": 0.5, "learn_h0": True}
    assert differences(Knobs, {}, {"lr": 0.5, "learn_h0": False, "fast": False}) == []  # absent lr: its default
    assert differences(Knobs, {"lr": 0.5}, {"lr": 0.5, "learn_h0": True}) == [("learn_h0", False, True)]
    assert differences(Knobs, {"lr": 0.5, "gone": 1}, {"lr": 0.5}) == [("gone", 1, None)]  # a field removed


def test_a_record_is_read_back_with_its_absent_fields_as_they_ran():
    assert filled(Knobs, {"lr": 0.1}) == Knobs(lr=0.1, learn_h0=False, fast=True)
    from rstn.models import ModelConfig

    assert filled(ModelConfig, {"kind": "rnn_spn", "d": 3}).gru_learn_init is False  # before the learned h0


def test_a_record_from_before_the_learned_h0_is_another_config():
    today = run_config("rnn-spn-d4", "paper").to_dict()
    old = json.loads(json.dumps(today))
    del old["model"]["gru_learn_init"], old["train"]["dropout_ramp"]
    assert config_differences(old, today) == [("model.gru_learn_init", False, True),
                                              ("train.dropout_ramp", "always", "model")]


def test_neutral_and_behaviour_preserving_absent_fields_keep_a_config_the_same():
    today = run_config("rnn-spn-d4", "paper")
    old = today.to_dict()
    del old["train"]["softmax_tol"], old["model"]["localisation_dropout"], old["data_seed"]
    old["train"]["channels_last"] = False  # speed only
    assert same_config(old, today.to_dict())
    lr = run_config("rnn-spn-d4", "paper", lr=1e-3).to_dict()
    assert describe_differences(config_differences(today.to_dict(), lr)) == "train.lr 0.0005 -> 0.001"


@pytest.fixture()
def old_looking_results(tmp_path):
    """The committed finished paper rows, their records stripped of two fields that have defaults (what a
    record looks like once such a field is added to the code)."""
    for row in FINISHED_PAPER_ROWS:
        source = ROOT / "results" / "paper" / row / "seed0"
        target = tmp_path / "paper" / row / "seed0"
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("resume.pt"))
        record = json.loads((target / "run.json").read_text())
        if record["status"] != "finished":
            pytest.skip(f"{row} seed 0 is not finished in results/")
        del record["config"]["train"]["softmax_tol"], record["config"]["model"]["localisation_dropout"]
        (target / "run.json").write_text(json.dumps(record, indent=1))
    return tmp_path


def test_old_looking_records_stay_finished_in_the_table_and_are_skipped(old_looking_results, capsys):
    table = load_table("paper", old_looking_results)
    for row in FINISHED_PAPER_ROWS:
        entry = next(e for e in table if e.row == row)
        assert entry.other_config == () and entry.n_seeds == 1
        before = (old_looking_results / "paper" / row / "seed0" / "run.json").read_bytes()
        result = train_run(run_config(row, "paper"), results_dir=old_looking_results, progress="text", data=None)
        assert result.skipped and result.status == "finished"
        assert f"skip paper/{row}/seed0: finished with the same config" in capsys.readouterr().out
        assert (old_looking_results / "paper" / row / "seed0" / "run.json").read_bytes() == before


def test_a_real_difference_is_reported_and_the_record_left_untouched(old_looking_results):
    folder = old_looking_results / "paper" / "rnn-spn-d3" / "seed0"
    before = {f.name: f.read_bytes() for f in folder.iterdir()}
    with pytest.raises(ConfigChangedError, match=r"train.lr 0.0005 -> 0.001\); it is kept: --force"):
        train_run(run_config("rnn-spn-d3", "paper", lr=1e-3), results_dir=old_looking_results, progress="none",
                  data=None)
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == before
