"""The ``rstn`` command line: one subcommand per job, each a thin call into one module.

    rstn mnist [--data-dir DIR]
    rstn data [--seed K] [--n-train N --n-valid N --n-test N] [--out-png PATH]
    rstn train (--row ROW [ROW ...] | --all | --cpu-queue) [--profile smoke|quick|paper|auto]
               [--seed K [K ...]] [--resume] [--force] [--budget 2h30m] [--device DEV]
               [--results-dir DIR] [--checkpoint-dir DIR] [--checkpoint-every N] [--set FIELD=VALUE ...]
    rstn sweep (--row ROW [ROW ...] | --all) [--profile P] [--seeds K ...] [--executor local|slurm|debug]
               [--concurrency N] [--gpus N] [--budget 9m] [--out DIR] [--resume-from ARCHIVE] [--set ...]
    rstn unpack ARCHIVE [--results-dir DIR] [--checkpoint-dir DIR]
    rstn carry --row ROW [ROW ...] [--profile paper] [--seed K ...] [--results-dir DIR] [--checkpoint-dir DIR]
    rstn table [--profile PROFILE] [--results-dir DIR]
    rstn replicate [--profile smoke|quick|paper|auto] [--seeds K ...] [--rows ROW ...] [--force]
                   [--device DEV] [--into-book]
    rstn chapters [NAME ...] [--profile PROFILE] [-p NAME VALUE ...] [--into-book]

Bad input (an unknown row, a bad --set value, a corrupt run.json or MNIST file, ...) prints one line
naming the value and the fix, and exits with status 2; a chapter that fails to execute exits with 1.
RSTN_DEBUG=1 shows the traceback instead.

To add a subcommand: write ``_add_<name>(subparsers)`` that registers its arguments and sets
``func=_cmd_<name>``, and call it from ``build_parser``. The training commands (train, sweep, unpack,
carry) live in `rstn.cli_training`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rstn.cli_training import (  # noqa: F401 (_parse_sections: tested here)
    _add_carry,
    _add_sweep,
    _add_train,
    _add_unpack,
    _parse_sections,
)
from rstn.generator import SequenceConfig

_DEFAULTS = SequenceConfig()


def _add_data(subparsers) -> None:
    p = subparsers.add_parser("data", help="generate (or read from the cache) the cluttered MNIST sequences",
                              description="Generate the cluttered MNIST sequences as the authors' code makes "
                                          "them, cache them on disk and write a PNG grid of samples.")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default: %(default)s)")
    for split in ("train", "valid", "test"):
        p.add_argument(f"--n-{split}", type=int, default=_DEFAULTS.split_size(split),
                       help=f"{split} sequences (default: %(default)s)")
    p.add_argument("--x-placement", choices=("abut", "random"), default=_DEFAULTS.x_placement,
                   help="'abut': the code (default); 'random': the paper's random non-overlapping x")
    p.add_argument("--slope-range", type=int, nargs=2, metavar=("LOW", "HIGH"), default=_DEFAULTS.slope_range,
                   help="inclusive y step per digit in px (default: the code's %(default)s; "
                        "the paper's 45 deg: -28 28)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="directory of mnist.pkl.gz (default: $RSTN_DATA_DIR, then the cache dir; "
                        "fetched when absent)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="sequence cache (default: ~/.cache/rstn/sequences)")
    p.add_argument("--out-png", type=Path, default=None,
                   help="PNG grid of samples (default: _build/data/samples-seed<K>.png, git-ignored)")
    p.add_argument("--split", choices=("train", "valid", "test"), default="train",
                   help="split shown in the PNG")
    p.add_argument("--n-show", type=int, default=16, help="images in the PNG grid (default: %(default)s)")
    p.set_defaults(func=_cmd_data)


def _cmd_data(args: argparse.Namespace) -> int:
    import matplotlib.pyplot as plt

    from rstn.data import cache_path, load_sequences
    from rstn.viz import plot_sequences

    empty = [f"--n-{name} {getattr(args, f'n_{name}')}" for name in ("train", "valid", "test")
             if getattr(args, f"n_{name}") < 1]
    if empty:
        raise ValueError(f"{', '.join(empty)}: every split needs at least one sequence")
    if args.seed < 0:
        raise ValueError(f"--seed {args.seed}: the generator seed is an integer >= 0")
    if args.n_show < 1:
        raise ValueError(f"--n-show {args.n_show}: show at least one image")
    config = SequenceConfig(n_train=args.n_train, n_valid=args.n_valid, n_test=args.n_test,
                            x_placement=args.x_placement, slope_range=tuple(args.slope_range))
    path = cache_path(config, args.seed, args.cache_dir)
    print(f"{'reading' if path.exists() else 'generating'} {path}", file=sys.stderr)
    start = time.perf_counter()
    splits = load_sequences(config, args.seed, data_dir=args.data_dir, cache_dir=args.cache_dir,
                            progress=sys.stderr.isatty())
    print(f"done in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    for name, split in splits.items():
        print(f"{name}: images {split.images.shape} {split.images.dtype}, labels {split.labels.shape}, "
              f"boxes {split.boxes.shape}")
    out_png = args.out_png or Path("_build") / "data" / f"samples-seed{args.seed}.png"  # git-ignored
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig = plot_sequences(splits[args.split], n=args.n_show)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    print(f"wrote {out_png}")
    return 0


def _add_mnist(subparsers) -> None:
    p = subparsers.add_parser("mnist", help="find (or fetch) and verify the MNIST pickle; print its path",
                              description="Find mnist.pkl.gz in --data-dir, $RSTN_DATA_DIR or the cache dir, "
                                          "fetch it when missing, and check its SHA-256.")
    p.add_argument("--data-dir", type=Path, default=None, help="directory of mnist.pkl.gz")
    p.set_defaults(func=_cmd_mnist)


def _cmd_mnist(args: argparse.Namespace) -> int:
    from rstn.mnist import mnist_path

    print(mnist_path(args.data_dir))
    return 0


def _add_table(subparsers) -> None:
    p = subparsers.add_parser("table", help="print Table 1: ours (mean ± std over seeds) vs the paper",
                              description="Print the per-digit test error of every row, ours vs the paper.")
    p.add_argument("--profile", default="best",
                   help="smoke | quick | paper | best (paper, else quick, else smoke: the first with results; "
                        "default: %(default)s)")
    p.add_argument("--results-dir", type=Path, default=Path("results"), help="(default: %(default)s)")
    p.add_argument("--markdown", action="store_true",
                   help="the landing page's table as Markdown (paper, ours, difference, status, epochs, device) "
                        "and its summary line")
    p.add_argument("--write-readme", type=Path, metavar="README",
                   help="put the Markdown table into README under its marker line instead of printing it")
    p.set_defaults(func=_cmd_table)


def _cmd_table(args: argparse.Namespace) -> int:
    from rstn.claims import markdown_report
    from rstn.experiments import BEST
    from rstn.records import display_profile
    from rstn.table import format_table, load_table, replace_marked_table

    if args.write_readme and args.profile not in (BEST, "paper"):
        raise ValueError("--write-readme puts the paper profile's table into the README (its marker line says "
                         f"so); drop --profile {args.profile}")
    table = load_table("paper" if args.write_readme else args.profile, args.results_dir)
    profile = table[0].profile
    if not any(r.seeds or r.running or r.n_diverged for r in table):
        other = display_profile(BEST, args.results_dir)
        raise ValueError(f"no runs under {args.results_dir / profile}: train some first, e.g. "
                         f"`rstn train --all --profile {profile}`"
                         + (" or `make train-cpu` (the paper rows a CPU can do)" if profile == "paper" else "")
                         + (f"; results exist for --profile {other}" if other != profile else ""))
    if args.write_readme:
        text = args.write_readme.read_text(encoding="utf-8")
        updated = replace_marked_table(text, markdown_report(table, args.results_dir))
        args.write_readme.write_text(updated, encoding="utf-8")
        print(f"{args.write_readme}: Table 1 of profile {profile!r} "
              + ("updated" if updated != text else "already up to date"))
        return 0
    from rstn.table import headline_summary

    print(markdown_report(table, args.results_dir) if args.markdown else
          headline_summary(table) + "\n\n" + format_table(table))
    from rstn.table import VARIANT_COLUMNS, markdown_table, variant_rows

    variants = variant_rows(profile, args.results_dir)
    if variants and not args.markdown:
        print(f"\nVariants, each beside the row it changes (seed 0, profile {profile!r}):")
        print(markdown_table(VARIANT_COLUMNS, variants))
    return 0


_INTO_BOOK_HELP = ("write book/ even when PROFILE is not the one the book shows (by default that renders into "
                   "_build/scratch/PROFILE/ and leaves book/ as it is)")


def _add_replicate(subparsers) -> None:
    p = subparsers.add_parser("replicate", help="data -> every Table 1 row through the training notebook -> the "
                                                "chapters (what `make replicate` runs)",
                              description="Generate the data, train every Table 1 row x seed through the training "
                                          "notebook (papermill; one executed notebook per run in book/runs/), then "
                                          "execute the chapters. A run finished with the same config is not "
                                          "retrained (it says so); --force retrains it.")
    p.add_argument("--profile", default="auto",
                   help="smoke | quick | paper | auto (paper with CUDA, else quick; default: %(default)s)")
    p.add_argument("--seed", "--seeds", dest="seeds", type=int, nargs="+", default=[0], metavar="K",
                   help="training seed(s) (default: 0)")
    p.add_argument("--rows", nargs="+", default=None, metavar="ROW", help="Table 1 rows (default: all nine)")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available)")
    p.add_argument("--force", action="store_true", help="retrain runs finished with the same config")
    p.add_argument("--into-book", action="store_true", help=_INTO_BOOK_HELP)
    p.set_defaults(func=_cmd_replicate)


def _cmd_replicate(args: argparse.Namespace) -> int:
    from rstn.book import replicate

    replicate(args.profile, args.seeds, force=args.force, device=args.device, rows=args.rows,
              into_book=args.into_book)
    return 0


def _add_chapters(subparsers) -> None:
    p = subparsers.add_parser("chapters", help="execute the chapters (not training) from existing results "
                                               "(what `make notebooks` runs)",
                              description="Execute the non-training notebooks with papermill into book/, each "
                                          "replacing its page only if every cell ran.")
    p.add_argument("names", nargs="*", metavar="NAME", help="e.g. 04-results (default: every chapter)")
    p.add_argument("--profile", default="best",
                   help="the results shown: smoke | quick | paper | best (paper, else quick, else smoke: the first "
                        "with results; default); auto: a deprecated alias of best")
    p.add_argument("--into-book", action="store_true", help=_INTO_BOOK_HELP)
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="set a parameter of the chapter (its cell tagged parameters), e.g. -p rnn_row rnn-spn-d4; "
                        "VALUE is read as JSON, else as a string; renders into _build/scratch/custom/")
    p.set_defaults(func=_cmd_chapters)


def _cmd_chapters(args: argparse.Namespace) -> int:
    from rstn.book import run_chapters
    from rstn.experiments import DISPLAY_CHOICES

    if args.profile == "auto":  # what `best` was called before it had a name of its own
        print("rstn chapters: --profile auto is a deprecated alias of --profile best (the default)", file=sys.stderr)
    elif args.profile not in DISPLAY_CHOICES:
        raise ValueError(f"unknown profile {args.profile!r}; valid: {', '.join(DISPLAY_CHOICES)}")
    parameters = {}
    for name, value in args.parameter:
        try:
            parameters[name] = json.loads(value)
        except json.JSONDecodeError:
            parameters[name] = value  # a bare string, e.g. rnn-spn-d4
    run_chapters(args.names, args.profile, into_book=args.into_book, parameters=parameters)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rstn", description="Recurrent Spatial Transformer Networks, replicated.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_mnist(subparsers)
    _add_data(subparsers)
    _add_train(subparsers)
    _add_sweep(subparsers)
    _add_unpack(subparsers)
    _add_carry(subparsers)
    _add_table(subparsers)
    _add_replicate(subparsers)
    _add_chapters(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand; bad input ends in one line on stderr and exit status 2 (RSTN_DEBUG=1: traceback)."""
    import os

    from rstn.book import NotebookError
    from rstn.checkpoints import NewerPackError
    from rstn.mnist import MnistUnavailableError
    from rstn.runs import ConfigChangedError, RunInProgressError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RunInProgressError, ConfigChangedError, FileNotFoundError, NotebookError,
            MnistUnavailableError, NewerPackError) as err:
        if os.environ.get("RSTN_DEBUG"):
            raise
        print(f"rstn {args.command}: error: {err}", file=sys.stderr)
        return 1 if isinstance(err, NotebookError) else 2
    except BrokenPipeError:  # e.g. `rstn table | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"rstn {args.command}: interrupted; a training run resumes with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
