"""The book runner (rstn.book, `rstn replicate`, `rstn chapters`): the one skip decision, a run of another
profile leaves book/ as it is, "reproduce" says what it skipped, and a failed chapter fails loudly and keeps
its last good page.

The runner tests work in a temporary copy of the repository's layout (notebooks/, results/, book/) with
real chapters and the smoke profile; nothing trains.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import nbformat
import pytest

from rstn import book, cli, experiments, worktree
from rstn.results import RUN_FILE, ResultsError, read_run, write_run
from rstn.runs import is_finished, train_run

ROOT = Path(__file__).resolve().parent.parent
ROW = book.HEADLINE_ROW


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _finished_record(results: Path, config: experiments.RunConfig) -> Path:
    """A committed run.json of `config`'s row, copied under `results` and made current (its config is
    `config`): a finished run without training one."""
    source = ROOT / "results" / "smoke" / config.row / f"seed{config.seed}" / RUN_FILE
    target = experiments.run_dir(results, config.profile, config.row, config.seed) / RUN_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    record = dataclasses.replace(read_run(source), profile=config.profile, config=config.to_dict())
    write_run(target, record)
    shutil.copy(source.with_name("attention.npz"), target.with_name("attention.npz"))
    return target


@pytest.fixture
def repo(tmp_path):
    """A copy of the repository's layout: the training notebook and the results chapter, all results,
    the committed pages of those two, and the committed smoke run of the headline row, made current."""
    (tmp_path / "notebooks").mkdir()
    for name in (book.TRAINING, "04-results"):
        shutil.copy(ROOT / "notebooks" / f"{name}.md", tmp_path / "notebooks")
    shutil.copytree(ROOT / "results", tmp_path / "results")
    (tmp_path / "book" / "runs").mkdir(parents=True)
    for name in (book.TRAINING, "04-results"):
        shutil.copy(ROOT / "book" / f"{name}.ipynb", tmp_path / "book")
    run = f"{book.TRAINING}-smoke-{ROW}-seed0.ipynb"
    shutil.copy(ROOT / "book" / "runs" / run, tmp_path / "book" / "runs" / run)
    (tmp_path / "tests").mkdir()
    _finished_record(tmp_path / "results", experiments.run_config(ROW, "smoke", 0))
    return tmp_path


def test_is_finished_needs_a_readable_finished_record_with_the_same_config(tmp_path):
    config = experiments.run_config(ROW, "smoke", 0)
    assert not is_finished(config, tmp_path)  # no run.json
    path = _finished_record(tmp_path, config)
    assert is_finished(config, tmp_path)
    assert not is_finished(experiments.run_config(ROW, "smoke", 0, lr=1e-3), tmp_path)  # another config
    assert not is_finished(experiments.run_config(ROW, "smoke", 1), tmp_path)  # another seed
    record = json.loads(path.read_text())
    path.write_text(json.dumps(record | {"status": "diverged"}))
    assert not is_finished(config, tmp_path)
    path.write_text("{ not json")
    assert not is_finished(config, tmp_path)


def test_train_run_skips_what_is_finished_and_stops_at_an_unreadable_record(tmp_path, capsys):
    config = experiments.run_config(ROW, "smoke", 0)
    path = _finished_record(tmp_path, config)
    result = train_run(config, results_dir=tmp_path, progress="text", data=None)  # data would be needed to train
    assert result.skipped and "skip smoke/rnn-spn-d2/seed0: finished with the same config" in capsys.readouterr().out
    path.write_text("{ not json")
    with pytest.raises(ResultsError, match="not readable JSON.*--force"):  # nothing is overwritten unasked
        train_run(config, results_dir=tmp_path, progress="text", data={}, build_model=_refuse)
    assert path.read_text() == "{ not json"
    with pytest.raises(RuntimeError, match="stop here"):  # --force goes on to train: the model is built
        train_run(config, results_dir=tmp_path, progress="text", data={}, force=True, build_model=_refuse)


def _refuse(model_config):
    raise RuntimeError("stop here")


def test_the_book_shows_the_best_profile_with_results(tmp_path):
    assert book.BOOK_PROFILE == experiments.BEST == "best" and book.book_profile(tmp_path) is None
    _finished_record(tmp_path, experiments.run_config(ROW, "smoke", 0))
    assert book.book_profile(tmp_path) == "smoke" and book.writes_book("smoke", tmp_path)
    _finished_record(tmp_path, experiments.run_config(ROW, "quick", 0))
    assert book.book_profile(tmp_path) == "quick"
    assert not book.writes_book("smoke", tmp_path) and not book.writes_book("smoke", tmp_path, training=True)
    assert not book.writes_book("paper", tmp_path)  # no paper results to show
    assert book.writes_book("paper", tmp_path, training=True)  # ... until it has trained
    assert book.target_dir(tmp_path, "smoke", False) == tmp_path / "_build" / "scratch" / "smoke"


def test_replicate_of_another_profile_leaves_book_untouched_and_says_what_it_skipped(repo, capsys):
    before = _tree_digest(repo / "book")
    report = book.replicate("smoke", rows=[ROW], root=repo)
    out = capsys.readouterr().out
    assert _tree_digest(repo / "book") == before, "a smoke run rewrote book/"
    scratch = repo / "_build" / "scratch" / "smoke"
    assert report.folder == scratch and "renders into _build/scratch/smoke/ and leaves book/ untouched" in out
    # nothing retrained, per row and in the summary
    assert report.outcomes[(ROW, 0)].status == "finished"
    assert f"[train 1/1] {ROW} seed 0 (smoke)\n  skip: finished with this config" in out
    assert "1 row already finished with this config: nothing retrained; FORCE=1 / --force retrains" in out
    # the scratch book: the training chapter (the committed run, re-pointed) and the results chapter
    assert {p.name for p in scratch.glob("*.ipynb")} == {f"{book.TRAINING}.ipynb", "04-results.ipynb"}
    assert not book.error_outputs(scratch)
    results_nb = nbformat.read(scratch / "04-results.ipynb", as_version=4)
    injected = [c.source for c in results_nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and 'profile = "smoke"' in injected[0] and 'results_dir = "../../../results"' in injected[0]


def test_summary_of_a_fresh_clone_says_nothing_was_retrained():
    report = book.ReplicateReport("quick", Path("book"))
    report.outcomes = {(row, 0): book.TrainingOutcome("finished", None) for row in experiments.ROWS}
    assert report.summary() == "9 rows already finished with this config: nothing retrained; FORCE=1 / --force retrains"
    report.outcomes[("conv-net", 0)] = book.TrainingOutcome("trained", None)
    assert report.summary(seeds=2) == "8 runs already finished with this config: 1 trained; FORCE=1 / --force retrains"


def test_a_failed_chapter_exits_non_zero_and_keeps_the_last_good_page(repo, monkeypatch, capsys):
    page = repo / "book" / "04-results.ipynb"
    good = page.read_bytes()
    (repo / "results" / "quick" / "conv-net" / "seed0" / RUN_FILE).write_text("{ corrupted")
    monkeypatch.chdir(repo)
    assert cli.main(["chapters", "04-results"]) == 1
    captured = capsys.readouterr()
    assert page.read_bytes() == good, "the failed execution replaced the page"
    message = [line for line in captured.err.splitlines() if "04-results failed:" in line]
    assert message and "ResultsError" in message[0] and "is not readable JSON" in message[0]
    assert "book/04-results.ipynb keeps its last good version" in captured.out
    assert not list((repo / "book").glob(".*partial")), "a temporary file was left in book/"


def test_error_outputs_finds_a_page_with_a_traceback(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 / 0", outputs=[
        nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="division by zero", traceback=[])])])
    nbformat.write(nb, tmp_path / "04-results.ipynb")
    nbformat.write(nbformat.v4.new_notebook(), tmp_path / "01-ok.ipynb")
    assert book.error_outputs(tmp_path) == {str(tmp_path / "04-results.ipynb"): "ZeroDivisionError: division by zero"}


def test_cli_has_replicate_and_chapters():
    parser = cli.build_parser()
    args = parser.parse_args(["replicate", "--profile", "smoke", "--seeds", "0", "1", "--force", "--into-book"])
    assert (args.profile, args.seeds, args.force, args.into_book) == ("smoke", [0, 1], True, True)
    args = parser.parse_args(["chapters", "04-results", "--profile", "quick"])
    assert args.names == ["04-results"] and args.func is cli._cmd_chapters
    assert cli.main(["chapters", "--profile", "fast"]) == 2


def test_rstn_chapters_shows_the_best_profile_by_default_and_reads_auto_as_best(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(book, "run_chapters", lambda names, profile, **kwargs: calls.append((names, profile)))
    assert cli.build_parser().parse_args(["chapters"]).profile == experiments.BEST
    assert cli.main(["chapters"]) == 0 and capsys.readouterr().err == ""
    assert cli.main(["chapters", "--profile", "auto"]) == 0
    assert "--profile auto is a deprecated alias of --profile best" in capsys.readouterr().err
    assert cli.main(["chapters", "04-results", "--profile", "quick"]) == 0
    assert calls == [([], "best"), ([], "auto"), (["04-results"], "quick")]


@pytest.mark.parametrize("profile", [None, "best", "auto"])
def test_the_books_own_choice_renders_into_book_under_each_of_its_names(repo, monkeypatch, profile):
    ran = []
    monkeypatch.setattr(book, "execute", lambda source, target, parameters: ran.append((target, parameters)))
    assert book.run_chapters(["04-results"], profile, root=repo, out=None) == [repo / "book" / "04-results.ipynb"]
    assert ran == [(repo / "book" / "04-results.ipynb", {})]  # no profile passed: each chapter picks the best


def test_one_chapter_with_parameters_of_ones_own_renders_apart_and_names_a_wrong_one(repo, capsys):
    before = _tree_digest(repo / "book")
    with pytest.raises(ValueError, match=r"04-results has no parameter rnn_row; its parameters: pipeline_profile, "
                                         r"profile, results_dir"):
        book.run_chapters(["04-results"], None, root=repo, parameters={"rnn_row": "rnn-spn-d4"})
    (page,) = book.run_chapters(["04-results"], None, root=repo, parameters={"pipeline_profile": "smoke"})
    assert page == repo / "_build" / "scratch" / "custom" / "04-results.ipynb"
    assert "parameters of your own: rendering into _build/scratch/custom/" in capsys.readouterr().out
    assert _tree_digest(repo / "book") == before  # the book keeps its own page
    assert "pipeline_profile = \"smoke\"" in "".join(c.source for c in nbformat.read(page, as_version=4).cells)


def test_replicate_keeps_a_record_of_another_config_and_says_what_differs(repo):
    config = experiments.run_config(ROW, "smoke", 0)
    path = experiments.run_dir(repo / "results", "smoke", ROW, 0) / RUN_FILE
    other = dataclasses.replace(read_run(path), config=experiments.run_config(ROW, "smoke", 0, lr=1e-3).to_dict())
    write_run(path, other)
    before = path.read_bytes()
    outcome = book.run_training(config, root=repo)
    assert outcome.status == "kept" and outcome.notebook is None
    assert "another config (train.lr 0.001 -> 0.0005); FORCE=1 / --force retrains it" in outcome.message
    assert path.read_bytes() == before
    report = book.ReplicateReport("smoke", repo / "book", {(ROW, 0): outcome})
    assert report.summary() == "1 row kept as made with another config (FORCE=1 / --force retrains)"


def _git(repo: Path, *args: str) -> None:
    import subprocess

    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


def test_uncommitted_runs_names_each_run_folder_git_does_not_hold(tmp_path):
    """The chapters warn when they draw on results a clean clone lacks: new, changed or deleted run files."""
    if shutil.which("git") is None:
        pytest.skip("needs git")
    results = tmp_path / "results"
    for run in ("paper/kept/seed0", "paper/changed/seed0", "paper/deleted/seed1"):
        (results / run).mkdir(parents=True)
        (results / run / RUN_FILE).write_text("{}\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "results")
    _git(tmp_path, "commit", "-qm", "results")
    assert worktree.uncommitted_runs(results) == []
    (results / "paper/changed/seed0" / RUN_FILE).write_text('{"epochs_run": 2}\n')
    (results / "paper/deleted/seed1" / RUN_FILE).unlink()
    (results / "paper/new/seed2").mkdir(parents=True)
    (results / "paper/new/seed2/train.log").write_text("epoch 0\n")
    (results / "README.md").write_text("not a run\n")
    assert worktree.uncommitted_runs(results) == ["paper/changed/seed0", "paper/deleted/seed1", "paper/new/seed2"]


def test_uncommitted_runs_is_empty_outside_git(tmp_path):
    (tmp_path / "results/paper/row/seed0").mkdir(parents=True)
    assert worktree.uncommitted_runs(tmp_path / "results") == []
    assert worktree.uncommitted_runs(tmp_path / "absent") == []
