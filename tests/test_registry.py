"""The registry: a row is one line, variants sit beside their base rows, --set reaches every config."""

from __future__ import annotations

import pytest

from rstn import experiments, sweep
from rstn.cli import _parse_sections, main
from rstn.experiments import ABLATIONS, REGISTRY, ROWS, RegistryError, Row, run_config
from rstn.results import VARIANT_COLUMNS, variant_rows
from rstn.runs import train_run
from rstn.train import ATTENTION_NAME
from test_runs import TINY, synthetic_data


def test_a_row_registered_in_one_line_trains_and_shows_beside_its_base_row(tmp_path, monkeypatch):
    row = Row("rnn-spn-d4-dropout", "rnn_spn", 4, None, group="ablation", model=(("dropout", 0.25),),
              compare_with="rnn-spn-d4", note="dropout 0.25")
    monkeypatch.setitem(ABLATIONS, row.name, row)
    monkeypatch.setitem(REGISTRY, row.name, row)
    config = run_config(row.name, "smoke", 0, **TINY)
    assert config.model.dropout == 0.25 and config.model.d == 4 and config.row == row.name
    result = train_run(config, results_dir=tmp_path, progress="none", data=synthetic_data())
    assert result.status == "finished" and (result.run_dir / ATTENTION_NAME).exists()
    shown = {r[0]: r for r in variant_rows("smoke", tmp_path)}[row.name]
    assert dict(zip(VARIANT_COLUMNS, shown))["status"] == "finished" and shown[2] == "rnn-spn-d4"
    assert sweep.cost(row.name) == ROWS["rnn-spn-d4"].gflop  # a variant costs what its base row does
    assert [c.row for c in sweep.plan([row.name], "smoke", [0], 1).configs] == [row.name]
    assert row.name not in ROWS  # Table 1 (`--all`, replicate, the table) stays the nine rows


def test_the_registered_ablations_change_one_thing_of_their_base_row():
    for name, row in ABLATIONS.items():
        mine, base = run_config(name, "paper"), run_config(row.compare_with, "paper")
        changed = experiments.config_differences(base.to_dict(), mine.to_dict())
        assert changed and all(field in ("row",) or field.split(".", 1)[1] in dict(row.model) | dict(row.data)
                               | dict(row.train) for field, _, _ in changed), (name, changed)
    assert run_config("rnn-spn-d3-papertext", "paper").data.slope_range == (-28, 28)


def test_set_reaches_the_model_and_the_data_and_names_a_bad_field(capsys):
    assert _parse_sections(["model.dropout=0.25", "data.x_placement=random", "lr=1e-3", "train.bf16=true"]) == {
        "model": {"dropout": 0.25}, "data": {"x_placement": "random"}, "train": {"lr": 1e-3, "bf16": True}}
    config = run_config("rnn-spn-d4", "smoke", model={"dropout": 0.25}, data={"slope_range": [-28, 28]})
    assert config.model.dropout == 0.25 and config.data.slope_range == (-28, 28)
    with pytest.raises(RegistryError, match=r"unknown SequenceConfig field\(s\) \['nope'\]; valid: canvas_size, .* \(--set data.NAME\)"):
        run_config("rnn-spn-d4", "smoke", data={"nope": 1})
    assert main(["train", "--row", "rnn-spn-d4", "--profile", "smoke", "--set", "data.nope=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown SequenceConfig field(s) ['nope']" in err and len(err.splitlines()) == 1
