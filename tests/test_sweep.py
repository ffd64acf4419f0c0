"""The sweep's whole path on a CPU: the smoke profile, a deadline that stops the run mid-way, the archive
that carries it, and the resume from that archive: in this process on a ticking clock (fast), and through
submitit's local executor on the real clock (marked slow: its jobs are other processes)."""

from __future__ import annotations

import tarfile
import time
import types

import pytest
import torch

import rstn.epoch
from rstn import experiments, sweep
from rstn.experiments import run_config
from rstn.results import RUN_FILE, read_run, without_timing

pytest.importorskip("submitit")

LONG = dict(max_epochs=300, patience=300)  # no run ends by itself within the test's deadlines


def test_plan_deals_runs_into_lanes_of_equal_cost():
    the_plan = sweep.plan(None, "smoke", [0, 1, 2], concurrency=9)
    assert len(the_plan.configs) == 27 and len(the_plan.lanes) == 9
    assert sorted(c.row + str(c.seed) for lane in the_plan.lanes for c in lane) == \
        sorted(c.row + str(c.seed) for c in the_plan.configs)
    costs = [sum(sweep.cost(c.row) for c in lane) for lane in the_plan.lanes]
    assert max(costs) <= 1.5 * sum(costs) / len(costs)  # the three d=1 rows x 3 seeds dominate
    with pytest.raises(ValueError, match="concurrency"):
        sweep.plan(None, "smoke", [0], concurrency=0)


class TickingClock:
    """A monotonic clock that moves `tick` seconds each time it is read: a deadline passes after a known
    number of reads (about four an epoch of the smoke profile), not after real seconds."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = time.monotonic(), tick

    def monotonic(self) -> float:
        self.now += self.tick
        return self.now


def test_sweep_deadline_archive_and_resume_on_a_ticking_clock(tmp_path, mnist_file, monkeypatch):
    """The debug executor (lanes in this process), the deadline on `TickingClock` (`rstn.epoch` is where
    every deadline check reads the clock; `rstn.sweep` where a lane sets it), checkpoints every 3 epochs."""
    clock = TickingClock(1.0)
    monkeypatch.setattr(rstn.epoch, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    # the lane turns the budget into a monotonic deadline: on the same clock
    monkeypatch.setattr(sweep, "time", types.SimpleNamespace(monotonic=clock.monotonic, time=time.time,
                                                             sleep=time.sleep))
    summaries = sweep.sweep(["ffn-spn-d4"], "smoke", [0], executor="debug", results_dir=tmp_path / "results",
                            checkpoint_root=tmp_path / "ckpt", device="cpu", budget_s=30, checkpoint_every=3,
                            log_dir=tmp_path / "jobs", **LONG)
    _check_deadline_archive_and_resume(tmp_path, summaries)


@pytest.mark.slow
def test_local_sweep_deadline_archive_and_resume(tmp_path, mnist_file):
    """The same through submitit's local executor: its job is another process, on the real clock (~50 s)."""
    summaries = sweep.sweep(["ffn-spn-d4"], "smoke", [0], executor="local", concurrency=1,
                            results_dir=tmp_path / "results", checkpoint_root=tmp_path / "ckpt", device="cpu",
                            budget_s=20, checkpoint_every=3, log_dir=tmp_path / "jobs", **LONG)
    _check_deadline_archive_and_resume(tmp_path, summaries)


def _check_deadline_archive_and_resume(tmp_path, summaries):
    results, ckpts, rows = tmp_path / "results", tmp_path / "ckpt", ["ffn-spn-d4"]
    assert [s["status"] for s in summaries] == ["running"]  # stopped by the deadline, resumable
    record = read_run(results / "smoke" / "ffn-spn-d4" / "seed0" / RUN_FILE)
    assert record.stop_reason == "time_budget" and 0 < record.epochs_run < 300
    first_epochs = record.epochs_run

    config = run_config("ffn-spn-d4", "smoke", 0, **LONG)
    archive = tmp_path / "out" / "sweep-smoke.tar.gz"
    manifest = sweep.pack(archive, [config], results, ckpts)
    assert archive.stat().st_size < sweep.ARCHIVE_LIMIT
    assert manifest["checkpoints"] == ["checkpoints/smoke/ffn-spn-d4/seed0/checkpoint.pt"]
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"results/smoke/ffn-spn-d4/seed0/run.json", "results/smoke/ffn-spn-d4/seed0/train.log",
            "results/smoke/ffn-spn-d4/seed0/attention.npz", "manifest.json"} <= names

    # another machine: nothing but the archive; float sums depend on the thread count: use the job's
    results2, ckpts2 = tmp_path / "results2", tmp_path / "ckpt2"
    sweep.unpack(archive, results2, ckpts2)
    threads = torch.get_num_threads()
    torch.set_num_threads(summaries[0]["threads"])
    try:
        resumed, one_go, record2 = _resume_and_run_straight(tmp_path, results2, ckpts2, rows)
    finally:
        torch.set_num_threads(threads)
    assert resumed[0]["status"] == "running" and record2.epochs_run > first_epochs
    assert len(record2.sessions) == 2 and record2.sessions[1]["first_epoch"] <= first_epochs
    assert without_timing(one_go.history) == without_timing(record2.history)


def _resume_and_run_straight(tmp_path, results2, ckpts2, rows):
    """Resume the unpacked run in this process (debug executor), then the same epochs in one go."""
    from rstn.runs import train_run

    resumed = sweep.sweep(rows, "smoke", [0], executor="debug", results_dir=results2, checkpoint_root=ckpts2,
                          device="cpu", budget_s=10, log_dir=tmp_path / "jobs2", **LONG)
    record2 = read_run(results2 / "smoke" / "ffn-spn-d4" / "seed0" / RUN_FILE)
    straight = run_config("ffn-spn-d4", "smoke", 0, max_epochs=record2.epochs_run, patience=300)
    one_go = train_run(straight, results_dir=tmp_path / "results3", checkpoint_root=tmp_path / "ckpt3",
                       device="cpu", progress="none")
    return resumed, one_go, record2


def test_pack_leaves_out_checkpoints_that_do_not_fit(tmp_path):
    config = run_config("ffn-spn-d4", "smoke", 0)
    folder = tmp_path / "results" / "smoke" / "ffn-spn-d4" / "seed0"
    folder.mkdir(parents=True)
    from tests.test_results import make_record  # a valid record, in progress
    import dataclasses

    from rstn.results import write_run

    write_run(folder / RUN_FILE, dataclasses.replace(make_record(), row="ffn-spn-d4", status="running",
                                                     stop_reason="time_budget", config=config.to_dict()))
    ckpt = tmp_path / "ckpt" / "smoke" / "ffn-spn-d4" / "seed0" / "checkpoint.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"\0" * (3 * 2**20))
    manifest = sweep.pack(tmp_path / "a.tar.gz", [config], tmp_path / "results", tmp_path / "ckpt",
                          limit=3 * 2**20)
    assert manifest["checkpoints"] == [] and manifest["left_out"][0].startswith(
        "checkpoints/smoke/ffn-spn-d4/seed0/checkpoint.pt (3.0 MiB)")
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        tar.add(folder / RUN_FILE, arcname="../escape/run.json")
    with pytest.raises(ValueError, match="unexpected member"):
        sweep.unpack(bad, tmp_path / "r", tmp_path / "c")


class _FakeJob:
    def __init__(self, fn, args, fail=False):
        self.fn, self.args, self.fail, self.job_id, self.polls = fn, args, fail, str(id(self)), 0

    def done(self):
        self.polls += 1
        return self.polls > 1  # busy at the first look, done at the second

    def result(self):
        if self.fail:
            raise RuntimeError("job 1 crashed\nCUDA error: out of memory")
        return [{"row": c.row, "seed": c.seed, "status": "finished"} for c in self.args[0]]


class _FakeExecutor:
    def __init__(self):
        self.parameters, self.jobs = {}, []

    def update_parameters(self, **kwargs):
        self.parameters.update(kwargs)

    def submit(self, fn, *args):
        self.jobs.append(_FakeJob(fn, args, fail=len(self.jobs) == 1))
        self.jobs[-1].visible_gpus = self.parameters.get("visible_gpus")
        return self.jobs[-1]


def test_local_jobs_are_dealt_over_the_gpus_and_a_failed_job_keeps_the_others(monkeypatch, tmp_path):
    """submitit's local executor hides every GPU from a job that asks for none: the sweep asks for one
    per job, dealt round the machine's GPUs. A job that crashes marks its runs failed, not the sweep."""
    fake = _FakeExecutor()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(sweep, "make_executor", lambda *a, **k: fake)
    monkeypatch.setattr(sweep, "prepare_data", lambda configs: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    waits = []
    summaries = sweep.sweep(["rnn-spn-d4", "ffn-spn-d4", "rnn-spn-d3"], "smoke", [0], concurrency=3,
                            results_dir=tmp_path, checkpoint_root=tmp_path, while_waiting=lambda: waits.append(1),
                            wait_interval_s=0)
    assert [job.visible_gpus for job in fake.jobs] == [(0,), (1,), (0,)]
    assert fake.parameters["gpus_per_node"] == 1 and waits  # called while jobs were busy
    assert sorted(s["status"] for s in summaries) == ["failed", "finished", "finished"]
    failed = next(s for s in summaries if s["status"] == "failed")
    assert failed["error"] == "RuntimeError: CUDA error: out of memory"
    assert sweep.default_gpus("local", "cpu") == 0 and sweep.default_gpus("slurm", None) == 1

    # a parent limited to GPUs 2 and 3: the jobs get those, as CUDA_VISIBLE_DEVICES names them
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    fake.jobs.clear()
    sweep.sweep(["rnn-spn-d4", "ffn-spn-d4", "rnn-spn-d3"], "smoke", [0], concurrency=3, results_dir=tmp_path,
                checkpoint_root=tmp_path)
    assert [job.visible_gpus for job in fake.jobs] == [(2,), (3,), (2,)]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-5f3e")
    with pytest.raises(ValueError, match="not UUIDs"):
        sweep.default_gpus("local", None)


def test_a_run_that_raises_does_not_end_its_lane(monkeypatch):
    import rstn.runs

    trained = []

    def train_run(config, **kwargs):
        if config.row == "rnn-spn-d4":
            raise RuntimeError("CUDA out of memory")
        trained.append(config.row)
        record = type("R", (), {"epochs_run": 3})()
        return type("Result", (), {"status": "finished", "record": record, "test_error": 0.1})()

    monkeypatch.setattr(rstn.runs, "train_run", train_run)
    configs = [run_config(r, "smoke", 0) for r in ("rnn-spn-d4", "ffn-spn-d4")]
    summaries = sweep.run_lane(configs, "results", None, "cpu", None, True, 1)
    assert [s["status"] for s in summaries] == ["failed", "finished"] and trained == ["ffn-spn-d4"]
    assert summaries[0]["error"] == "RuntimeError: CUDA out of memory"


def _write(results, row, config=None, **changes):
    """A valid record of `row` (smoke, seed 0) under `results`; its folder."""
    import dataclasses

    from rstn.results import write_run
    from tests.test_results import make_record

    folder = results / "smoke" / row / "seed0"
    folder.mkdir(parents=True, exist_ok=True)
    write_run(folder / RUN_FILE, dataclasses.replace(
        make_record(), row=row, config=(config or run_config(row, "smoke", 0)).to_dict(), **changes))
    return folder


def _epochs(n, status="running"):
    """Record fields of a run `n` epochs in: in progress (paused by a deadline) or finished."""
    from tests.test_results import HISTORY

    history = [dict(HISTORY[0], epoch=i) for i in range(n)]
    stop = {"running": "time_budget", "finished": "early_stopping"}[status]
    return dict(status=status, stop_reason=stop, epochs_run=n, history=history)


def _checkpoint(root, row):
    path = root / "smoke" / row / "seed0" / "checkpoint.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"archive's")
    return path


def test_unpack_keeps_a_run_that_got_further_here(tmp_path):
    """An archive from a device call does not replace a run that has trained on here meanwhile."""
    source, here = tmp_path / "source", tmp_path / "here"
    running = dict(status="running", stop_reason="time_budget")
    _write(source, "ffn-spn-d4", **running)  # the archive: 1 epoch, in progress
    _write(source, "rnn-spn-d4", **running)
    _write(here, "ffn-spn-d4")  # here: finished
    configs = [run_config(r, "smoke", 0) for r in ("ffn-spn-d4", "rnn-spn-d4")]
    archive = tmp_path / "a.tar.gz"
    sweep.pack(archive, configs, source, tmp_path / "no-checkpoints")
    manifest = sweep.unpack(archive, here, tmp_path / "ckpt")
    assert manifest["kept"] == ["smoke/ffn-spn-d4/seed0"]
    assert manifest["why"]["smoke/ffn-spn-d4/seed0"].startswith("finished here (1 epoch)")
    assert read_run(here / "smoke" / "ffn-spn-d4" / "seed0" / RUN_FILE).finished
    assert read_run(here / "smoke" / "rnn-spn-d4" / "seed0" / RUN_FILE).status == "running"


def test_a_gpu_restart_never_replaces_a_cpu_run_that_got_further(tmp_path):
    """The ffn-spn-d3 case: here a run in progress at 102 epochs, trained on another CPU, so with neither
    its checkpoint nor a resume pack here; the archive holds a GPU restart of it at 12 epochs, with its
    checkpoint. Unpack keeps the 102 epochs (and takes none of the restart's files); a restart that
    finished replaces them, and the files of the old record go with it."""
    source, here, ckpts = tmp_path / "source", tmp_path / "here", tmp_path / "ckpt"
    _write(source, "ffn-spn-d3", **_epochs(12))
    _checkpoint(tmp_path / "source-ckpt", "ffn-spn-d3")
    folder = _write(here, "ffn-spn-d3", **_epochs(102))
    (folder / "train.log").write_text("102 epochs on the CPU\n")
    config = run_config("ffn-spn-d3", "smoke", 0)
    archive = tmp_path / "a.tar.gz"
    assert sweep.pack(archive, [config], source, tmp_path / "source-ckpt")["checkpoints"]
    manifest = sweep.unpack(archive, here, ckpts)
    assert manifest["kept"] == ["smoke/ffn-spn-d3/seed0"]
    assert manifest["why"]["smoke/ffn-spn-d3/seed0"] == \
        "here running, 102 epochs; the archive's (running, 12 epochs) got no further"
    assert read_run(folder / RUN_FILE).epochs_run == 102
    assert (folder / "train.log").read_text() == "102 epochs on the CPU\n"
    assert not (ckpts / "smoke" / "ffn-spn-d3" / "seed0" / "checkpoint.pt").exists()

    (folder / "resume.pt").write_bytes(b"the CPU run's pack")
    _write(source, "ffn-spn-d3", **_epochs(150, "finished"))
    sweep.pack(archive, [config], source, tmp_path / "source-ckpt")
    assert sweep.unpack(archive, here, ckpts)["kept"] == []
    assert read_run(folder / RUN_FILE).finished and read_run(folder / RUN_FILE).epochs_run == 150
    assert not (folder / "train.log").exists() and not (folder / "resume.pt").exists()


def test_unpack_keeps_a_record_of_another_config_but_not_of_another_precision(tmp_path):
    """bf16 aside (the row in another precision), a record here of another config is never replaced."""
    source, here = tmp_path / "source", tmp_path / "here"
    bf16 = run_config("rnn-spn-d4", "smoke", 0, bf16=True)
    other = run_config("ffn-spn-d4", "smoke", 0, lr=1e-3)
    _write(source, "rnn-spn-d4", config=bf16, **_epochs(8, "finished"))
    _write(source, "ffn-spn-d4", config=other, **_epochs(8, "finished"))
    _write(here, "rnn-spn-d4", **_epochs(5))  # float32, in progress, with the profile's config
    _write(here, "ffn-spn-d4", **_epochs(5))
    archive = tmp_path / "a.tar.gz"
    sweep.pack(archive, [bf16, other], source, tmp_path / "no-checkpoints")
    manifest = sweep.unpack(archive, here, tmp_path / "ckpt")
    assert manifest["kept"] == ["smoke/ffn-spn-d4/seed0"]
    assert "another config (train.lr 0.0005 -> 0.001)" in manifest["why"]["smoke/ffn-spn-d4/seed0"]
    record = read_run(here / "smoke" / "rnn-spn-d4" / "seed0" / RUN_FILE)
    assert record.finished and record.config["train"]["bf16"] is True


def test_bf16_deviation_is_the_profile_config_in_bf16():
    assert experiments.bf16_deviation(run_config("rnn-spn-d1", "paper", 0, bf16=True).to_dict())
    assert not experiments.bf16_deviation(run_config("rnn-spn-d1", "paper", 0).to_dict())
    assert not experiments.bf16_deviation(run_config("rnn-spn-d1", "paper", 0, bf16=True, max_epochs=3).to_dict())
    assert not experiments.bf16_deviation(run_config("rnn-spn-d4-bf16", "paper", 0).to_dict())  # its own config
    assert not experiments.bf16_deviation({"row": "no-such-row", "profile": "paper", "seed": 0})


def test_the_sweep_leaves_alone_the_runs_it_would_start_over_or_replace(tmp_path, monkeypatch):
    results, ckpts = tmp_path / "results", tmp_path / "ckpt"
    _write(results, "ffn-spn-d3", **_epochs(102))  # in progress, nothing here to resume from
    _write(results, "rnn-spn-d4", **_epochs(3))
    _checkpoint(ckpts, "rnn-spn-d4")  # in progress, resumable
    _write(results, "ffn-spn-d4")  # finished
    _write(results, "rnn-spn-d3", config=run_config("rnn-spn-d3", "smoke", 0, lr=1e-3), **_epochs(4))
    rows = ["ffn-spn-d3", "rnn-spn-d4", "ffn-spn-d4", "rnn-spn-d3", "ffn-spn-d1"]
    the_plan = sweep.plan(rows, "smoke", [0], 3, results_dir=results, checkpoint_root=ckpts)
    kept = {c.row: why for c, why in the_plan.kept}
    assert kept["ffn-spn-d3"] == ("in progress (102 epochs) with neither its checkpoint nor its resume pack "
                                  "here: training it would start it over")
    assert kept["ffn-spn-d4"].startswith("finished (1 epoch")
    assert "another config (train.lr 0.001 -> 0.0005)" in kept["rnn-spn-d3"]
    assert [c.row for c in the_plan.trained] == ["rnn-spn-d4", "ffn-spn-d1"]
    assert len(sweep.plan(rows, "smoke", [0], 3).trained) == 5  # without results_dir: every run

    # a resume pack beside run.json is as good as a checkpoint; a float32 record is not resumed in bf16
    (results / "smoke" / "ffn-spn-d3" / "seed0" / "resume.pt").write_bytes(b"pack")
    assert sweep.why_not_train(run_config("ffn-spn-d3", "smoke", 0), results, ckpts) is None
    assert "train.bf16 false -> true" in sweep.why_not_train(run_config("rnn-spn-d4", "smoke", 0, bf16=True),
                                                            results, ckpts)

    fake = _FakeExecutor()
    monkeypatch.setattr(sweep, "make_executor", lambda *a, **k: fake)
    monkeypatch.setattr(sweep, "prepare_data", lambda configs: None)
    summaries = sweep.sweep(["ffn-spn-d4", "ffn-spn-d1"], "smoke", [0], results_dir=results,
                            checkpoint_root=ckpts, device="cpu")
    assert [[c.row for c in job.args[0]] for job in fake.jobs] == [["ffn-spn-d1"]]
    assert summaries[0]["status"] == "kept" and summaries[0]["reason"].startswith("finished")


def test_finished_runs_bring_their_weights_where_they_fit(tmp_path):
    source, here = tmp_path / "source", tmp_path / "here"
    folder = _write(source, "ffn-spn-d4")  # finished
    (folder / "weights.safetensors").write_bytes(b"w" * 1000)
    config = run_config("ffn-spn-d4", "smoke", 0)
    archive = tmp_path / "a.tar.gz"
    manifest = sweep.pack(archive, [config], source, tmp_path / "no-checkpoints")
    assert manifest["weights"] == ["results/smoke/ffn-spn-d4/seed0/weights.safetensors"]
    sweep.unpack(archive, here, tmp_path / "ckpt")
    assert (here / "smoke" / "ffn-spn-d4" / "seed0" / "weights.safetensors").read_bytes() == b"w" * 1000
    (folder / "weights.safetensors").write_bytes(b"w" * 2**20)
    manifest = sweep.pack(archive, [config], source, tmp_path / "no-checkpoints", limit=2**20 + 2**10)
    assert manifest["weights"] == [] and manifest["left_out"] == [
        "results/smoke/ffn-spn-d4/seed0/weights.safetensors (1.0 MiB)"]


def test_a_failed_jobs_finished_runs_keep_their_status(tmp_path):
    _write(tmp_path, "rnn-spn-d4")  # finished, with the profile's config
    lane = [run_config(r, "smoke", 0) for r in ("rnn-spn-d4", "ffn-spn-d4")]
    summaries = sweep._summaries_of_failed_job(lane, tmp_path, "OutOfMemoryError: killed")
    assert [s["status"] for s in summaries] == ["finished", "failed"]
    assert summaries[1]["error"] == "OutOfMemoryError: killed"


def test_runs_that_can_resume_go_first_in_their_lane(tmp_path):
    results, ckpts = tmp_path / "results", tmp_path / "ckpt"
    _write(results, "rnn-spn-d4", status="running", stop_reason="time_budget")
    _write(results, "ffn-spn-d4", status="running", stop_reason="time_budget")  # no checkpoint: starts over
    checkpoint = ckpts / "smoke" / "rnn-spn-d4" / "seed0" / "checkpoint.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"x")
    lane = [run_config(r, "smoke", 0) for r in ("ffn-spn-d1", "ffn-spn-d4", "rnn-spn-d4")]
    assert [c.row for c in sweep.in_progress_first(lane, results, ckpts)] == ["rnn-spn-d4", "ffn-spn-d1", "ffn-spn-d4"]


def test_the_archive_is_written_while_waiting_and_when_the_sweep_fails(monkeypatch, tmp_path):
    from rstn import cli

    results, out = tmp_path / "results", tmp_path / "out"
    _write(results, "ffn-spn-d4", status="running", stop_reason="time_budget")
    packed = []

    def failing_sweep(*args, while_waiting=None, **kwargs):
        while_waiting()
        packed.append((out / "sweep-smoke.tar.gz").exists())
        raise RuntimeError("the executor broke")

    def pack(archive, *args, **kwargs):
        archive.parent.mkdir(exist_ok=True)
        archive.write_bytes(b"x")
        packed.append("pack")
        return {"weights": [], "checkpoints": [], "left_out": []}

    monkeypatch.setattr(sweep, "sweep", failing_sweep)
    monkeypatch.setattr(sweep, "pack", pack)
    with pytest.raises(RuntimeError, match="the executor broke"):
        cli.main(["sweep", "--row", "ffn-spn-d4", "--profile", "smoke", "--results-dir", str(results),
                  "--out", str(out)])
    assert packed == ["pack", True, "pack"]  # while waiting, then once more on the way out


def test_the_sweep_takes_model_and_data_fields_as_rstn_train_does(tmp_path, monkeypatch):
    from rstn import cli

    planned = {}

    def fake_sweep(rows, profile, seeds, **kwargs):
        planned.update(kwargs)
        return []

    monkeypatch.setattr(sweep, "sweep", fake_sweep)
    cli.main(["sweep", "--row", "rnn-spn-d4", "--profile", "smoke", "--results-dir", str(tmp_path),
              "--set", "model.dropout=0.25", "data.x_placement=random", "lr=0.001"])
    assert planned["model"] == {"dropout": 0.25} and planned["data"] == {"x_placement": "random"}
    assert planned["lr"] == 0.001
    config = sweep.plan(["rnn-spn-d4"], "smoke", [0], 1, model={"dropout": 0.25}, lr=0.001).configs[0]
    assert config.model.dropout == 0.25 and config.train.lr == 0.001
    assert cli.main(["sweep", "--row", "rnn-spn-d4", "--profile", "smoke", "--set", "data.nope=1"]) == 2
