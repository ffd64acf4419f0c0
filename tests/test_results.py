"""The run record (run.json): its schema checks, reading and writing, and Table 1 from the records."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest

from rstn.experiments import run_config
from rstn.results import (
    ResultsError,
    RunRecord,
    default_table_profile,
    format_table,
    load_runs,
    load_table,
    read_run,
    run_facts_rows,
    write_run,
)

HISTORY = [{"epoch": 0, "lr": 5e-4, "dropout": 0.0, "train_loss": 2.0, "train_error": 0.8, "grad_norm": 1.0,
            "valid_error": 0.5, "valid_sequence_error": 0.9, "test_error": 0.4, "test_sequence_error": 0.8,
            "time_s": 1.0}]


def make_record(**changes) -> RunRecord:
    config = run_config("rnn-spn-d4", "smoke", seed=0).to_dict()
    record = RunRecord(
        row="rnn-spn-d4", profile="smoke", seed=0, status="finished", config=config,
        git={"commit": "abc", "dirty": False}, device="cpu (2 cores, 2 threads)", torch_version="2.13.0",
        python_version="3.11.7", backends={}, started_at="2026-11-24T00:00:00+00:00",
        updated_at="2026-11-24T00:01:00+00:00", wall_time_s=60.0, epochs_run=1, best_epoch=0,
        stop_reason="max_epochs", final={k: HISTORY[0][k] for k in ("epoch", "train_loss", "valid_error",
                                                                      "valid_sequence_error", "test_error",
                                                                      "test_sequence_error")},
        history=copy.deepcopy(HISTORY), sessions=[{"commit": "abc", "first_epoch": 0, "epochs": 1}])
    return dataclasses.replace(record, **changes)


def test_round_trip(tmp_path):
    record = make_record()
    write_run(tmp_path / "run.json", record)
    assert read_run(tmp_path / "run.json") == record
    assert RunRecord.from_json(record.to_json()) == record


def test_a_running_record_may_have_no_epoch_yet():
    assert make_record(status="running", stop_reason=None, epochs_run=0, history=[], best_epoch=None,
                       final=None).problems() == []
    assert make_record(status="running", stop_reason="time_budget").problems() == []


def _mutations():
    def setter(path, value):
        def f(r):
            target = r
            for k in path[:-1]:
                target = target[k]
            target[path[-1]] = value
        return f

    return [
        (lambda r: r.pop("final"), "missing key 'final'"),
        (setter(("surprise",), 1), "unknown key 'surprise'"),
        (setter(("seed",), "0"), "'seed' is '0', expected int"),
        (setter(("seed",), True), "'seed' is True, expected int"),
        (setter(("status",), "done"), "status 'done' is not one of running, finished, diverged"),
        (setter(("stop_reason",), "time_budget"), "stop_reason 'time_budget' does not fit status 'finished'"),
        (setter(("row",), "rnn-spn-d9"), "row 'rnn-spn-d9' is not one of rnn-spn-d1"),
        (setter(("final", "test_error"), 1.7), "final.test_error is 1.7, expected a number in [0, 1]"),
        (setter(("epochs_run",), 5), "epochs_run is 5 but history has 1 epochs"),
        (setter(("history", 0, "epoch"), 3), "history[0] has epoch 3, expected 0"),
        (lambda r: r["history"][0].pop("valid_error"), "history[0] lacks ['valid_error']"),
        (setter(("config", "seed"), 7), "config.seed = 7 but seed = 0"),
        (setter(("best_epoch",), 4), "best_epoch 4 is outside the 1 epochs run"),
        (setter(("schema_version",), 1), "schema_version 1 is not 2"),
        (setter(("final",), None), "a finished run needs 'final' metrics"),
    ]


@pytest.mark.parametrize("mutate, message", _mutations())
def test_malformed_record_names_the_file_and_the_problem(tmp_path, mutate, message):
    raw = dataclasses.asdict(make_record())
    mutate(raw)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ResultsError) as err:
        read_run(path)
    assert str(path) in str(err.value) and message in str(err.value) and "--force" in str(err.value)


def test_invalid_records_are_never_written(tmp_path):
    with pytest.raises(ResultsError, match="refusing to write an invalid run record: 'seed' is '1'"):
        write_run(tmp_path / "run.json", make_record(seed="1"))
    assert not (tmp_path / "run.json").exists()


def test_unreadable_and_misplaced_records(tmp_path):
    bad = tmp_path / "smoke" / "conv-net" / "seed0" / "run.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    with pytest.raises(ResultsError, match=f"{bad} is not readable JSON"):
        load_runs("smoke", tmp_path)
    write_run(bad, make_record())  # an rnn-spn-d4 record in the conv-net folder
    with pytest.raises(ResultsError, match="holds profile/row/seed .*rnn-spn-d4.* but its folder says"):
        load_runs("smoke", tmp_path)


def test_table_mean_and_std_over_seeds_and_runs_in_progress(tmp_path):
    for seed, error in ((0, 0.02), (1, 0.04), (2, 0.03)):
        record = make_record(seed=seed)
        record.config["seed"] = seed
        record.final["test_error"] = error
        write_run(tmp_path / "smoke" / "rnn-spn-d4" / f"seed{seed}" / "run.json", record)
    running = make_record(row="ffn-spn-d4", status="running", stop_reason="time_budget",
                          config=run_config("ffn-spn-d4", "smoke", seed=0).to_dict())
    write_run(tmp_path / "smoke" / "ffn-spn-d4" / "seed0" / "run.json", running)
    table = {r.row: r for r in load_table("smoke", tmp_path)}
    mine = table["rnn-spn-d4"]
    assert mine.seeds == (0, 1, 2) and mine.mean == pytest.approx(3.0) and mine.std == pytest.approx(1.0)
    assert table["rnn-spn-d1"].n_seeds == 0 and table["rnn-spn-d1"].mean is None
    assert table["ffn-spn-d4"].n_seeds == 0 and table["ffn-spn-d4"].best_so_far == running
    text = format_table(list(table.values()))
    assert "profile 'smoke'" in text and "3.00 ± 1.00" in text
    line = next(s for s in text.splitlines() if s.startswith("rnn-spn-d4"))
    assert " 2.3 " in line and " 3 " in line and "cpu (2 cores" in line
    line = next(s for s in text.splitlines() if s.startswith("ffn-spn-d4"))
    assert "in progress: 40.00 at epoch 0, 1 epoch so far" in line
    assert default_table_profile(tmp_path) == "smoke"


def test_headline_rows_show_finished_in_progress_and_missing_rows(tmp_path):
    from rstn.results import HEADLINE_COLUMNS, headline_rows, markdown_table

    write_run(tmp_path / "smoke" / "rnn-spn-d4" / "seed0" / "run.json", make_record())
    running = make_record(row="ffn-spn-d4", status="running", stop_reason=None,
                          config=run_config("ffn-spn-d4", "smoke", seed=0).to_dict())
    write_run(tmp_path / "smoke" / "ffn-spn-d4" / "seed0" / "run.json", running)
    rows = {r[0]: r for r in headline_rows(load_table("smoke", tmp_path))}
    # 40 % on the smoke profile's 300 test digits: SE 2.83 points; against the paper's 2.3 % (SE 0.087, on
    # 30,000 digits): 37.70 / 2.83 = 13.3 SE
    assert rows["rnn-spn-d4"][1:] == ["2.3", "40.00 ± 2.83", "+37.70, worse (13.3 SE)", "40.00", "finished", "1"]
    # one epoch in progress: best so far, marked, and not compared before epoch 32
    assert rows["ffn-spn-d4"][2:6] == ["40.00 ± 2.83 so far", "—", "40.00", "in progress (best epoch 0)"]
    assert rows["conv-net"][2] == "not run yet (needs a GPU)" == rows["rnn-spn-d1"][2]
    assert rows["rnn-spn-d3"][2] == "not run yet (queued on the CPU)"
    text = markdown_table(HEADLINE_COLUMNS, rows.values())
    assert text.splitlines()[0].startswith("| row | paper (%) |") and len(text.splitlines()) == 11


def test_headline_summary_says_which_rows_match_the_paper_and_what_the_rest_wait_for(tmp_path):
    from rstn.results import headline_summary

    write_run(tmp_path / "smoke" / "rnn-spn-d4" / "seed0" / "run.json", make_record())  # 40 % against 2.3 %
    near = make_record(row="rnn-spn-d3", config=run_config("rnn-spn-d3", "smoke", seed=0).to_dict())
    near.final["test_error"] = 0.0185  # 1.85 % against 1.8 %: 0.05 points, well within 2 SE (0.22)
    write_run(tmp_path / "smoke" / "rnn-spn-d3" / "seed0" / "run.json", near)
    running = make_record(row="ffn-spn-d4", status="running", stop_reason=None,
                          config=run_config("ffn-spn-d4", "smoke", seed=0).to_dict())
    write_run(tmp_path / "smoke" / "ffn-spn-d4" / "seed0" / "run.json", running)
    assert headline_summary(load_table("smoke", tmp_path)) == (
        "Of Table 1's 9 rows, 2 have finished: 1 matches the paper within 2 standard errors of the difference "
        "(rnn-spn-d3), 0 are better and 1 worse (rnn-spn-d4); 1 is in progress and 6 have no run yet; one seed "
        "per row, so the standard errors are the test set's alone.")
    second = make_record(seed=1, config=run_config("rnn-spn-d4", "smoke", seed=1).to_dict())
    write_run(tmp_path / "smoke" / "rnn-spn-d4" / "seed1" / "run.json", second)
    assert headline_summary(load_table("smoke", tmp_path)).endswith("up to 2 seeds per row.")
    assert headline_summary(load_table("smoke", tmp_path / "none")) == (
        "Of Table 1's 9 rows, 0 have finished; 0 are in progress and 9 have no run yet; one seed per row, so the "
        "standard errors are the test set's alone.")


def test_headline_rows_name_a_run_with_no_epoch_yet_and_a_diverged_row(tmp_path):
    """A run the budget paused inside its first epoch, or one that diverged, is not "not run yet"."""
    from rstn.results import headline_rows

    started = make_record(row="rnn-spn-d3", status="running", stop_reason="time_budget", epochs_run=0, history=[],
                          best_epoch=None, final=None, config=run_config("rnn-spn-d3", "smoke", seed=0).to_dict())
    write_run(tmp_path / "smoke" / "rnn-spn-d3" / "seed0" / "run.json", started)
    diverged = make_record(row="ffn-spn-d3", status="diverged", stop_reason="non_finite_loss", error="loss is nan",
                           config=run_config("ffn-spn-d3", "smoke", seed=0).to_dict())
    write_run(tmp_path / "smoke" / "ffn-spn-d3" / "seed0" / "run.json", diverged)
    rows = {r[0]: r for r in headline_rows(load_table("smoke", tmp_path))}
    assert rows["rnn-spn-d3"][2] == "in progress: no epoch finished yet"
    assert rows["ffn-spn-d3"][2] == "diverged (1 run; see the run facts)"
    assert rows["rnn-spn-d2"][2] == "not run yet (queued on the CPU)"


def test_runs_with_another_config_than_the_profiles_are_marked(tmp_path):
    """A run trained with --set overrides (or before a change of the defaults) is not the profile's number."""
    from rstn.results import headline_rows

    write_run(tmp_path / "smoke" / "rnn-spn-d4" / "seed0" / "run.json", make_record())
    other = make_record(row="ffn-spn-d4", config=run_config("ffn-spn-d4", "smoke", seed=0, lr=1e-3).to_dict())
    write_run(tmp_path / "smoke" / "ffn-spn-d4" / "seed0" / "run.json", other)
    table = {r.row: r for r in load_table("smoke", tmp_path)}
    assert table["rnn-spn-d4"].other_config == () and table["ffn-spn-d4"].other_config == (other,)
    rows = {r[0]: r for r in headline_rows(list(table.values()))}
    assert rows["rnn-spn-d4"][5] == "finished"
    assert rows["ffn-spn-d4"][5].startswith("finished; another config than the profile's")
    line = next(s for s in format_table(list(table.values())).splitlines() if s.startswith("ffn-spn-d4"))
    assert "1 made with another config than the profile's" in line


def test_replace_marked_table_swaps_only_what_lies_between_the_marks():
    from rstn.results import README_TABLE_END, README_TABLE_MARK, replace_marked_table

    text = f"# title\n\nbefore\n{README_TABLE_MARK}\n| a |\n|---|\n| 1 |\n\nold summary\n{README_TABLE_END}\nafter\n"
    block = "| a |\n|---|\n| 2 |\n| 3 |\n\nnew summary"
    updated = replace_marked_table(text, block)
    assert updated == f"# title\n\nbefore\n{README_TABLE_MARK}\n{block}\n{README_TABLE_END}\nafter\n"
    assert replace_marked_table(updated, block) == updated
    with pytest.raises(ValueError, match="no line"):
        replace_marked_table("# no mark\n", "| a |")
    with pytest.raises(ValueError, match="to end the table at"):
        replace_marked_table(f"{README_TABLE_MARK}\n| a |\n", "| a |")


def test_the_readme_shows_table_1_of_the_committed_results():
    """The README's results block (verdict, claims, Table 1) is `rstn table --profile paper --markdown` of
    results/ as committed (`make notebooks` rewrites it; `rstn table --profile paper --write-readme README.md`
    alone)."""
    from rstn.claims import markdown_report
    from rstn.results import replace_marked_table

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    table = markdown_report(load_table("paper", root / "results"), root / "results")
    assert replace_marked_table(readme, table) == readme, \
        "README's Table 1 is out of date: run `rstn table --profile paper --write-readme README.md`"


def test_best_is_the_best_profile_with_results_and_what_rstn_table_shows_by_default(tmp_path, capsys):
    """`best` (rstn.experiments.BEST) is the first of paper, quick, smoke that has results, paper where none
    has; a profile named is itself. `rstn table` shows it by default, as `--profile best` does."""
    from rstn import cli
    from rstn.experiments import BEST
    from rstn.records import best_profile, display_profile

    assert best_profile(tmp_path) is None and display_profile(BEST, tmp_path) == "paper"  # the one fallback
    write_run(tmp_path / "smoke" / "rnn-spn-d4" / "seed0" / "run.json", make_record())
    assert best_profile(tmp_path) == "smoke" == display_profile(BEST, tmp_path) == display_profile(None, tmp_path)
    assert display_profile("quick", tmp_path) == "quick"  # named: itself, results or not
    assert display_profile(BEST, tmp_path, has=lambda folder: folder.name == "quick") == "quick"
    assert display_profile(BEST, tmp_path, has=lambda folder: False) == "paper"
    assert load_table(BEST, tmp_path)[0].profile == load_table(None, tmp_path)[0].profile == "smoke"
    quick = make_record(profile="quick", config=run_config("rnn-spn-d4", "quick", seed=0).to_dict())
    write_run(tmp_path / "quick" / "rnn-spn-d4" / "seed0" / "run.json", quick)
    assert display_profile(BEST, tmp_path) == "quick"  # quick ranks above smoke
    shown = []
    for argv in (["table"], ["table", "--profile", "best"], ["table", "--profile", "quick"]):
        assert cli.main([*argv, "--results-dir", str(tmp_path)]) == 0
        shown.append(capsys.readouterr().out)
    assert shown[0] == shown[1] == shown[2] and "profile 'quick'" in shown[0]
    assert default_table_profile(tmp_path) == "quick"  # the older name of the same rule


def test_markdown_table_escapes_pipes_in_cells():
    from rstn.results import markdown_table

    assert markdown_table(["a", "b"], [["x|y", "z"]]).splitlines()[2] == "| x\\|y | z |"


def test_write_readme_takes_the_paper_profile_only(tmp_path):
    from rstn import cli

    readme = tmp_path / "README.md"
    readme.write_text("x\n")
    assert cli.main(["table", "--profile", "quick", "--write-readme", str(readme)]) == 2
    assert readme.read_text() == "x\n"


def test_run_facts_name_commits_and_processors():
    """A run resumed on two processors and two commits says so; an older record without processors does not."""
    sessions = [{"commit": "abc", "dirty": False, "processor": "Intel(R) Xeon(R) Processor", "epochs": 1},
                {"commit": "def", "dirty": True, "processor": "AMD EPYC 7B13", "epochs": 1}]
    resumed = make_record(git={"commit": "def", "dirty": True}, sessions=sessions)
    (row,) = run_facts_rows([resumed])
    assert row[-1] == "def+ (2 commits)"
    assert row[-2] == "cpu (2 cores, 2 threads); AMD EPYC 7B13; Intel(R) Xeon(R) Processor"
    (old,) = run_facts_rows([make_record()])
    assert old[-2] == "cpu (2 cores, 2 threads)" and old[-1] == "abc"
    lanes = [{"commit": "abc", "dirty": False, "device": "cpu (2 cores, 2 threads)", "cpu": "A", "epochs": 1},
             {"commit": "abc", "dirty": False, "device": "cpu (2 cores, 1 threads)", "cpu": "A", "lanes": 2,
              "epochs": 1}]
    (side_by_side,) = run_facts_rows([make_record(sessions=lanes, device="cpu (2 cores, 1 threads)")])
    assert side_by_side[-2] == "cpu (2 cores, 2 threads); cpu (2 cores, 1 threads, 2 lanes); A"


def test_a_run_in_bf16_is_its_row_labelled_as_a_deviation_not_another_config(tmp_path):
    from rstn.results import headline_rows

    bf16 = make_record(row="rnn-spn-d1", config=run_config("rnn-spn-d1", "smoke", seed=0, bf16=True).to_dict())
    write_run(tmp_path / "smoke" / "rnn-spn-d1" / "seed0" / "run.json", bf16)
    table = {r.row: r for r in load_table("smoke", tmp_path)}
    assert table["rnn-spn-d1"].bf16 == (bf16,) and table["rnn-spn-d1"].other_config == ()
    assert table["rnn-spn-d1"].n_seeds == 1  # it counts as the row's own result
    row = {r[0]: r for r in headline_rows(list(table.values()))}["rnn-spn-d1"]
    assert row[5] == "finished; bf16 (deviation)"
