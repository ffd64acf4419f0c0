"""The CPU queue: its order, the processor it plans for, epoch times from a run's own history, the budget."""

from __future__ import annotations

from types import SimpleNamespace

from rstn.backends import has_native_bf16, processor_id
from rstn.checkpoints import PACK_NAME
from rstn.experiments import CPU_QUEUE, get_row, run_config
from rstn.history import HISTORY_LIMIT_MIB, history_mib
from rstn.queue import (MIN_NEW_EPOCHS, bf16_deferred, describe_plan, epoch_time_here, StartRule, history_line,
                        lane_share, plan, queue_configs, resumable_first)
from rstn.runs import train_run
from test_runs import TINY, synthetic_data


def test_the_queue_order_is_the_registered_one_with_the_bf16_variant_and_more_seeds():
    order = [(c.row, c.seed) for c in queue_configs()]
    assert order == list(CPU_QUEUE)
    pending = order[3:]  # after the three finished seed-0 rows
    assert pending[:4] == [("ffn-spn-d3", 0), ("rnn-spn-d2", 0), ("rnn-spn-d4-bf16", 0), ("ffn-spn-d2", 0)]
    variants = ["lasagne2015", "glimpses2", "feedback", "papertext", "fixed-h0"]
    assert pending[4:9] == [(f"rnn-spn-d3-{v}", 0) for v in variants]
    assert pending[9:15] == [(r, s) for r in ("rnn-spn-d2", "rnn-spn-d3", "rnn-spn-d4") for s in (1, 2)]
    bf16 = run_config("rnn-spn-d4-bf16", "paper")
    assert bf16.train.bf16 and not run_config("rnn-spn-d4", "paper").train.bf16
    assert bf16.model == run_config("rnn-spn-d4", "paper").model and get_row("rnn-spn-d4-bf16").group == "ablation"


def test_processor_id_tells_apart_what_model_name_does_not(tmp_path):
    def cpuinfo(family: str, flags: str):
        path = tmp_path / f"cpuinfo-{family}"
        path.write_text(f"processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: {family}\nmodel\t\t: 1\n"
                        f"model name\t: AMD EPYC\nflags\t\t: fpu {flags}\n\nprocessor\t: 1\nvendor_id\t: other\n")
        return path

    old, new = processor_id(cpuinfo("25", "avx2")), processor_id(cpuinfo("26", "avx2 avx512f avx512_bf16"))
    assert old == "AuthenticAMD family 25 model 1 (avx2)"
    assert new == "AuthenticAMD family 26 model 1 (avx2 avx512f avx512_bf16)"
    assert not has_native_bf16(cpuinfo("25", "avx2")) and has_native_bf16(cpuinfo("26", "avx2 avx512f avx512_bf16"))


def test_without_native_bf16_the_bf16_run_goes_to_the_end_of_the_queue():
    configs = queue_configs()
    kept, none = bf16_deferred(configs, native_bf16=True)
    assert kept == configs and none == []
    moved, deferred = bf16_deferred(configs, native_bf16=False)
    assert [c.row for c in deferred] == ["rnn-spn-d4-bf16"] and moved[-1] == deferred[0]
    assert [c for c in moved if not c.train.bf16] == [c for c in configs if not c.train.bf16]  # the rest in order
    assert "deferred to the end: rnn-spn-d4-bf16/seed0" in describe_plan([], 60.0, deferred)


def _record(history_times, sessions) -> SimpleNamespace:
    history = [{"epoch": i, "time_s": t} for i, t in enumerate(history_times)]
    return SimpleNamespace(history=history, sessions=sessions)


def test_epoch_time_comes_from_the_runs_own_epochs_on_this_processor():
    record = _record([100, 100, 300, 310], [{"cpu": "A", "first_epoch": 0, "epochs": 2},
                                            {"cpu": "B", "first_epoch": 2, "epochs": 2}])
    assert epoch_time_here(record, "A") == 100 and epoch_time_here(record, "B") == 305
    assert epoch_time_here(record, "C") is None and epoch_time_here(None, "A") is None


def test_plan_puts_a_resumable_run_first_and_spends_the_budget_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr("rstn.queue.processor_id", lambda: "this cpu")
    configs = [run_config(r, "smoke", 0, **(TINY | {"max_epochs": 10})) for r in ("ffn-spn-d4", "rnn-spn-d4")]
    paused = train_run(configs[1], results_dir=tmp_path, progress="none", data=synthetic_data(n=40),
                       deadline=1e-9)  # no epoch: the run is left in progress with nothing to resume from
    assert paused.status == "running"
    assert [c.row for c in resumable_first(configs, tmp_path, None)] == ["ffn-spn-d4", "rnn-spn-d4"]
    (tmp_path / "smoke" / "rnn-spn-d4" / "seed0" / PACK_NAME).write_bytes(b"a pack")  # now it can resume
    assert [c.row for c in resumable_first(configs, tmp_path, None)] == ["rnn-spn-d4", "ffn-spn-d4"]

    planned = plan(configs, budget_s=350.0, results_dir=tmp_path, probe=lambda config: 50.0)
    assert [(p.config.row, p.epoch_s, p.source, p.reach) for p in planned] == [
        ("ffn-spn-d4", 50.0, "timed steps", 7), ("rnn-spn-d4", 50.0, "timed steps", 0)]
    text = describe_plan(planned, 350.0)
    assert text.startswith("CPU queue on this cpu, 5m50s:")
    assert "ffn-spn-d4/seed0: from epoch 0; 50 s per epoch here (timed steps); the budget takes it to 7 of at " \
           "most 10 epochs" in text and "rnn-spn-d4/seed0: from epoch 0; 50 s per epoch here (timed steps); " \
           "not reached" in text
    assert "ends in the budget" in describe_plan(plan(configs[:1], 1e6, tmp_path, probe=lambda c: 50.0), 1e6)
    cheap_last = plan(configs, budget_s=460.0, results_dir=tmp_path, probe=lambda c: 50.0 if "ffn" in c.row else 1.0)
    assert [p.reach for p in cheap_last] == [9, 0]  # the queue stops in the first run: none after it starts


def test_the_cli_queue_refuses_overrides(capsys):
    from rstn.cli import main

    assert main(["train", "--cpu-queue", "--set", "lr=0.1"]) == 2
    assert "--set does not apply" in capsys.readouterr().err


def test_epoch_time_at_a_thread_count_comes_from_sessions_with_that_many_threads():
    record = _record([100, 100, 180, 190], [{"cpu": "A", "device": "cpu (2 cores, 2 threads)", "first_epoch": 0,
                                             "epochs": 2},
                                            {"cpu": "A", "device": "cpu (2 cores, 1 threads)", "first_epoch": 2,
                                             "epochs": 2}])
    assert epoch_time_here(record, "A", threads=2) == 100 and epoch_time_here(record, "A", threads=1) == 185
    assert epoch_time_here(record, "A", threads=4) is None and epoch_time_here(record, "A") == 142.5


def test_with_lanes_each_run_goes_to_the_lane_free_first_and_a_cut_run_ends_its_lane(tmp_path, monkeypatch):
    monkeypatch.setattr("rstn.queue.processor_id", lambda: "this cpu")
    configs = [run_config(r, "smoke", 0, **(TINY | {"max_epochs": 10}))
               for r in ("ffn-spn-d4", "rnn-spn-d4", "rnn-spn-d3")]
    seconds = {"ffn-spn-d4": 10.0, "rnn-spn-d4": 50.0, "rnn-spn-d3": 50.0}
    two = plan(configs, budget_s=350.0, results_dir=tmp_path, probe=lambda c: seconds[c.row], lanes=2)
    # ffn-spn-d4 ends at 100 s in lane 1; rnn-spn-d4 is cut at 7 epochs in lane 2, which stops there;
    # rnn-spn-d3 goes to lane 1, which has 250 s left
    assert [(p.lane, p.reach) for p in two] == [(1, 10), (2, 7), (1, 5)]
    one = plan(configs, budget_s=350.0, results_dir=tmp_path, probe=lambda c: seconds[c.row])
    assert [(p.lane, p.reach) for p in one] == [(None, 10), (None, 5), (None, 0)]
    text = describe_plan(two, 350.0, lanes=2)
    assert "2 lanes of" in text.splitlines()[0] and "rnn-spn-d4/seed0 (lane 2): from epoch 0" in text


def test_lanes_go_with_the_queue_only(capsys):
    from rstn.cli import main

    assert main(["train", "--row", "rnn-spn-d4", "--lanes", "2"]) == 2
    assert "--lanes takes a count >= 1 and goes with --cpu-queue" in capsys.readouterr().err


def test_a_run_that_may_stop_early_is_said_to_end_only_if_it_improves_no_more():
    from rstn.queue import PlannedRun

    config = run_config("ffn-spn-d3", "paper")  # 300 epochs at most
    assert "ends in the budget if it improves no more (early stopping after epoch 58)" in \
        PlannedRun(config, 8, 50, 100.0, "timed steps", 58).line()
    assert "ends in the budget (by epoch 300)" in PlannedRun(config, 8, 292, 1.0, "timed steps", 300).line()


def test_without_a_budget_every_run_is_planned_to_its_end(tmp_path, monkeypatch):
    monkeypatch.setattr("rstn.queue.processor_id", lambda: "this cpu")
    configs = [run_config(r, "smoke", 0, **(TINY | {"max_epochs": 10})) for r in ("ffn-spn-d4", "rnn-spn-d4")]
    for lanes in (1, 2):
        planned = plan(configs, budget_s=None, results_dir=tmp_path, probe=lambda c: 50.0, lanes=lanes)
        assert [p.reach for p in planned] == [10, 10]
    assert "no budget" in describe_plan(planned, None, lanes=2)


def test_a_run_the_budget_takes_only_a_few_epochs_from_scratch_is_not_started(tmp_path, monkeypatch):
    monkeypatch.setattr("rstn.queue.processor_id", lambda: "this cpu")
    configs = [run_config(r, "paper", 0) for r in ("ffn-spn-d2", "rnn-spn-d4")]  # new runs of 300 epochs at most
    seconds = {"ffn-spn-d2": 500.0, "rnn-spn-d4": 90.0}
    planned = plan(configs, budget_s=3600.0, results_dir=tmp_path, probe=lambda c: seconds[c.row])
    # 7 epochs of ffn-spn-d2 are not worth a resume pack; left out, it costs the lane no time: rnn-spn-d4 gets
    # the whole hour instead of being "not reached"
    assert [(p.reach, p.left_out) for p in planned] == [(7, True), (40, False)] and 7 < MIN_NEW_EPOCHS
    assert "ffn-spn-d2/seed0: from epoch 0; 500 s per epoch here (timed steps); not started: the budget would " \
           "take it only 7 epochs from scratch" in describe_plan(planned, 3600.0)
    rule = StartRule.from_plan(planned, tmp_path, None)  # not a git repository: no history to weigh
    assert rule(configs[0], MIN_NEW_EPOCHS * 500.0 - 1) == "would start from epoch 0, which needs 2h46m of the " \
        "budget; 2h46m is left"
    assert rule(configs[0], MIN_NEW_EPOCHS * 500.0) is None and rule(configs[1], MIN_NEW_EPOCHS * 90.0) is None
    done = run_config("rnn-spn-d4", "smoke", 0, **TINY)
    train_run(done, results_dir=tmp_path, progress="none", data=synthetic_data())
    assert StartRule({("rnn-spn-d4", 0): 1e9}, str(tmp_path), None)(done, 1.0) is None  # finished: skipped
    assert [p.left_out for p in plan(configs, budget_s=None, results_dir=tmp_path, probe=lambda c: 500.0)] == \
        [False, False]  # without a budget every run is trained


def test_the_threads_of_lanes_that_have_ended_go_to_the_lanes_still_training():
    assert [lane_share(2, training) for training in (2, 1, 0)] == [1, 2, 2]
    assert lane_share(3, 2) == 1 and lane_share(3, 1) == 3  # a thread that does not divide waits for a handover


def test_the_plan_ends_with_the_history_and_the_packs_it_leaves_to_commit(tmp_path, monkeypatch):
    import os
    import subprocess

    monkeypatch.setattr("rstn.queue.processor_id", lambda: "this cpu")
    configs = [run_config(r, "paper", 0) for r in ("rnn-spn-d4", "ffn-spn-d4")]
    planned = plan(configs, budget_s=3600.0, results_dir=tmp_path, probe=lambda c: 60.0)  # the first is cut
    sizes, costs = {"rnn-spn-d4": 12_200_000, "ffn-spn-d4": 4_000_000}, {"rnn-spn-d4": 9.0, "ffn-spn-d4": 3.0}
    assert history_mib(tmp_path) is None and history_line(planned, None) is None  # not a git repository
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert history_mib(tmp_path) == 0.0 and history_mib(tmp_path / "results" / "paper") == 0.0  # not made yet
    line = history_line(planned, 0.0, pack_size=lambda c: sizes[c.row], pack_cost=lambda c: costs[c.row])
    assert line == (f"  history: 0 MiB of the repository's {HISTORY_LIMIT_MIB}; when the budget ends, resume "
                    "packs to commit: rnn-spn-d4/seed0 12 MB (about 9 MiB of history); the history then about 9 MiB")
    huge = history_line(planned, 142.0, pack_size=lambda c: sizes[c.row], pack_cost=lambda c: costs[c.row])
    assert huge.endswith("(about 9 MiB of history); the history then about 151 MiB: more than it has room for")
    assert not history_line(planned, 140.0, pack_size=lambda c: 200_000_000, pack_cost=lambda c: 9.0).endswith(
        "room for")  # judged by what the history will hold, not by the pack's size on disk
    left_out = plan([run_config("ffn-spn-d2", "paper", 0), *configs], budget_s=3600.0, results_dir=tmp_path,
                    probe=lambda c: 500.0 if c.row == "ffn-spn-d2" else 60.0)
    assert left_out[0].left_out and history_line(left_out, 0.0, pack_size=lambda c: sizes.get(c.row, 1),
                                                 pack_cost=lambda c: costs.get(c.row, 1.0)) == \
        line  # a run the queue does not start leaves no pack
    (tmp_path / "pack.bin").write_bytes(os.urandom(2 * 2**20))  # does not compress
    subprocess.run(["git", "-C", str(tmp_path), "add", "pack.bin"], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a"],
                   check=True)
    assert 2.0 <= history_mib(tmp_path) < 2.01  # what the refs reach, as a clone carries it
    ended = plan(configs, budget_s=None, results_dir=tmp_path, probe=lambda c: 60.0)
    no_pack = history_line(ended, 2.0, pack_size=lambda c: 1, pack_cost=lambda c: 1.0)
    assert no_pack.endswith("the plan leaves no resume pack to commit")


def test_a_new_run_whose_pack_the_history_has_no_room_for_is_not_planned(tmp_path, monkeypatch):
    monkeypatch.setattr("rstn.queue.processor_id", lambda: "this cpu")
    configs = [run_config(r, "paper", 0) for r in ("ffn-spn-d2", "rnn-spn-d4")]
    costs = {"ffn-spn-d2": 22.0, "rnn-spn-d4": 9.0}
    seconds = {"ffn-spn-d2": 200.0, "rnn-spn-d4": 60.0}

    def planned(used_mib):
        return plan(configs, budget_s=8000.0, results_dir=tmp_path, probe=lambda c: seconds[c.row], used_mib=used_mib,
                    pack_cost=lambda c: costs[c.row])

    assert [(p.left_out, p.reach) for p in planned(120.0)] == [(False, 40), (False, 0)]  # cut: a 22 MiB pack
    full = planned(130.0)  # 130 + 22 > 150: ffn-spn-d2 is left out, and rnn-spn-d4 gets the budget, cut too
    assert [(p.left_out, p.no_room, p.reach) for p in full] == [(True, (152.0, 22.0), 40), (False, None, 133)]
    assert "ffn-spn-d2/seed0: from epoch 0; 200 s per epoch here (timed steps); not started: its resume pack " \
           "(about 22 MiB of history) would take the repository's history to about 152 MiB, over its 150" \
           in describe_plan(full, 8000.0)
    assert [p.left_out for p in planned(145.0)] == [True, True]
    assert [p.left_out for p in planned(None)] == [False, False]  # outside git: nothing to weigh
    assert [p.left_out for p in plan(configs, budget_s=None, results_dir=tmp_path, probe=lambda c: 60.0,
                                     used_mib=149.0, pack_cost=lambda c: 22.0)] == [False, False]  # no pack: no cut


def test_a_lane_starts_no_new_run_whose_pack_the_history_has_no_room_for(tmp_path, monkeypatch):
    import subprocess
    import time

    import rstn.train
    from rstn.checkpoints import history_bytes
    from rstn.history import packs_in_progress_mib, pack_cost_mib

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    paused = run_config("rnn-spn-d4", "smoke", 0, **(TINY | {"max_epochs": 4}))
    with monkeypatch.context() as patch:  # the budget stops the run after one epoch: in progress, with a pack
        patch.setattr(rstn.train, "_epoch_estimate", lambda history: 1e9 if history else 0.0)
        train_run(paused, results_dir=tmp_path, checkpoint_root=tmp_path / "ckpt", progress="none",
                  data=synthetic_data(), deadline=time.monotonic() + 3600)
    pack = tmp_path / "smoke" / "rnn-spn-d4" / "seed0" / PACK_NAME
    assert packs_in_progress_mib(tmp_path) == history_bytes(pack) / 2**20 > 0
    new = run_config("ffn-spn-d4", "paper", 0)
    rule = StartRule({("ffn-spn-d4", 0): 60.0}, str(tmp_path), str(tmp_path / "ckpt"))
    assert rule(new, 3600.0) is None  # an empty history has room for a pack of about 4 MiB
    monkeypatch.setattr("rstn.history.HISTORY_LIMIT_MIB", 3.0)
    after = packs_in_progress_mib(tmp_path) + pack_cost_mib(new)
    assert 3.0 < after and rule(new, 3600.0) == (
        f"its resume pack (about {pack_cost_mib(new):.0f} MiB of history) would take the repository's history to "
        f"about {after:.0f} MiB, over its 3 (every committed pack stays in it)")
    assert rule(new, 300 * 60.0) is None  # a budget that sees it to max_epochs leaves no pack
    assert rule(paused, 3600.0) is None  # a run that resumes is never held back


def test_a_lane_passes_over_a_new_run_the_budget_left_is_too_short_for(tmp_path, capsys):
    from rstn.runlist import RunNotStarted, describe_outcomes, train_configs

    configs = [run_config(r, "smoke", 0, **TINY) for r in ("ffn-spn-d4", "rnn-spn-d4")]
    why = {"ffn-spn-d4": "would start from epoch 0, which needs 2h of the budget", "rnn-spn-d4": None}
    seen = []
    outcomes = train_configs(configs, results_dir=tmp_path, progress="text", budget_s=3600.0,
                             why_not_start=lambda c, left_s: seen.append(left_s) or why[c.row])
    assert [getattr(o, "run_dir", None) and o.run_dir.parent.name for o in outcomes] == [None, "rnn-spn-d4"]
    assert "not started: ffn-spn-d4/seed0 would start from epoch 0, which needs 2h" in capsys.readouterr().out
    assert 3590 < seen[0] <= 3600 and seen[1] <= seen[0]  # asked with the budget left
    text, failed = describe_outcomes(outcomes, 60.0)  # the next run is tried; the one passed over is counted
    assert text.startswith("2 runs in 1m") and text.endswith(", 1 passed over, not started (the reasons above)")
    assert failed == 0 and isinstance(outcomes[0], RunNotStarted)
    assert not (tmp_path / "smoke" / "ffn-spn-d4").exists()


def test_no_new_runs_trains_only_the_runs_in_progress(tmp_path, capsys):
    from rstn.cli import main
    from rstn.queue import held_back

    configs = [run_config(r, "smoke", 0, **(TINY | {"max_epochs": 10})) for r in ("ffn-spn-d4", "rnn-spn-d4")]
    train_run(configs[1], results_dir=tmp_path, progress="none", data=synthetic_data(n=40), deadline=1e-9)
    assert held_back(configs, tmp_path, None) == ([], configs)  # in progress, but nothing to resume from
    (tmp_path / "smoke" / "rnn-spn-d4" / "seed0" / PACK_NAME).write_bytes(b"a pack")
    assert held_back(configs, tmp_path, None) == ([configs[1]], [configs[0]])
    text = describe_plan([], 60.0, not_started=configs)
    assert "  no run in progress" in text and \
        "not started (--no-new-runs): 2 run(s) not in progress, from ffn-spn-d4/seed0 on" in text
    assert main(["train", "--row", "rnn-spn-d4", "--no-new-runs"]) == 2
    assert "--no-new-runs goes with --cpu-queue" in capsys.readouterr().err
