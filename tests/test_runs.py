"""A Table 1 run on disk: run.json and attention.npz, skip/force, resume, the time budget, the queue, the CLI."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rstn.backends import processor_name
from rstn.experiments import PROFILES, run_config
from rstn.results import read_run, without_timing
from rstn.checkpoints import PACK_NAME
from rstn.runlist import train_all
from rstn.runs import ConfigChangedError, RunInProgressError, checkpoint_path, is_finished, train_run
from rstn.train import ATTENTION_NAME, NonFiniteLossError

torch.set_num_threads(1)


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
    result = train_run(config, results_dir=results, checkpoint_root=tmp_path_factory.mktemp("ckpt"),
                       progress="none", data=synthetic_data())
    return results, config, result


def test_train_run_writes_a_valid_record_and_attention(finished_run):
    results, config, result = finished_run
    run_dir = results / "smoke" / "rnn-spn-d4" / "seed0"
    assert result.run_dir == run_dir and not result.skipped
    record = read_run(run_dir / "run.json")
    assert record.status == "finished" and record.config == config.to_dict()
    assert record.epochs_run == 1 and record.best_epoch == 0 and record.stop_reason == "max_epochs"
    assert record.final["test_error"] == record.history[0]["test_error"] == result.test_error
    assert record.git.keys() == {"commit", "dirty"} and record.torch_version == torch.__version__
    assert len(record.sessions) == 1 and record.sessions[0]["epochs"] == 1
    assert record.sessions[0]["processor"] == processor_name()
    assert not (run_dir / "checkpoint.pt").exists()  # checkpoints live outside the results folder
    with np.load(run_dir / ATTENTION_NAME) as f:
        assert f["theta"].shape == (4, 3, 2, 3) and f["predictions"].shape == (4, 3)
        assert f["probabilities"].shape == (4, 3, 10) and f["boxes"].shape == (4, 3, 4)
        assert np.array_equal(f["labels"], synthetic_data()["test"].labels[:4])


def test_finished_run_with_the_same_config_is_skipped(finished_run, capsys):
    results, config, first = finished_run
    assert is_finished(config, results)
    again = train_run(config, results_dir=results, progress="text", data=None)  # data would be needed to train
    assert again.skipped and again.record == first.record
    assert "skip smoke/rnn-spn-d4/seed0: finished with the same config" in capsys.readouterr().out
    # a result-neutral field (evaluation batch) does not make it unfinished; a protocol field does
    assert is_finished(run_config("rnn-spn-d4", "smoke", seed=0, **(TINY | {"eval_batch_size": 7})), results)
    assert not is_finished(run_config("rnn-spn-d4", "smoke", seed=0, **(TINY | {"lr": 1e-3})), results)


def test_a_changed_config_is_reported_and_its_record_kept_until_force(tmp_path, capsys):
    data = synthetic_data()
    config = run_config("ffn-spn-d4", "smoke", seed=1, **TINY)
    train_run(config, results_dir=tmp_path, progress="none", data=data)
    folder = tmp_path / "smoke" / "ffn-spn-d4" / "seed1"
    before = {f.name: f.read_bytes() for f in folder.iterdir()}
    changed = run_config("ffn-spn-d4", "smoke", seed=1, **(TINY | {"lr": 1e-3}))
    with pytest.raises(ConfigChangedError, match=r"smoke/ffn-spn-d4/seed1: its record \(finished, 1 epoch.*"
                                                 r"another config \(train.lr 0.0005 -> 0.001\); it is kept: --force"):
        train_run(changed, results_dir=tmp_path, progress="text", data=data)
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == before  # untouched
    forced = train_run(changed, results_dir=tmp_path, progress="none", data=data, force=True)
    assert not forced.skipped and forced.record.config["train"]["lr"] == 1e-3


def test_diverged_run_is_recorded_and_not_skipped(tmp_path):
    data = synthetic_data()
    data["train"].images[3, 50, 50] = np.nan  # injected: the first epoch's loss is NaN
    config = run_config("ffn-spn-d4", "smoke", seed=0, **TINY)
    with pytest.raises(NonFiniteLossError, match="nan in epoch 0; no checkpoint was written"):
        train_run(config, results_dir=tmp_path, progress="none", data=data)
    record = read_run(tmp_path / "smoke" / "ffn-spn-d4" / "seed0" / "run.json")
    assert record.status == "diverged" and record.final is None and "nan" in record.error
    result = train_run(config, results_dir=tmp_path, progress="none", data=synthetic_data())
    assert not result.skipped and result.record.status == "finished"


def test_a_forced_rerun_that_diverges_records_none_of_the_old_run(tmp_path):
    """--force starts over: the old run's checkpoint goes with its record, so a divergence in the first
    epoch cannot report the old run's epochs under the new config."""
    config = run_config("ffn-spn-d4", "smoke", seed=0, **(TINY | {"max_epochs": 2}))
    train_run(config, results_dir=tmp_path, progress="none", data=synthetic_data())
    assert checkpoint_path(config).exists()
    broken = synthetic_data()
    broken["train"].images[3, 50, 50] = np.nan
    with pytest.raises(NonFiniteLossError, match="no checkpoint was written"):
        train_run(config, results_dir=tmp_path, progress="none", data=broken, force=True)
    record = read_run(tmp_path / "smoke" / "ffn-spn-d4" / "seed0" / "run.json")
    assert record.status == "diverged" and record.epochs_run == 0 and record.history == []


def test_resume_under_another_config_is_refused_and_force_starts_over_with_fresh_files(tmp_path, capsys):
    data = synthetic_data(n=40)
    config = run_config("rnn-spn-d4", "smoke", seed=3, **(TINY | {"max_epochs": 3}))
    out = tmp_path / "smoke" / "rnn-spn-d4" / "seed3"
    paused = train_run(config, results_dir=tmp_path, progress="none", data=data, deadline=time.monotonic() + 1e-3)
    assert paused.status == "running"
    (out / ATTENTION_NAME).write_bytes(b"the old config's attention")
    changed = run_config("rnn-spn-d4", "smoke", seed=3, **(TINY | {"max_epochs": 3, "lr": 1e-3}))
    with pytest.raises(ConfigChangedError, match="train.lr 0.0005 -> 0.001"):
        train_run(changed, results_dir=tmp_path, progress="text", data=data, resume=True)
    assert (out / ATTENTION_NAME).read_bytes() == b"the old config's attention"
    result = train_run(changed, results_dir=tmp_path, progress="text", data=data, resume=True, force=True)
    assert result.status == "finished" and len(result.record.sessions) == 1
    assert (out / ATTENTION_NAME).read_bytes() != b"the old config's attention"
    assert (out / "train.log").read_text().count("epoch   0 ") == 1


def test_budget_pauses_a_run_that_resumes_exactly(tmp_path, monkeypatch):
    """A deadline stops the run at an epoch boundary (status running); --resume ends where one go ends."""
    import rstn.train

    data = synthetic_data(n=40)
    config = run_config("rnn-spn-d4", "smoke", seed=2, **(TINY | {"max_epochs": 4}))
    straight = train_run(config, results_dir=tmp_path / "a", checkpoint_root=tmp_path / "ckpt-a", progress="none",
                         data=data)

    with monkeypatch.context() as patch:  # after epoch 0, the next epoch is estimated to overrun the budget
        patch.setattr(rstn.train, "_epoch_estimate", lambda history: 1e9)
        paused = train_run(config, results_dir=tmp_path / "b", progress="none", data=data,
                           deadline=time.monotonic() + 3600)
    assert paused.status == "running" and paused.record.stop_reason == "time_budget"
    assert paused.record.epochs_run == 1 and (tmp_path / "b/smoke/rnn-spn-d4/seed2" / ATTENTION_NAME).exists()
    with pytest.raises(RunInProgressError, match="--resume continues it, --force starts it over"):
        train_run(config, results_dir=tmp_path / "b", progress="none", data=data)
    resumed = train_run(config, results_dir=tmp_path / "b", progress="none", data=data, resume=True)
    assert resumed.status == "finished" and len(resumed.record.sessions) == 2
    assert without_timing(resumed.history) == without_timing(straight.history)
    assert resumed.best_epoch == straight.best_epoch
    assert np.array_equal(np.load(tmp_path / "a/smoke/rnn-spn-d4/seed2" / ATTENTION_NAME)["theta"],
                          np.load(tmp_path / "b/smoke/rnn-spn-d4/seed2" / ATTENTION_NAME)["theta"])


def test_running_record_is_written_every_epoch_and_a_lost_checkpoint_starts_over(tmp_path, capsys):
    data = synthetic_data(n=40)
    config = run_config("ffn-spn-d4", "smoke", seed=0, **(TINY | {"max_epochs": 3}))

    class Kill(Exception):
        pass

    import rstn.runs as runs

    original = runs.write_run
    seen = []

    def write_then_kill(path, record):  # a kill right after epoch 1's run.json was written
        original(path, record)
        seen.append(record.status)
        if record.status == "running" and record.epochs_run == 2:
            raise Kill

    runs.write_run = write_then_kill
    try:
        with pytest.raises(Kill):
            train_run(config, results_dir=tmp_path, progress="none", data=data)
    finally:
        runs.write_run = original
    assert seen == ["running", "running"]
    record = read_run(tmp_path / "smoke" / "ffn-spn-d4" / "seed0" / "run.json")
    assert record.status == "running" and record.epochs_run == 2 and record.stop_reason is None
    assert record.final is not None  # the best-so-far metrics
    checkpoint_path(config).unlink()
    (tmp_path / "smoke" / "ffn-spn-d4" / "seed0" / PACK_NAME).unlink()  # the resume pack too
    result = train_run(config, results_dir=tmp_path, progress="text", data=data, resume=True)
    assert "neither a checkpoint" in capsys.readouterr().out
    assert result.status == "finished" and result.record.epochs_run == 3 and len(result.record.sessions) == 1


def test_queue_runs_rows_in_order_and_stops_at_the_budget(tmp_path, monkeypatch):
    import rstn.runlist as runlist

    monkeypatch.setattr(runlist, "_LazyData", lambda config, cache: synthetic_data())
    outcomes = train_all(["ffn-spn-d4", "rnn-spn-d4"], "smoke", results_dir=tmp_path, progress="none",
                         resume=True, **TINY)
    assert [o.record.row for o in outcomes] == ["ffn-spn-d4", "rnn-spn-d4"]
    assert all(o.status == "finished" for o in outcomes)
    again = train_all(["ffn-spn-d4", "rnn-spn-d4"], "smoke", results_dir=tmp_path, progress="none",
                      resume=True, **TINY)
    assert all(o.skipped for o in again)
    spent = train_all(["ffn-spn-d3", "rnn-spn-d3"], "smoke", results_dir=tmp_path, progress="none",
                      resume=True, budget_s=1e-6, **TINY)
    assert len(spent) <= 1 and all(o.status == "running" for o in spent)


def test_cli_smoke_run_end_to_end(mnist_file, tmp_path, capsys):
    from rstn.cli import main

    argv = ["train", "--row", "rnn-spn-d4", "--profile", "smoke", "--seed", "0", "--results-dir", str(tmp_path),
            "--progress", "text"]
    assert main(argv) == 0
    run_dir = tmp_path / "smoke" / "rnn-spn-d4" / "seed0"
    record = read_run(run_dir / "run.json")
    assert record.status == "finished" and record.epochs_run == PROFILES["smoke"].train.max_epochs
    assert record.config["data"]["n_train"] == PROFILES["smoke"].n_train
    assert (run_dir / ATTENTION_NAME).exists()
    assert checkpoint_path(run_config("rnn-spn-d4", "smoke", seed=0)).exists()
    captured = capsys.readouterr()
    assert captured.out.count("smoke/rnn-spn-d4/seed0 epoch") == 2 and "done smoke/rnn-spn-d4/seed0" in captured.out
    assert "eta <=" in captured.out and "1 trained to the end" in captured.err

    assert main(argv) == 0
    assert "skip smoke/rnn-spn-d4/seed0" in capsys.readouterr().out

    assert main(["table", "--profile", "smoke", "--results-dir", str(tmp_path)]) == 0
    line = next(s for s in capsys.readouterr().out.splitlines() if s.startswith("rnn-spn-d4"))
    assert f"{100 * record.test_error:.2f}" in line and " 2.3 " in line


@pytest.mark.parametrize("argv, message", [
    (["train", "--row", "rnn-spn-d9", "--profile", "smoke"], "valid rows: rnn-spn-d1"),
    (["train", "--row", "rnn-spn-d2", "--profile", "smoke", "--set", "lr=-1"], "lr must be >= 0 and finite, got -1"),
    (["train", "--row", "rnn-spn-d2", "--profile", "smoke", "--set", "max_epochs=abc"],
     "max_epochs='abc': max_epochs must be an integer"),
    (["train", "--row", "rnn-spn-d2", "--profile", "smoke", "--budget", "soon"], "cannot read the duration 'soon'"),
    (["table", "--profile", "paper"], "no runs under"),
    (["train", "--row", "rnn-spn-d4", "--profile", "smoke", "--seed", "-1"], "seed -1: a training seed is an integer >= 0"),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    from rstn.cli import main

    assert main([*argv, "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_cli_corrupt_record_names_the_file_and_force(tmp_path, capsys):
    from rstn.cli import main

    bad = tmp_path / "smoke" / "rnn-spn-d2" / "seed0" / "run.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{truncated")
    assert main(["train", "--row", "rnn-spn-d2", "--profile", "smoke", "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert str(bad) in err and "--force" in err and len(err.splitlines()) == 1


def test_cli_truncated_mnist_names_the_file_and_the_fix(tmp_path, capsys, mnist_file, monkeypatch):
    from rstn.cli import main

    broken = tmp_path / "mnist.pkl.gz"
    broken.write_bytes(mnist_file.read_bytes()[:1000])
    monkeypatch.setenv("RSTN_DATA_DIR", str(tmp_path))
    for argv in (["mnist"], ["data", "--n-train", "10", "--n-valid", "10", "--n-test", "10",
                             "--cache-dir", str(tmp_path / "cache"), "--out-png", str(tmp_path / "x.png")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        # the ChecksumError's own text (both sums and the fix) over a few lines, no traceback
        assert str(broken) in err and err.count(": error: ") == 1 and "Traceback" not in err
        assert "fetches it again" in err
    assert not (tmp_path / "x.png").exists()


def test_cli_without_mnist_or_network_ends_in_one_line_and_makes_no_folder(tmp_path, capsys, monkeypatch):
    import rstn.mnist
    from rstn.cli import main

    def offline(out):
        raise OSError("no network")

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no MNIST and no cached sequences
    monkeypatch.delenv("RSTN_DATA_DIR", raising=False)
    monkeypatch.setattr(rstn.mnist, "default_sources", lambda: [rstn.mnist.Source("the mirror", offline)])
    results = tmp_path / "results"
    assert main(["train", "--row", "rnn-spn-d4", "--profile", "smoke", "--results-dir", str(results)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
    assert errors == ["rstn train: error: could not obtain mnist.pkl.gz from any source (the mirror: OSError: no "
                      "network): put the file (SHA-256 " + rstn.mnist.MNIST_SHA256 + ") in a directory and set "
                      "RSTN_DATA_DIR to it"]
    assert not results.exists()


@pytest.mark.parametrize("argv, message", [
    (["--n-train", "0"], "--n-train 0: every split needs at least one sequence"),
    (["--seed", "-1"], "--seed -1: the generator seed is an integer >= 0"),
])
def test_cli_data_refuses_empty_splits_and_negative_seeds(tmp_path, capsys, argv, message):
    from rstn.cli import main

    assert main(["data", *argv, "--out-png", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not (tmp_path / "x.png").exists()


def test_history_excerpt_prints_the_epochs_as_the_training_log_did(tmp_path):
    from rstn.results import history_excerpt

    config = run_config("ffn-spn-d4", "smoke", seed=0, **(TINY | {"max_epochs": 4}))
    result = train_run(config, results_dir=tmp_path, progress="none", data=synthetic_data(n=40))
    logged = [line.split("seed0 ", 1)[1].split("  eta", 1)[0]
              for line in (result.run_dir / "train.log").read_text().splitlines() if " epoch " in line]
    assert history_excerpt(result.record, head=4, tail=0).splitlines() == logged
    assert history_excerpt(result.record, head=1, tail=1).splitlines() == [logged[0], "[... 2 epochs ...]", logged[-1]]


def test_a_resume_that_trains_no_epoch_adds_no_session(tmp_path, monkeypatch):
    """A CPU queue lane that reaches a run another lane has just paused resumes it with no time for an epoch:
    its record stays as it was, without an empty session."""
    import time

    monkeypatch.setattr("rstn.train._epoch_estimate", lambda history: 1e9)  # no next epoch fits any deadline
    config = run_config("rnn-spn-d4", "smoke", 0, **(TINY | {"max_epochs": 3}))
    first = train_run(config, results_dir=tmp_path, progress="none", data=synthetic_data(),
                      deadline=time.monotonic() + 3600)
    assert first.status == "running" and first.record.epochs_run == 1 and len(first.record.sessions) == 1
    again = train_run(config, results_dir=tmp_path, progress="none", data=synthetic_data(), resume=True,
                      deadline=time.monotonic() + 3600)
    assert again.status == "running" and again.record.epochs_run == 1
    (session,) = again.record.sessions  # the first session's, its end kept (the checkpoint's: its last epoch)
    assert {k: session[k] for k in ("started_at", "first_epoch", "epochs")} == \
        {k: first.record.sessions[0][k] for k in ("started_at", "first_epoch", "epochs")}
    assert session["ended_at"] <= first.record.sessions[0]["ended_at"]
