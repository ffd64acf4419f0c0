"""The command line's training commands: ``rstn train``, ``sweep``, ``unpack`` and ``carry`` (`rstn.cli`
assembles the parser and handles errors; see its docstring for the synopsis)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _add_train(subparsers) -> None:
    p = subparsers.add_parser("train", help="train Table 1 rows (results/<profile>/<row>/seed<k>/)",
                              description="Train Table 1 rows (or a variant by name, e.g. rnn-spn-d4-bf16) with "
                                          "the authors' protocol under a profile. A run finished with the same "
                                          "config is skipped; a record of another config is kept and reported; "
                                          "--force retrains either.")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--row", nargs="+", metavar="ROW", help="row name(s), e.g. rnn-spn-d2")
    which.add_argument("--all", action="store_true", help="all nine rows")
    which.add_argument("--cpu-queue", action="store_true",
                       help="the paper-profile runs a 2-core CPU can train (rstn.experiments.CPU_QUEUE: rows and "
                            "seeds), a run that can resume first; prints this processor and each run's epoch "
                            "time here and how far --budget takes it; implies --profile paper --resume")
    p.add_argument("--lanes", type=int, default=1, metavar="N",
                   help="with --cpu-queue: train N runs side by side, each in a process of its own with 1/N of "
                        "the threads; a lane with no more work hands its threads to the others (on a 2-core Zen 5, "
                        "2 lanes trained 1.14x as much per hour; default: %(default)s)")
    p.add_argument("--no-new-runs", action="store_true",
                   help="with --cpu-queue: train only the runs in progress (a checkpoint here or a resume pack) and "
                        "start none: every resume pack committed stays in the repository's history")
    p.add_argument("--profile", default="auto",
                   help="smoke | quick | paper | auto (paper with CUDA, else quick; default: %(default)s)")
    p.add_argument("--seed", "--seeds", dest="seeds", type=int, nargs="+", default=[0], metavar="K",
                   help="training seed(s) (default: 0)")
    p.add_argument("--resume", action="store_true",
                   help="continue a run in progress from its checkpoint, or its resume pack where that got further")
    p.add_argument("--force", action="store_true", help="rerun even if finished with the same config")
    p.add_argument("--budget", default=None, metavar="DURATION",
                   help="stop cleanly at an epoch boundary before this much time has passed (e.g. 2h30m, "
                        "90m); the run stays in progress and --resume continues it")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available)")
    p.add_argument("--results-dir", type=Path, default=Path("results"), help="(default: %(default)s)")
    p.add_argument("--checkpoint-dir", type=Path, default=None,
                   help="checkpoints (default: $RSTN_CHECKPOINT_DIR, else ~/.cache/rstn/checkpoints)")
    p.add_argument("--checkpoint-every", type=int, default=1, metavar="N",
                   help="epochs between checkpoints; a kill loses at most N epochs (default: %(default)s)")
    p.add_argument("--progress", choices=("auto", "bar", "text", "none"), default="auto")
    p.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="FIELD=VALUE",
                   help="override config fields, part of the run's config: train fields bare or as train.NAME "
                        "(--set max_epochs=3 bf16=true), model.NAME and data.NAME for the model and the data "
                        "(--set model.dropout=0.25 data.x_placement=random)")
    p.set_defaults(func=_cmd_train)


def _parse_sections(items: list[str]) -> dict[str, dict]:
    """--set items as {"model": {...}, "data": {...}, "train": {...}}: model.NAME, data.NAME, train.NAME or a
    bare NAME (a trainer field)."""
    sections: dict[str, dict] = {"model": {}, "data": {}, "train": {}}
    for key, value in _parse_overrides(items).items():
        section, dot, name = key.partition(".")
        if not dot:
            section, name = "train", key
        if section not in sections:
            raise ValueError(f"--set {key}: the section must be model, data or train, got {section!r}")
        sections[section][name] = value
    return sections


def _parse_overrides(items: list[str]) -> dict:
    """--set FIELD=VALUE items: VALUE read as JSON (3, 1e-3, true), else kept as a string."""

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects FIELD=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a bare string, e.g. element_clip=never
    return out


def _cmd_train(args: argparse.Namespace) -> int:
    from rstn.progress import parse_duration
    from rstn.runlist import describe_outcomes, train_all, train_configs

    budget_s = parse_duration(args.budget) if args.budget is not None else None
    if args.checkpoint_every < 1:
        raise ValueError(f"--checkpoint-every must be >= 1, got {args.checkpoint_every}")
    if args.lanes < 1 or (args.lanes > 1 and not args.cpu_queue):
        raise ValueError(f"--lanes takes a count >= 1 and goes with --cpu-queue, got --lanes {args.lanes}")
    if args.no_new_runs and not args.cpu_queue:
        raise ValueError("--no-new-runs goes with --cpu-queue (a run named with --row starts when asked)")
    common = dict(results_dir=args.results_dir, checkpoint_root=args.checkpoint_dir, device=args.device,
                  force=args.force, budget_s=budget_s, checkpoint_every=args.checkpoint_every, progress=args.progress)
    start = time.monotonic()
    if args.cpu_queue:
        from rstn import queue
        from rstn.history import history_mib

        if args.overrides:
            raise ValueError("--cpu-queue trains the registered paper-profile runs: --set does not apply to it")
        from rstn.backends import has_native_bf16

        ordered, deferred = queue.bf16_deferred(queue.queue_configs("paper"), has_native_bf16())
        configs, not_started = queue.resumable_first(ordered, args.results_dir, args.checkpoint_dir), []
        if args.no_new_runs:
            configs, not_started = queue.held_back(configs, args.results_dir, args.checkpoint_dir)
        used_mib = history_mib(args.results_dir)
        planned = queue.plan(configs, budget_s, args.results_dir, args.checkpoint_dir, device=args.device or "cpu",
                             lanes=args.lanes, used_mib=used_mib)
        history = queue.history_line(planned, used_mib)
        print(queue.describe_plan(planned, budget_s, deferred, args.lanes, not_started)
              + (f"\n{history}" if history else ""), flush=True)
        common["why_not_start"] = queue.StartRule.from_plan(planned, args.results_dir, args.checkpoint_dir)
        if args.lanes > 1:  # each lane prints its own summary
            return queue.run_lanes(configs, args.lanes, **common)
        outcomes = train_configs(configs, resume=True, **common)
    else:
        rows = None if args.all else args.row
        sets = _parse_sections(args.overrides)
        outcomes = train_all(rows, args.profile, args.seeds, resume=args.resume, model=sets["model"],
                             data=sets["data"], **common, **sets["train"])

    text, failed = describe_outcomes(outcomes, time.monotonic() - start)
    print(f"rstn train: {text}", file=sys.stderr)
    return 1 if failed else 0


def _add_sweep(subparsers) -> None:
    p = subparsers.add_parser("sweep", help="many runs at once through submitit (one machine, its GPUs, or Slurm)",
                              description="Train rows x seeds through submitit: on this machine in --concurrency "
                                          "lanes (sharing a GPU, or one GPU each with --gpus), or one Slurm job per "
                                          "run. A run finished here, of another config, or in progress with nothing "
                                          "here to resume it from is left alone, saying why. Each job stops cleanly "
                                          "before --budget; --out packs the results into one archive that "
                                          "--resume-from continues.")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--row", nargs="+", metavar="ROW", help="row name(s)")
    which.add_argument("--all", action="store_true", help="all nine rows")
    p.add_argument("--profile", default="paper", help="smoke | quick | paper (default: %(default)s)")
    p.add_argument("--seed", "--seeds", dest="seeds", type=int, nargs="+", default=[0], metavar="K")
    p.add_argument("--executor", choices=("local", "slurm", "debug"), default="local",
                   help="local: subprocesses here (default); slurm: one job per run; debug: in this process")
    p.add_argument("--concurrency", type=int, default=1, help="local: jobs at once (default: %(default)s)")
    p.add_argument("--gpus", type=int, default=None,
                   help="local: GPUs to deal the jobs over (default: all this machine has; 0: none); "
                        "slurm: per job (default: 1)")
    p.add_argument("--slurm-partition", default=None)
    p.add_argument("--budget", default=None, metavar="DURATION",
                   help="every job stops cleanly at an epoch boundary before this much time has passed")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="write DIR/sweep-<profile>.tar.gz (results, and checkpoints where they fit, < 16 MiB): "
                        "every --pack-every while the jobs run, and at the end, even if jobs failed")
    p.add_argument("--pack-every", default="90s", metavar="DURATION",
                   help="with --out: how often the archive is rewritten while the jobs run (default: %(default)s)")
    p.add_argument("--resume-from", type=Path, default=None, metavar="ARCHIVE",
                   help="unpack an archive of an earlier sweep first and continue its runs")
    p.add_argument("--fresh", action="store_true", help="do not resume runs in progress: start them over")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    p.add_argument("--results-dir", type=Path, default=Path("results"), help="(default: %(default)s)")
    p.add_argument("--checkpoint-dir", type=Path, default=None, help="(default: as rstn train)")
    p.add_argument("--checkpoint-every", type=int, default=5, metavar="N",
                   help="epochs between checkpoints (default: %(default)s; always at the deadline)")
    p.add_argument("--log-dir", type=Path, default=Path("_build/sweep"), help="submitit's job folder")
    p.add_argument("--summary", type=Path, default=None, metavar="FILE",
                   help="write the runs' summaries as JSON (status, epochs, test error, peak GPU memory, why kept)")
    p.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="FIELD=VALUE",
                   help="override config fields, part of each run's config, as for `rstn train`: train fields "
                        "bare (bf16=true: the row in bf16, a named deviation kept in the row's own folder), "
                        "model.NAME and data.NAME (model.dropout=0.25)")
    p.set_defaults(func=_cmd_sweep)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from rstn import sweep
    from rstn.progress import counted, parse_duration

    budget_s = parse_duration(args.budget) if args.budget is not None else None
    if args.resume_from is not None:
        manifest = sweep.unpack(args.resume_from, args.results_dir, args.checkpoint_dir)
        print(f"rstn sweep: unpacked {args.resume_from}: {len(manifest.get('checkpoints', []))} checkpoints"
              + (f"; left out then: {', '.join(manifest['left_out'])}" if manifest.get("left_out") else "")
              + _kept_text(manifest), file=sys.stderr)
    sections = _parse_sections(args.overrides)  # model.X, data.X and trainer fields, as `rstn train` takes them
    overrides = {"model": sections["model"], "data": sections["data"], **sections["train"]}
    pack_every_s = parse_duration(args.pack_every)
    rows = None if args.all else args.row
    # the archive carries the runs this sweep trains, never the records it leaves alone
    configs = sweep.plan(rows, args.profile, args.seeds, 1, args.device, results_dir=args.results_dir,
                         checkpoint_root=args.checkpoint_dir, **overrides).trained

    def pack(final: bool) -> None:
        archive = args.out / f"sweep-{args.profile}.tar.gz"
        manifest = sweep.pack(archive, configs, args.results_dir, args.checkpoint_dir)
        print(f"rstn sweep: wrote {archive} ({archive.stat().st_size / 2**20:.1f} MiB, "
              f"{counted(len(manifest['weights']), 'weights file')}, "
              f"{counted(len(manifest['checkpoints']), 'checkpoint')}" + ("" if final else ", so far")
              + (f"; left out: {', '.join(manifest['left_out'])}" if manifest["left_out"] else "") + ")",
              file=sys.stderr)

    # the archive is rewritten while the jobs run and once more at the end, whatever happened: a call cut
    # short by its limit still gives back what was trained until the last rewrite
    try:
        summaries = sweep.sweep(rows, args.profile, args.seeds, executor=args.executor,
                                concurrency=args.concurrency, gpus=args.gpus, results_dir=args.results_dir,
                                checkpoint_root=args.checkpoint_dir, device=args.device, budget_s=budget_s,
                                resume=not args.fresh, checkpoint_every=args.checkpoint_every, log_dir=args.log_dir,
                                slurm_partition=args.slurm_partition,
                                while_waiting=None if args.out is None else lambda: pack(final=False),
                                wait_interval_s=pack_every_s, **overrides)
    except BaseException:
        if args.out is not None:
            try:
                pack(final=True)
            except Exception as error:  # noqa: BLE001 (the sweep's own error is the one to see)
                print(f"rstn sweep: the archive could not be written: {type(error).__name__}: {error}",
                      file=sys.stderr)
        raise
    if args.out is not None:
        pack(final=True)
    if args.summary is not None:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(json.dumps(summaries, indent=1) + "\n")
    return 1 if any(s["status"] in ("diverged", "failed") for s in summaries) else 0


def _add_unpack(subparsers) -> None:
    p = subparsers.add_parser("unpack", help="put a sweep's archive back: results/ and the checkpoints",
                              description="Unpack an archive written by `rstn sweep --out` into the results "
                                          "folder (run.json, train.log, attention.npz, weights) and the checkpoint "
                                          "folder. A record here of another config (bf16 aside), finished, or in "
                                          "progress at least as far on as an unfinished incoming run is kept, "
                                          "saying why.")
    p.add_argument("archive", type=Path)
    p.add_argument("--results-dir", type=Path, default=Path("results"), help="(default: %(default)s)")
    p.add_argument("--checkpoint-dir", type=Path, default=None, help="(default: as rstn train)")
    p.set_defaults(func=_cmd_unpack)


def _cmd_unpack(args: argparse.Namespace) -> int:
    from rstn.sweep import unpack

    from rstn.progress import counted

    manifest = unpack(args.archive, args.results_dir, args.checkpoint_dir)
    print(f"unpacked {args.archive} into {args.results_dir}: "
          f"{counted(len(manifest.get('weights', [])), 'weights file')}, "
          f"{counted(len(manifest.get('checkpoints', [])), 'checkpoint')}"
          + (f"; not in it: {', '.join(manifest['left_out'])}" if manifest.get("left_out") else "")
          + _kept_text(manifest))
    return 0


def _kept_text(manifest: dict) -> str:
    """'; kept as they were: RUN (why); ...' for the runs `rstn.sweep.unpack` left as they were."""
    if not manifest["kept"]:
        return ""
    why = manifest.get("why", {})
    return "; kept as they were: " + "; ".join(f"{run} ({why[run]})" if run in why else run
                                                 for run in manifest["kept"])


def _add_carry(subparsers) -> None:
    p = subparsers.add_parser("carry", help="write a run's resume pack (in progress) or weights (finished) from "
                                            "its local checkpoint",
                              description="Runs trained by code older than resume packs and weights keep them only "
                                          "in the local checkpoint, which a new machine does not have. This writes "
                                          "results/<profile>/<row>/seed<k>/resume.pt for a run in progress and "
                                          "weights.safetensors for a finished one, to commit with the results.")
    p.add_argument("--row", nargs="+", metavar="ROW", required=True, help="row name(s)")
    p.add_argument("--profile", default="paper", help="(default: %(default)s)")
    p.add_argument("--seed", "--seeds", dest="seeds", type=int, nargs="+", default=[0], metavar="K")
    p.add_argument("--results-dir", type=Path, default=Path("results"))
    p.add_argument("--checkpoint-dir", type=Path, default=None, help="(default: as rstn train)")
    p.set_defaults(func=_cmd_carry)


def _cmd_carry(args: argparse.Namespace) -> int:
    from rstn.experiments import run_config
    from rstn.runs import carry_run

    for row in args.row:
        for seed in args.seeds:
            print(carry_run(run_config(row, args.profile, seed), args.results_dir, args.checkpoint_dir))
    return 0
