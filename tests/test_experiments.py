"""The Table 1 registry, profiles, the results schema, skip/force, the table, and the CLI end to end."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rstn import experiments
from rstn.experiments import (
    PROFILES,
    ROWS,
    RegistryError,
    ResultsError,
    format_table,
    load_runs,
    load_table,
    read_run,
    resolve_profile,
    run_config,
    write_run,
)
from rstn.train import ATTENTION_NAME, NonFiniteLossError, train_run

torch.set_num_threads(1)


def test_registry_holds_the_nine_rows_with_the_papers_numbers():
    assert {name: row.paper_error for name, row in ROWS.items()} == {
        "rnn-spn-d1": 1.8, "rnn-spn-d2": 1.5, "rnn-spn-d3": 1.8, "rnn-spn-d4": 2.3,
        "ffn-spn-d1": 4.4, "ffn-spn-d2": 2.0, "ffn-spn-d3": 2.9, "ffn-spn-d4": 5.3, "conv-net": 2.9}
    assert ROWS["rnn-spn-d3"].model_config().kind == "rnn_spn" and ROWS["rnn-spn-d3"].model_config().d == 3
    assert ROWS["ffn-spn-d2"].model_config().glimpse_size == 50
    assert ROWS["conv-net"].model_config().kind == "conv_net"


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(RegistryError, match="unknown row 'rnn-spn-d5'; valid rows: rnn-spn-d1, .*conv-net"):
        run_config("rnn-spn-d5", "smoke")
    with pytest.raises(RegistryError, match="unknown profile 'fast'; valid profiles: smoke, quick, paper, auto"):
        run_config("conv-net", "fast")
    with pytest.raises(RegistryError, match=r"unknown TrainConfig field\(s\) \['epochs'\]; valid: .*max_epochs"):
        run_config("conv-net", "smoke", epochs=3)


def test_profiles():
    assert resolve_profile("auto", "cuda").name == "paper"
    assert resolve_profile("auto", "cpu").name == "quick"
    paper = run_config("rnn-spn-d2", "paper", seed=3)
    assert (paper.data.n_train, paper.data.n_valid, paper.data.n_test) == (60_000, 10_000, 10_000)
    assert paper.train.max_epochs == 300 and paper.train.lr == 5e-4 and paper.seed == 3
    smoke = run_config("rnn-spn-d2", "smoke", max_epochs=1)
    assert smoke.data.n_train == PROFILES["smoke"].n_train and smoke.train.max_epochs == 1
    assert json.loads(json.dumps(smoke.to_dict())) == smoke.to_dict()


# ---- a real (tiny) run through train_run -----------------------------------------------------------------


def synthetic_data(n: int = 20, seed: int = 0) -> dict[str, SimpleNamespace]:
    rng = np.random.default_rng(seed)
    return {name: SimpleNamespace(images=rng.random((n, 100, 100), dtype=np.float32),
                                  labels=rng.integers(0, 10, (n, 3)),
                                  boxes=rng.random((n, 3, 4), dtype=np.float32) * 72)
            for name in ("train", "valid", "test")}


TINY = dict(batch_size=10, eval_batch_size=20, n_attention=4, max_epochs=1)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    config = run_config("rnn-spn-d4", "smoke", seed=0, **TINY)
    result = train_run(config, results_dir=results, progress="none", data=synthetic_data())
    return results, config, result


def test_train_run_writes_a_valid_record_and_attention(finished_run):
    results, config, result = finished_run
    run_dir = results / "smoke" / "rnn-spn-d4" / "seed0"
    assert result.run_dir == run_dir and not result.skipped
    record = read_run(run_dir / "run.json")
    assert record["status"] == "finished" and record["config"] == config.to_dict()
    assert record["epochs_run"] == 1 and record["best_epoch"] == 0
    assert record["final"]["test_error"] == record["history"][0]["test_error"] == result.test_error
    assert record["git"].keys() == {"commit", "dirty"} and record["torch_version"] == torch.__version__
    with np.load(run_dir / ATTENTION_NAME) as f:
        assert f["theta"].shape == (4, 3, 2, 3) and f["predictions"].shape == (4, 3)
        assert f["probabilities"].shape == (4, 3, 10) and f["boxes"].shape == (4, 3, 4)
        assert np.array_equal(f["labels"], synthetic_data()["test"].labels[:4])


def test_finished_run_with_the_same_config_is_skipped(finished_run, capsys):
    results, config, first = finished_run
    again = train_run(config, results_dir=results, progress="text", data=None)  # data would be needed to train
    assert again.skipped and again.record == first.record
    assert "skip smoke/rnn-spn-d4/seed0: finished with the same config" in capsys.readouterr().out


def test_changed_config_or_force_reruns(tmp_path, capsys):
    data = synthetic_data()
    config = run_config("ffn-spn-d4", "smoke", seed=1, **TINY)
    train_run(config, results_dir=tmp_path, progress="none", data=data)
    changed = run_config("ffn-spn-d4", "smoke", seed=1, **(TINY | {"lr": 1e-3}))
    rerun = train_run(changed, results_dir=tmp_path, progress="text", data=data)
    assert not rerun.skipped and rerun.record["config"]["train"]["lr"] == 1e-3
    assert "rerun smoke/ffn-spn-d4/seed1: config changed (train.lr)" in capsys.readouterr().out
    forced = train_run(changed, results_dir=tmp_path, progress="none", data=data, force=True)
    assert not forced.skipped


def test_diverged_run_is_recorded_and_not_skipped(tmp_path):
    data = synthetic_data()
    data["train"].images[3, 50, 50] = np.nan  # injected: the first epoch's loss is NaN
    config = run_config("ffn-spn-d4", "smoke", seed=0, **TINY)
    with pytest.raises(NonFiniteLossError, match="nan in epoch 0; no checkpoint was written"):
        train_run(config, results_dir=tmp_path, progress="none", data=data)
    record = read_run(tmp_path / "smoke" / "ffn-spn-d4" / "seed0" / "run.json")
    assert record["status"] == "diverged" and record["final"] is None and "nan" in record["error"]
    result = train_run(config, results_dir=tmp_path, progress="none", data=synthetic_data())
    assert not result.skipped and result.record["status"] == "finished"


def test_attention_arrays_of_the_conv_net_have_no_theta():
    from rstn.models import conv_net
    from rstn.train import attention_arrays

    split = synthetic_data(n=3)["test"]
    arrays = attention_arrays(conv_net(), split, n=8, device=torch.device("cpu"))
    assert arrays["theta"].shape == (3, 0, 2, 3) and arrays["predictions"].shape == (3, 3)
    assert np.array_equal(arrays["indices"], [0, 1, 2])


# ---- schema validation ----------------------------------------------------------------------------------


def _mutations():
    def drop(key):
        return lambda r: r.pop(key)

    def setter(path, value):
        def f(r):
            target = r
            for k in path[:-1]:
                target = target[k]
            target[path[-1]] = value
        return f

    return [
        (drop("final"), "missing key 'final'"),
        (setter(("seed",), "0"), "'seed' is '0', expected int"),
        (setter(("status",), "done"), "status 'done' is not one of finished, diverged"),
        (setter(("row",), "rnn-spn-d9"), "row 'rnn-spn-d9' is not one of rnn-spn-d1"),
        (setter(("final", "test_error"), 1.7), "final.test_error is 1.7, expected a number in [0, 1]"),
        (setter(("epochs_run",), 5), "epochs_run is 5 but history has 1 epochs"),
        (setter(("history", 0, "epoch"), 3), "history[0] has epoch 3, expected 0"),
        (lambda r: r["history"][0].pop("valid_error"), "history[0] lacks ['valid_error']"),
        (setter(("config", "seed"), 7), "config.seed = 7 but seed = 0"),
        (setter(("best_epoch",), 4), "best_epoch 4 is outside the 1 epochs run"),
        (setter(("schema_version",), 0), "schema_version 0 is not 1"),
    ]


@pytest.mark.parametrize("mutate, message", _mutations())
def test_malformed_record_names_the_file_and_the_problem(finished_run, tmp_path, mutate, message):
    record = copy.deepcopy(finished_run[2].record)
    mutate(record)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(record))
    with pytest.raises(ResultsError) as err:
        read_run(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_unreadable_and_misplaced_records(finished_run, tmp_path):
    bad = tmp_path / "smoke" / "conv-net" / "seed0" / "run.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    with pytest.raises(ResultsError, match=f"{bad} is not readable JSON"):
        load_runs("smoke", tmp_path)
    write_run(bad, copy.deepcopy(finished_run[2].record))  # an rnn-spn-d4 record in the conv-net directory
    with pytest.raises(ResultsError, match="holds profile/row/seed .*rnn-spn-d4.* but its directory says"):
        load_runs("smoke", tmp_path)
    with pytest.raises(ResultsError, match="is not a valid run record: missing key 'history'"):
        write_run(tmp_path / "x.json", {k: v for k, v in finished_run[2].record.items() if k != "history"})


# ---- the table ------------------------------------------------------------------------------------------


def test_table_mean_and_std_over_seeds(finished_run, tmp_path):
    base = finished_run[2].record
    for seed, error in ((0, 0.02), (1, 0.04), (2, 0.03)):
        record = copy.deepcopy(base)
        record["seed"] = record["config"]["seed"] = seed
        record["final"]["test_error"] = error
        write_run(tmp_path / "smoke" / "rnn-spn-d4" / f"seed{seed}" / "run.json", record)
    table = {r.row: r for r in load_table("smoke", tmp_path)}
    mine = table["rnn-spn-d4"]
    assert mine.seeds == (0, 1, 2) and mine.mean == pytest.approx(3.0) and mine.std == pytest.approx(1.0)
    assert table["rnn-spn-d1"].n_seeds == 0 and table["rnn-spn-d1"].mean is None
    text = format_table(list(table.values()))
    assert "profile 'smoke'" in text and "3.00 ± 1.00" in text
    line = next(s for s in text.splitlines() if s.startswith("rnn-spn-d4"))
    assert " 2.3 " in line and " 3 " in line and base["device"] in line
    assert experiments.default_table_profile(tmp_path) == "smoke"


# ---- the command line, end to end on real data ----------------------------------------------------------


def test_cli_smoke_run_end_to_end(mnist_file, tmp_path, capsys):
    from rstn.cli import main

    argv = ["train", "--row", "rnn-spn-d4", "--profile", "smoke", "--seed", "0", "--results-dir", str(tmp_path),
            "--progress", "text"]
    assert main(argv) == 0
    run_dir = tmp_path / "smoke" / "rnn-spn-d4" / "seed0"
    record = read_run(run_dir / "run.json")
    assert record["status"] == "finished" and record["epochs_run"] == PROFILES["smoke"].train.max_epochs
    assert record["config"]["data"]["n_train"] == PROFILES["smoke"].n_train
    assert (run_dir / "checkpoint.pt").exists() and (run_dir / ATTENTION_NAME).exists()
    out = capsys.readouterr().out
    assert out.count("smoke/rnn-spn-d4/seed0 epoch") == 2 and "done smoke/rnn-spn-d4/seed0" in out

    assert main(argv) == 0
    assert "skip smoke/rnn-spn-d4/seed0" in capsys.readouterr().out

    assert main(["table", "--profile", "smoke", "--results-dir", str(tmp_path)]) == 0
    line = next(s for s in capsys.readouterr().out.splitlines() if s.startswith("rnn-spn-d4"))
    assert f"{100 * record['final']['test_error']:.2f}" in line and " 2.3 " in line

    assert main(["train", "--row", "rnn-spn-d9", "--profile", "smoke", "--results-dir", str(tmp_path)]) == 2
    assert "valid rows: rnn-spn-d1" in capsys.readouterr().err
