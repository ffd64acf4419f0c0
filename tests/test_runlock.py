"""One process per run: the run lock, a run left to the process that holds it, and the queue's lanes."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rstn.experiments import run_config, run_dir
from rstn.queue import lane_threads, run_lanes
from rstn.records import RUN_FILE, read_run
from rstn.runlock import LOCK_NAME, RunBusyError, run_lock
from rstn.runlist import train_configs
from rstn.runs import checkpoint_path, train_run
from test_runs import TINY, synthetic_data

HOLD = """
import fcntl, os, sys, time
handle = open(sys.argv[1], "a+")
fcntl.flock(handle, fcntl.LOCK_EX)
handle.write(f"pid {os.getpid()} since now\\n"); handle.flush()
print("held", flush=True)
time.sleep(60)
"""

pytest.importorskip("fcntl")


def test_a_held_lock_is_refused_naming_its_holder_and_free_once_released(tmp_path):
    path = tmp_path / "run" / LOCK_NAME
    with run_lock(path, "paper/x/seed0"):
        with pytest.raises(RunBusyError, match=r"paper/x/seed0 is being trained by another process \(pid \d+ since"):
            with run_lock(path, "paper/x/seed0"):
                pass
    with run_lock(path, "paper/x/seed0"):  # released: taken again
        pass


def test_a_lock_held_by_another_process_is_freed_when_it_is_killed(tmp_path):
    path = tmp_path / LOCK_NAME
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunBusyError, match=f"pid {holder.pid}"):
            with run_lock(path, "r"):
                pass
    finally:
        holder.kill()  # as kill -9 would: the kernel drops the lock
        holder.wait()
    with run_lock(path, "r"):
        pass


def test_a_run_another_process_trains_is_left_untouched_and_the_next_run_goes_on(tmp_path):
    configs = [run_config(r, "smoke", 0, **TINY) for r in ("rnn-spn-d4", "ffn-spn-d4")]
    first = train_run(configs[0], results_dir=tmp_path, progress="none", data=synthetic_data(), deadline=1e-9)
    record = run_dir(tmp_path, "smoke", "rnn-spn-d4", 0) / RUN_FILE
    before = record.read_bytes()
    assert first.status == "running"
    with run_lock(checkpoint_path(configs[0]).with_name(LOCK_NAME), "another process"):
        with pytest.raises(RunBusyError):
            train_run(configs[0], results_dir=tmp_path, progress="none", data=synthetic_data(), force=True)
        assert record.read_bytes() == before  # not even --force touches a run another process holds
        outcomes = train_configs(configs, results_dir=tmp_path, resume=True, progress="none")
    assert isinstance(outcomes[0], RunBusyError) and outcomes[1].status == "finished"
    assert record.read_bytes() == before


def test_two_lanes_train_each_run_once(tmp_path, capfd):
    small = {"n_train": 40, "n_valid": 20, "n_test": 20}
    configs = [run_config(r, "smoke", 0, data=small, **TINY) for r in ("rnn-spn-d4", "ffn-spn-d4", "rnn-spn-d3")]
    status = run_lanes(configs, 2, results_dir=tmp_path, checkpoint_root=tmp_path / "ckpt", device="cpu",
                       force=False, budget_s=None, checkpoint_every=1, progress="none")
    assert status == 0
    summaries = re.findall(r"lane (\d) \(\d+ thread\(s\)\): .*?(\d+) trained to the end", capfd.readouterr().err)
    assert sorted(lane for lane, _ in summaries) == ["1", "2"]
    assert sum(int(trained) for _, trained in summaries) == 3  # without the lock both lanes would train some
    for config in configs:
        run = read_run(run_dir(tmp_path, "smoke", config.row, 0) / RUN_FILE)
        assert run.status == "finished" and run.epochs_run == 1 and len(run.sessions) == 1  # trained once
        threads = int(re.search(r"(\d+) threads", run.sessions[0]["device"]).group(1))
        # a lane's threads, or both lanes' where the other lane had already ended (handed over)
        assert run.sessions[0]["lanes"] == 2 and threads in (lane_threads(2), 2 * lane_threads(2))


def test_a_lane_that_ends_hands_its_threads_to_the_lane_still_training(tmp_path):
    small = {"n_train": 40, "n_valid": 20, "n_test": 20}
    long = run_config("ffn-spn-d4", "smoke", 0, data=small, **(TINY | {"max_epochs": 60, "patience": 1000}))
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the queue's threads, one per lane (other test modules set one thread)
    try:
        # one run, two lanes: the lane that does not get it ends at once, and the other takes its thread
        assert run_lanes([long], 2, results_dir=tmp_path, checkpoint_root=tmp_path / "ckpt", device="cpu",
                         force=False, budget_s=None, checkpoint_every=1, progress="none") == 0
    finally:
        torch.set_num_threads(before)
    run = read_run(run_dir(tmp_path, "smoke", "ffn-spn-d4", 0) / RUN_FILE)
    assert run.status == "finished" and run.epochs_run == 60
    last = run.sessions[-1]
    assert "2 threads" in last["device"] and last["lanes"] == 1 and last["epochs"] > 0
    assert sum(s["epochs"] for s in run.sessions) == 60


def test_sigterm_to_the_queue_ends_its_lanes_and_frees_their_runs(tmp_path):
    script = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from rstn.experiments import run_config
from rstn.queue import run_lanes
from test_runs import TINY
small = {{"n_train": 40, "n_valid": 20, "n_test": 20}}
configs = [run_config(r, "smoke", 0, data=small, **(TINY | {{"max_epochs": 100000}}))
           for r in ("rnn-spn-d4", "ffn-spn-d4")]
run_lanes(configs, 2, results_dir={str(tmp_path)!r}, checkpoint_root={str(tmp_path / "ckpt")!r}, device="cpu",
          force=False, budget_s=None, checkpoint_every=1, progress="none")
"""
    records = [run_dir(tmp_path, "smoke", row, 0) / RUN_FILE for row in ("rnn-spn-d4", "ffn-spn-d4")]
    queue = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 120
        while not all(r.exists() and read_run(r).epochs_run >= 2 for r in records):  # both lanes are training
            assert queue.poll() is None and time.monotonic() < deadline, "the lanes did not start"
            time.sleep(0.5)
        queue.send_signal(signal.SIGTERM)
        assert queue.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        queue.kill()
    for record in records:  # in progress, and no lane is left holding its run
        assert read_run(record).status == "running"
        with run_lock(tmp_path / "ckpt" / "smoke" / record.parent.parent.name / "seed0" / LOCK_NAME, "r"):
            pass
