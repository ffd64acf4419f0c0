"""Execute the book's notebooks with papermill: what `make replicate` and `make notebooks` run.

The sources are jupytext MyST markdown, ``notebooks/NN-name.md`` (no outputs in git). Each is read with
jupytext, given parameters through its ``parameters`` cell, and executed by papermill with the ``python3``
kernel into an .ipynb:

* the chapters: ``book/NN-name.ipynb`` (every source but the training notebook), the pages of the book and
  the regression baseline that nbval re-executes;
* the training runs: ``book/runs/03-training-<profile>-<row>-seed<k>.ipynb``, one per Table 1 row and seed;
  ``book/03-training.ipynb`` is a copy of the headline row's run (rnn-spn-d2, the paper's best row), the
  training chapter of the book.

A notebook runs with its output folder as the working directory, as nbval does when it re-executes
``book/*.ipynb``; paths handed to notebooks (``results_dir``) are therefore relative to that folder, and no
absolute path ends up in a committed notebook. Only parameters that a notebook's parameters cell assigns are
passed to it. Papermill's timing metadata is stripped from the outputs, so re-executing a notebook changes
its file only where its outputs change (cell ids are derived from position and source, and consecutive
stream outputs are merged). Timeouts are per cell (nbclient's), which for the training
notebook, one long cell, is the time of the whole run: ``TRAINING_TIMEOUT_S`` by profile.

    python -m rstn.notebooks replicate --profile quick [--seeds 0 1 2] [--force] [--device cpu]
    python -m rstn.notebooks chapters [--profile auto] [01-stn-theory ...]
    python -m rstn.notebooks train --row rnn-spn-d2 --profile smoke [--seed 0] [--output PATH]
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

TRAINING = "03-training"
HEADLINE_ROW = "rnn-spn-d2"  # the paper's best row: its run is the training chapter of the book
KERNEL = "python3"
CHAPTER_TIMEOUT_S = 900  # per cell; every chapter reads results and runs in well under a minute
# Per cell, i.e. for the whole training run (one cell). quick: 9 rows of ~2-3 min on 2 CPU cores.
TRAINING_TIMEOUT_S = {"smoke": 900, "quick": 3600, "paper": 3 * 24 * 3600}
# Papermill/nbclient metadata that records when and how long, not what: dropped from executed notebooks.
VOLATILE_NOTEBOOK_KEYS = ("start_time", "end_time", "duration", "exception", "input_path", "output_path",
                          "environment_variables")
PAPERMILL_MARKERS = ("Executing Cell", "Ending Cell", "Executing notebook with kernel", "Input Notebook",
                     "Output Notebook", "Working directory", "Black is not installed")


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


def execute(source: str | Path, output: str | Path, parameters: Mapping[str, Any] | None = None, *,
            timeout: int | None = CHAPTER_TIMEOUT_S, log_output: bool = False) -> Path:
    """Execute a MyST notebook into ``output`` (.ipynb) with its output folder as working directory.

    Args:
        source: notebooks/NN-name.md (jupytext MyST) or an .ipynb.
        output: the executed notebook to write; its folder is created.
        parameters: values for the parameters cell; names the cell does not assign are left out.
        timeout: per-cell limit in seconds (None: none).
        log_output: stream the cells' stdout as they run (the training log).

    Raises:
        papermill.PapermillExecutionError: a cell raised; the notebook is written up to that cell.
    """
    import jupytext
    import nbformat
    import papermill

    source, output = Path(source), Path(output)
    nb = jupytext.read(source)
    declared = notebook_parameters(nb)
    parameters = dict(parameters or {})
    output.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        nb, str(output), parameters={k: v for k, v in parameters.items() if k in declared},
        kernel_name=KERNEL, progress_bar=False, log_output=log_output, cwd=str(output.parent),
        execution_timeout=timeout,
    )
    executed = nbformat.read(output, as_version=4)
    _stabilise(executed)
    nbformat.write(executed, output)
    return output


def _relative(path: Path, start: Path) -> str:
    return os.path.relpath(path.resolve(), start.resolve())


def run_chapters(names: Sequence[str] | None = None, profile: str | None = None, *, root: Path | None = None,
                 results_dir: str | Path = "results") -> list[Path]:
    """Execute the chapters (all non-training notebooks by default) into book/, reading existing results.

    Args:
        profile: the results the chapters show; None or "auto": each chapter takes the best profile that
            has results (paper, then quick, then smoke).
    """
    from rstn.mnist import mnist_path

    root = root or repo_root()
    names = list(names) if names else chapter_names(root)
    book = root / "book"
    # fetch MNIST here, if it is not there yet, so that no download message lands in a chapter's stderr
    mnist_path()
    profile = None if profile in (None, "auto") else profile
    done = []
    for i, name in enumerate(names, 1):
        source = root / "notebooks" / f"{name}.md"
        if not source.exists():
            raise FileNotFoundError(f"{source} does not exist; chapters: {', '.join(chapter_names(root))}")
        print(f"[{i}/{len(names)}] {name} -> book/{name}.ipynb", flush=True)
        start = time.perf_counter()
        # only what differs from the chapters' own defaults (profile None, results_dir "../results"), so
        # that a default run injects no parameters cell into the page
        parameters = {"profile": profile, "results_dir": _relative(root / results_dir, book)}
        parameters = {k: v for k, v in parameters.items()
                      if v is not None and (k, v) != ("results_dir", "../results")}
        execute(source, book / f"{name}.ipynb", parameters)
        print(f"  done in {time.perf_counter() - start:.0f} s", flush=True)
        done.append(book / f"{name}.ipynb")
    return done


def run_path(root: Path, profile: str, row: str, seed: int) -> Path:
    """Where the executed training notebook of (profile, row, seed) is kept."""
    return root / "book" / "runs" / f"{TRAINING}-{profile}-{row}-seed{seed}.ipynb"


def run_training(row: str, profile: str = "smoke", seed: int = 0, *, device: str | None = None,
                 force: bool = False, output: str | Path | None = None, root: Path | None = None,
                 results_dir: str | Path = "results", timeout: int | None = None) -> Path | None:
    """Train one Table 1 row through the training notebook; returns the executed notebook, or None if
    skipped.

    A run whose run.json is finished with the same resolved config is not trained again (unless
    ``force``); if its executed notebook exists too, nothing runs at all.
    """
    from rstn import experiments, runs
    from rstn.mnist import mnist_path

    root = root or repo_root()
    config = experiments.run_config(row, profile, seed, device=device)
    output = Path(output) if output is not None else run_path(root, config.profile, config.row, seed)
    results = Path(results_dir) if Path(results_dir).is_absolute() else root / results_dir
    name = f"{config.profile}/{config.row}/seed{seed}"
    if not force and output.exists() and runs.is_finished(config, results):
        print(f"  skip {name}: results exist for the same config; FORCE=1 / --force trains it again", flush=True)
        return None
    mnist_path()  # a download, if any, reports here and not in the notebook's stderr
    execute(root / "notebooks" / f"{TRAINING}.md", output,
            {"row": config.row, "profile": config.profile, "seed": seed, "device": device, "force": force,
             "results_dir": _relative(results, output.parent)},
            timeout=timeout if timeout is not None else TRAINING_TIMEOUT_S[config.profile], log_output=True)
    return output


def copy_run(run: Path, target: Path, results: Path) -> None:
    """Copy an executed training notebook to another folder, with its injected ``results_dir`` made
    relative to the new folder, so that the copy still runs where it lies."""
    import nbformat

    nb = nbformat.read(run, as_version=4)
    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.source = re.sub(r'^results_dir = .*$', f'results_dir = "{_relative(results, target.parent)}"',
                                 cell.source, flags=re.M)
    nbformat.write(nb, target)


def replicate(profile: str = "auto", seeds: Iterable[int] = (0,), *, force: bool = False,
              device: str | None = None, rows: Sequence[str] | None = None, root: Path | None = None) -> None:
    """Data, then every Table 1 row x seed through the training notebook, then the chapters.

    The book build is left to the caller (`make replicate` runs `make book` next).
    """
    from rstn import experiments
    from rstn.data import cache_path, load_sequences

    root = root or repo_root()
    resolved = experiments.resolve_profile(profile, device).name
    rows = list(rows) if rows else list(experiments.ROWS)
    seeds = list(seeds)
    data = experiments.run_config(rows[0], resolved, seeds[0], device=device)
    print(f"replicate: profile {resolved!r} ({experiments.PROFILES[resolved].description}), "
          f"{len(rows)} rows x seeds {seeds}", flush=True)
    start = time.perf_counter()
    print(f"[data] {data.data.n_train:,}/{data.data.n_valid:,}/{data.data.n_test:,} sequences, "
          f"cache {cache_path(data.data, data.data_seed)}", flush=True)
    load_sequences(data.data, seed=data.data_seed)
    jobs = [(row, seed) for row in rows for seed in seeds]
    for i, (row, seed) in enumerate(jobs, 1):
        print(f"[train {i}/{len(jobs)}] {row} seed {seed} ({resolved})", flush=True)
        run_training(row, resolved, seed, device=device, force=force, root=root)
    headline = run_path(root, resolved, HEADLINE_ROW, seeds[0])
    if headline.exists():
        copy_run(headline, root / "book" / f"{TRAINING}.ipynb", root / "results")
        print(f"[book] book/{TRAINING}.ipynb <- {_relative(headline, root)}", flush=True)
    run_chapters(profile=resolved, root=root)
    print(f"replicate: done in {time.perf_counter() - start:.0f} s", flush=True)


def _cell_output_only(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    if record.levelno == logging.INFO and message.startswith(PAPERMILL_MARKERS):
        return False
    record.msg, record.args = message.rstrip("\n"), ()
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rstn.notebooks", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("replicate", help="data -> train every row (papermill) -> the chapters")
    rep.add_argument("--profile", default="auto", help="smoke | quick | paper | auto (paper on CUDA, else quick)")
    rep.add_argument("--seeds", type=int, nargs="+", default=[0])
    rep.add_argument("--rows", nargs="+", default=None, help="Table 1 rows (default: all nine)")
    rep.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    rep.add_argument("--force", action="store_true", help="retrain rows whose results exist")
    chap = sub.add_parser("chapters", help="execute the non-training notebooks into book/")
    chap.add_argument("names", nargs="*", help="e.g. 04-results (default: every chapter)")
    chap.add_argument("--profile", default="auto", help="results to show; auto: the best that exist")
    train = sub.add_parser("train", help="train one row through the training notebook")
    train.add_argument("--row", required=True)
    train.add_argument("--profile", default="smoke")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default=None)
    train.add_argument("--force", action="store_true")
    train.add_argument("--output", default=None, help="executed notebook (default: book/runs/...)")
    train.add_argument("--results-dir", default="results")
    args = parser.parse_args(argv)
    # papermill logs the cells' output (log_output=True) at INFO on its logger: show those lines, not its
    # own cell markers
    logging.basicConfig(format="%(message)s", level=logging.WARNING)
    papermill_log = logging.getLogger("papermill")
    papermill_log.setLevel(logging.INFO)
    papermill_log.addFilter(_cell_output_only)
    if args.command == "replicate":
        replicate(args.profile, args.seeds, force=args.force, device=args.device, rows=args.rows)
    elif args.command == "chapters":
        run_chapters(args.names, args.profile)
    else:
        run_training(args.row, args.profile, args.seed, device=args.device, force=args.force,
                     output=args.output, results_dir=args.results_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
