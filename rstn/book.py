"""The book's notebooks, executed with papermill: the library behind `rstn replicate` and `rstn chapters`.

The sources are jupytext MyST markdown, ``notebooks/NN-name.md`` (no outputs in git). Each is read with
jupytext, given parameters through its ``parameters`` cell, and executed by papermill with the ``python3``
kernel into an .ipynb:

* the chapters: ``book/NN-name.ipynb`` (every source but the training notebook), the pages of the book and
  the regression baseline that nbval re-executes;
* the training runs: ``book/runs/03-training-<profile>-<row>-seed<k>.ipynb``, one per Table 1 row and seed;
  ``book/03-training.ipynb`` is a copy of the headline row's run (rnn-spn-d2, the paper's best row), the
  training chapter of the book.

**Which profile writes the book.** The book shows ``BOOK_PROFILE`` ("best", `rstn.experiments.BEST`): the
best profile that has results (paper, then quick, then smoke; `rstn.records.best_profile`). "auto", its
name before it had one, is a deprecated alias of it here (`rstn chapters --profile auto`); everywhere else
"auto" names the profile to train (paper on CUDA, else quick). A run of any other profile, e.g. a smoke check
while quick results exist, renders into a scratch folder, ``_build/scratch/<profile>/``, and leaves ``book/``
as it is, unless ``into_book=True`` (``--into-book``) asks for it (`target_dir`).

**A failed notebook keeps the last good page.** Every notebook executes into a temporary file that replaces
its page only when every cell ran; a failure raises `NotebookError` naming the notebook and the one-line
cause, and `error_outputs` finds pages that hold an error output anyway (the book build checks it).

A notebook runs with its output folder as the working directory, as nbval does when it re-executes
``book/*.ipynb``; paths handed to notebooks (``results_dir``, ``tests_dir``) are therefore relative to that
folder, and no absolute path ends up in a committed notebook. Only parameters that a notebook's parameters
cell assigns are passed to it. Papermill's timing metadata is stripped from the outputs, so re-executing a
notebook changes its file only where its outputs change (cell ids are derived from position and source, and
consecutive stream outputs are merged). Timeouts are per cell (nbclient's), which for the training
notebook, one long cell, is the time of the whole run: ``TRAINING_TIMEOUT_S`` by profile.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rstn.progress import counted
from rstn.worktree import warn_uncommitted

if TYPE_CHECKING:
    from rstn.experiments import RunConfig

TRAINING = "03-training"
HEADLINE_ROW = "rnn-spn-d2"  # the paper's best row: its run is the training chapter of the book
KERNEL = "python3"
# The profile the book is published from: the best profile that has results (`book_profile`). The name is
# rstn.experiments.BEST, not imported here because that module loads torch.
BOOK_PROFILE = "best"
# What run_chapters reads as the book's own choice: None, "best" and "auto", the deprecated alias that
# `rstn chapters --profile auto` used for it (in `rstn train` and `rstn replicate` auto is paper on CUDA, else quick).
BEST_ALIASES = (None, BOOK_PROFILE, "auto")
SCRATCH = Path("_build") / "scratch"  # where other profiles render: _build/scratch/<profile>/ (git-ignored)
CHAPTER_TIMEOUT_S = 900  # per cell; every chapter reads results and runs in well under a minute
# Per cell, i.e. for the whole training run (one cell). quick: 9 rows of ~2-3 min on 2 CPU cores.
TRAINING_TIMEOUT_S = {"smoke": 900, "quick": 3600, "paper": 3 * 24 * 3600}
# Papermill/nbclient metadata that records when and how long, not what: dropped from executed notebooks.
VOLATILE_NOTEBOOK_KEYS = ("start_time", "end_time", "duration", "exception", "input_path", "output_path",
                          "environment_variables")
# The kernel's own log (not the cells' output) goes to the terminal: at its default level it prints a
# warning about TCP transport on every start and "KeyboardInterrupt caught in kernel" when nbclient
# interrupts it on shutdown. Cell errors reach us through the notebook, not this log.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=CRITICAL"]


class NotebookError(RuntimeError):
    """One or more notebooks failed; ``failures`` maps each notebook's name to its one-line cause."""

    def __init__(self, failures: Mapping[str, str]):
        self.failures = dict(failures)
        super().__init__("\n".join(f"{name} failed: {cause}" for name, cause in self.failures.items()))


def repo_root() -> Path:
    """The checkout that holds notebooks/ and book/: the current directory if it has them, else the
    parent of the (editable) package."""
    for candidate in (Path.cwd(), Path(__file__).resolve().parent.parent):
        if (candidate / "notebooks").is_dir():
            return candidate
    raise FileNotFoundError("no notebooks/ folder in the current directory or next to the rstn package")


def sources(root: Path | None = None) -> list[Path]:
    """Every notebook source, notebooks/NN-*.md, in book order."""
    return sorted((root or repo_root()).joinpath("notebooks").glob("[0-9][0-9]-*.md"))


def chapter_names(root: Path | None = None) -> list[str]:
    """The non-training notebooks, in book order (e.g. 01-stn-theory)."""
    return [p.stem for p in sources(root) if p.stem != TRAINING]


def notebook_parameters(nb: Any) -> set[str]:
    """Names assigned in the cell tagged ``parameters`` (empty if there is none)."""
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            names = set()
            for node in ast.parse(cell.source).body:
                targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
                names |= {t.id for t in targets if isinstance(t, ast.Name)}
            return names
    return set()


def book_profile(results_dir: str | Path = "results") -> str | None:
    """The profile the book shows: the best (paper, quick, smoke) with any results; None if none has."""
    from rstn.records import best_profile

    return best_profile(results_dir)


def writes_book(profile: str, results_dir: str | Path = "results", *, training: bool = False) -> bool:
    """Whether a run of the resolved `profile` is what the book shows, i.e. may write book/.

    training: the run trains `profile` first, so its results will exist by the time the chapters run;
        it writes the book if `profile` is at least as good as the best profile with results now.
    """
    from rstn.experiments import DISPLAY_RANK

    current = book_profile(results_dir)
    if training:
        return current is None or DISPLAY_RANK.index(profile) <= DISPLAY_RANK.index(current)
    return profile == current


def _check_parameters(root: Path, names: Sequence[str], chosen: Mapping[str, Any]) -> None:
    """Every chosen parameter must be one that each named chapter declares (else it would be ignored)."""
    import jupytext

    for name in names if chosen else ():
        declared = notebook_parameters(jupytext.read(root / "notebooks" / f"{name}.md"))
        unknown = sorted(set(chosen) - declared)
        if unknown:
            raise ValueError(f"{name} has no parameter {', '.join(unknown)}; its parameters: "
                             f"{', '.join(sorted(declared)) or 'none'}")


def target_dir(root: Path, profile: str, in_book: bool) -> Path:
    """book/ for the book's own profile, else the scratch folder _build/scratch/<profile>/."""
    return root / "book" if in_book else root / SCRATCH / profile


def _stabilise(nb: Any) -> None:
    """Drop what changes between two executions of the same notebook but is not an output: papermill's
    timings, random cell ids (jupytext draws new ones on every read), and where a kernel happened to
    flush stdout (consecutive stream outputs are merged, as nbval and the book merge them anyway)."""
    meta = nb.metadata
    meta.pop("jupytext", None)  # the .ipynb is an output, not a jupytext pair of the source
    for key in VOLATILE_NOTEBOOK_KEYS:
        meta.get("papermill", {}).pop(key, None)
    for i, cell in enumerate(nb.cells):
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        cell["id"] = f"{i:03d}-{hashlib.sha1(cell.source.encode()).hexdigest()[:8]}"
        merged: list = []
        for output in cell.get("outputs", []):
            if (output["output_type"] == "stream" and merged and merged[-1]["output_type"] == "stream"
                    and merged[-1]["name"] == output["name"]):
                merged[-1]["text"] += output["text"]
            else:
                merged.append(output)
        if cell.cell_type == "code":
            cell.outputs = merged


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def execute(source: str | Path, output: str | Path, parameters: Mapping[str, Any] | None = None, *,
            timeout: int | None = CHAPTER_TIMEOUT_S, live: bool = False) -> Path:
    """Execute a MyST notebook into ``output`` (.ipynb) with its output folder as working directory.

    The notebook runs into a temporary file; ``output`` is replaced only when every cell ran, so a
    failure leaves the last good page in place.

    Args:
        source: notebooks/NN-name.md (jupytext MyST) or an .ipynb.
        output: the executed notebook to write; its folder is created.
        parameters: values for the parameters cell; names the cell does not assign are left out.
        timeout: per-cell limit in seconds (None: none).
        live: echo the cells' stdout/stderr to ours as they run (the training log); never figure reprs.

    Raises:
        NotebookError: a cell raised, timed out or the kernel died; ``output`` is untouched and the failed
            notebook is kept in a temporary folder that the message names.
    """
    import jupytext
    import nbformat
    import papermill
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    source, output = Path(source), Path(output)
    nb = jupytext.read(source)
    declared = notebook_parameters(nb)
    parameters = dict(parameters or {})
    output.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"rstn-{output.stem}-"))
    running = scratch / output.name
    try:
        papermill.execute_notebook(
            nb, str(running), parameters={k: v for k, v in parameters.items() if k in declared},
            kernel_name=KERNEL, progress_bar=False, log_output=False, cwd=str(output.parent),
            execution_timeout=timeout, extra_arguments=KERNEL_ARGUMENTS,
            stdout_file=sys.stdout if live else None, stderr_file=sys.stderr if live else None,
        )
    except papermill.PapermillExecutionError as err:
        cause = f"{err.ename}: {_one_line(err.evalue)}" if _one_line(err.evalue) else err.ename
        raise NotebookError({output.stem: f"{cause} (in cell [{err.exec_count}]; the failed notebook: "
                                          f"{running})"}) from None
    except (CellTimeoutError, DeadKernelError) as err:
        raise NotebookError({output.stem: f"{type(err).__name__}: {_one_line(err)}"}) from None
    executed = nbformat.read(running, as_version=4)
    _stabilise(executed)
    staged = output.with_name(f".{output.name}.partial")
    nbformat.write(executed, staged)
    os.replace(staged, output)
    shutil.rmtree(scratch, ignore_errors=True)
    return output


def error_outputs(folder: str | Path) -> dict[str, str]:
    """Executed notebooks under `folder` (recursively) that hold an error output: {path: one-line cause}.

    A page with a traceback must not be published: `make book` fails on any (tests/test_book_offline.py).
    """
    import nbformat

    found = {}
    for path in sorted(Path(folder).rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        for cell in nbformat.read(path, as_version=4).cells:
            errors = [o for o in cell.get("outputs", []) if o["output_type"] == "error"]
            if errors:
                found[str(path)] = f"{errors[0]['ename']}: {_one_line(errors[0]['evalue'])}"
                break
    return found


def _relative(path: Path, start: Path) -> str:
    return os.path.relpath(path.resolve(), start.resolve())


def _path_parameters(root: Path, folder: Path, results_dir: Path) -> dict[str, str]:
    """results_dir and tests_dir relative to the notebook's folder; none where it is the notebooks' own
    default (relative to book/), so that a run into book/ injects no parameters cell into the page."""
    paths = {"results_dir": results_dir, "tests_dir": root / "tests"}
    return {name: _relative(path, folder) for name, path in paths.items()
            if _relative(path, folder) != _relative(path, root / "book")}


def run_chapters(names: Sequence[str] | None = None, profile: str | None = BOOK_PROFILE, *,
                 root: Path | None = None, results_dir: str | Path = "results", into_book: bool = False,
                 announce: bool = True, out=None, parameters: Mapping[str, Any] | None = None) -> list[Path]:
    """Execute the chapters (all non-training notebooks by default), reading existing results.

    Args:
        profile: the results the chapters show. "best" (`BOOK_PROFILE`), None, or "auto" (a deprecated
            alias): the book's own choice, each chapter picking the best profile that has results, into
            book/. A profile other than the one the book shows renders into _build/scratch/<profile>/
            unless `into_book`.
        announce: say so when it renders into the scratch folder (replicate has said it already).
        parameters: values for the chapters' parameters cells (e.g. {"rnn_row": "rnn-spn-d4"}); every name
            must be a parameter of every chapter named. With them the pages render into
            _build/scratch/<profile or "custom">/ unless `into_book`: the book keeps its own choices.

    Returns:
        the executed notebooks.

    Raises:
        NotebookError: after trying every chapter, naming each that failed (its page is left as it was).
    """
    from rstn.mnist import mnist_path

    root, out = root or repo_root(), out or sys.stdout
    results = Path(results_dir) if Path(results_dir).is_absolute() else root / results_dir
    names = list(names) if names else chapter_names(root)
    for name in names:
        if not (root / "notebooks" / f"{name}.md").exists():
            raise FileNotFoundError(f"notebooks/{name}.md does not exist; chapters: {', '.join(chapter_names(root))}")
    chosen = dict(parameters or {})
    _check_parameters(root, names, chosen)
    profile = None if profile in BEST_ALIASES else profile
    in_book = into_book or (not chosen and (profile is None or writes_book(profile, results)))
    folder = target_dir(root, profile or ("custom" if chosen else BOOK_PROFILE), in_book)
    if not in_book and announce:
        why = "parameters of your own" if chosen else \
            f"profile {profile!r} is not the one the book shows ({book_profile(results)!r})"
        print(f"chapters: {why}: rendering into {_relative(folder, root)}/, book/ untouched (--into-book writes "
              "the book)", file=out, flush=True)
    if in_book:
        warn_uncommitted(results, root, out)
    # fetch MNIST here, if it is not there yet, so that no download message lands in a chapter's stderr
    mnist_path()
    parameters = _path_parameters(root, folder, results)
    if profile is not None and (not in_book or into_book):
        parameters["profile"] = profile  # the book's own run leaves it None: the chapters pick the best
    parameters |= chosen
    done, failures = [], {}
    for i, name in enumerate(names, 1):
        target = folder / f"{name}.ipynb"
        print(f"[{i}/{len(names)}] {name} -> {_relative(target, root)}", file=out, flush=True)
        start = time.perf_counter()
        try:
            execute(root / "notebooks" / f"{name}.md", target, parameters)
        except NotebookError as err:
            failures.update(err.failures)
            print(f"  FAILED: {err.failures[name]}; {_relative(target, root)} keeps its last good version",
                  file=out, flush=True)
            continue
        print(f"  done in {time.perf_counter() - start:.0f} s", file=out, flush=True)
        done.append(target)
    if failures:
        raise NotebookError(failures)
    return done


def run_path(folder: Path, profile: str, row: str, seed: int) -> Path:
    """Where the executed training notebook of (profile, row, seed) is kept under `folder` (book/, or a
    scratch folder)."""
    return folder / "runs" / f"{TRAINING}-{profile}-{row}-seed{seed}.ipynb"


@dataclass
class TrainingOutcome:
    """What `run_training` did: 'trained', 'finished' (nothing retrained), 'kept' (a record of another
    config, left as it is) or 'failed'."""

    status: str
    notebook: Path | None
    message: str = ""


def run_training(config: RunConfig, *, device: str | None = None, force: bool = False, output: str | Path | None = None,
                 root: Path | None = None, results_dir: str | Path = "results", timeout: int | None = None,
                 also_look_in: Iterable[Path] = ()) -> TrainingOutcome:
    """Train one run (a resolved `rstn.experiments.RunConfig`) through the training notebook.

    A run that `rstn.runs.is_finished` says is done is not trained again (unless `force`); if its
    executed notebook exists (at `output` or at the same name in a folder of `also_look_in`), nothing
    runs at all, else the notebook runs and loads the results. The training log is echoed live.
    """
    from rstn import experiments, records
    from rstn.mnist import mnist_path
    from rstn.runs import is_finished

    root = root or repo_root()
    output = Path(output) if output is not None else run_path(root / "book", config.profile, config.row,
                                                              config.seed)
    results = Path(results_dir) if Path(results_dir).is_absolute() else root / results_dir
    record_path = experiments.run_dir(results, config.profile, config.row, config.seed) / records.RUN_FILE
    if not force and record_path.exists():
        try:
            changes = experiments.config_differences(records.read_run(record_path).config, config.to_dict())
        except records.ResultsError:
            changes = []  # the training notebook's train_run names the corrupt file
        if changes:  # never replaced without --force (rstn.runs.ConfigChangedError)
            return TrainingOutcome("kept", None, f"kept: its record was made with another config "
                                                 f"({experiments.describe_differences(changes)}); FORCE=1 / "
                                                 "--force retrains it")
    finished = not force and is_finished(config, results)
    existing = [p for p in (output, *(Path(f) / "runs" / output.name for f in also_look_in)) if p.exists()]
    if finished and existing:
        error = records.read_run(experiments.run_dir(results, config.profile, config.row, config.seed)
                                 / records.RUN_FILE).test_error
        return TrainingOutcome("finished", existing[0], f"skip: finished with this config (test error "
                                                        f"{100 * error:.2f}%), nothing retrained")
    mnist_path()  # a download, if any, reports here and not in the notebook's stderr
    try:
        execute(root / "notebooks" / f"{TRAINING}.md", output,
                {"row": config.row, "profile": config.profile, "seed": config.seed, "device": device,
                 "force": force, "results_dir": _relative(results, output.parent)},
                timeout=timeout if timeout is not None else TRAINING_TIMEOUT_S[config.profile], live=True)
    except NotebookError as err:
        return TrainingOutcome("failed", None, next(iter(err.failures.values())))
    if finished:
        return TrainingOutcome("finished", output, "finished with this config: nothing retrained, notebook written")
    return TrainingOutcome("trained", output, "trained")


def copy_run(run: Path, target: Path, results: Path) -> None:
    """Copy an executed training notebook to another folder, with its injected ``results_dir`` made
    relative to the new folder, so that the copy still runs where it lies."""
    import nbformat

    nb = nbformat.read(run, as_version=4)
    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.source = re.sub(r'^results_dir = .*$', f'results_dir = "{_relative(results, target.parent)}"',
                                 cell.source, flags=re.M)
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)


@dataclass
class ReplicateReport:
    """What `replicate` did, run by run, and where it rendered."""

    profile: str
    folder: Path
    outcomes: dict[tuple[str, int], TrainingOutcome] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes.values())

    def summary(self, seeds: int = 1) -> str:
        """One line, e.g. "9 rows already finished with this config: nothing retrained; FORCE=1 / --force
        retrains" (runs, not rows, with several seeds)."""
        def runs(n: int) -> str:
            return counted(n, 'row' if seeds == 1 else 'run')

        trained, finished, failed = self.count("trained"), self.count("finished"), self.count("failed")
        kept = self.count("kept")
        parts = []
        if finished:
            parts.append(f"{runs(finished)} already finished with this config: "
                         + ("nothing retrained" if not trained else f"{trained} trained")
                         + "; FORCE=1 / --force retrains")
        elif trained:
            parts.append(f"{runs(trained)} trained")
        if kept:
            parts.append(f"{runs(kept)} kept as made with another config (FORCE=1 / --force retrains)")
        if failed:
            parts.append(f"{failed} failed")
        return "; ".join(parts) or "nothing to run"


def replicate(profile: str = "auto", seeds: Iterable[int] = (0,), *, force: bool = False,
              device: str | None = None, rows: Sequence[str] | None = None, root: Path | None = None,
              into_book: bool = False, out=None) -> ReplicateReport:
    """Data, then every Table 1 row x seed through the training notebook, then the chapters.

    Writes book/ when `profile` resolves to what the book shows (`writes_book`) or `into_book`; else
    renders into _build/scratch/<profile>/. The book build is left to the caller (`make replicate`).

    Raises:
        NotebookError: a run or a chapter failed (after every run and chapter was tried).
    """
    from rstn import experiments
    from rstn.data import cache_path, load_sequences

    root, out = root or repo_root(), out or sys.stdout
    results = root / "results"
    resolved = experiments.resolve_profile(profile, device).name
    rows = list(rows) if rows else list(experiments.ROWS)
    seeds = list(seeds)
    configs = [experiments.run_config(row, resolved, seed, device=device) for row in rows for seed in seeds]
    in_book = into_book or writes_book(resolved, results, training=True)
    folder = target_dir(root, resolved, in_book)
    report = ReplicateReport(resolved, folder)
    print(f"replicate: profile {resolved!r} ({experiments.PROFILES[resolved].description}), "
          f"{len(rows)} row{'s' if len(rows) != 1 else ''} x seeds {seeds} -> {_relative(folder, root)}/",
          file=out, flush=True)
    if not in_book:
        print(f"  the book shows {book_profile(results)!r}: {resolved!r} renders into "
              f"{_relative(folder, root)}/ and leaves book/ untouched (--into-book writes the book)",
              file=out, flush=True)
    start = time.perf_counter()
    data = configs[0]
    print(f"[data] {data.data.n_train:,}/{data.data.n_valid:,}/{data.data.n_test:,} sequences, "
          f"cache {cache_path(data.data, data.data_seed)}", file=out, flush=True)
    load_sequences(data.data, seed=data.data_seed)
    for i, config in enumerate(configs, 1):
        name = f"{config.row} seed {config.seed} ({resolved})"
        print(f"[train {i}/{len(configs)}] {name}", file=out, flush=True)
        outcome = run_training(config, device=device, force=force, root=root,
                               output=run_path(folder, config.profile, config.row, config.seed),
                               also_look_in=[] if in_book else [root / "book"])
        report.outcomes[(config.row, config.seed)] = outcome
        print(f"  {'FAILED: ' if outcome.status == 'failed' else ''}{outcome.message}", file=out, flush=True)
    print(f"[train] {report.summary(len(seeds))}", file=out, flush=True)
    headline = report.outcomes.get((HEADLINE_ROW, seeds[0]))
    if headline is not None and headline.notebook is not None:
        copy_run(headline.notebook, folder / f"{TRAINING}.ipynb", results)
        print(f"[book] {_relative(folder / f'{TRAINING}.ipynb', root)} <- {_relative(headline.notebook, root)}",
              file=out, flush=True)
    failures = {f"{TRAINING} {row} seed {seed}": o.message for (row, seed), o in report.outcomes.items()
                if o.status == "failed"}
    try:
        run_chapters(profile=None if in_book and not into_book else resolved, root=root, into_book=into_book,
                     announce=False, out=out)
    except NotebookError as err:
        failures.update(err.failures)
    print(f"replicate: done in {time.perf_counter() - start:.0f} s; {report.summary(len(seeds))}"
          + (f"; rendered into {_relative(folder, root)}/" if not in_book else ""), file=out, flush=True)
    if failures:
        raise NotebookError(failures)
    return report
