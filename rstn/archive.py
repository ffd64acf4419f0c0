"""Results that travel in one archive: `pack` them on one machine, `unpack` them on another.

`pack` puts the results of some runs (run.json, train.log, attention.npz), the weights of finished runs and
the checkpoints of unfinished ones, where they fit, into one .tar.gz under a size limit (16 MiB: what a
device call can give back), with a manifest of what was left out. `unpack` puts them back without ever
replacing a record that got further (`keep_reason`), so a GPU never replaces a CPU record; a later sweep
continues every run whose checkpoint travelled.

bf16 is a named deviation, not another experiment: a run that differs from its row's profile only in
`train.bf16` (`bf16_deviation`) is that row in bf16, and `unpack` weighs it against a float32 record of the
row by progress alone.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Iterable
from pathlib import Path

from rstn.checkpoints import PACK_NAME
from rstn.experiments import RunConfig, describe_differences, differences_but_bf16, run_dir, same_config
from rstn.progress import counted
from rstn.records import RUN_FILE, ResultsError, RunRecord, read_run
from rstn.train import ATTENTION_NAME, CHECKPOINT_NAME, LOG_NAME
from rstn.weights import WEIGHTS_NAME

ARCHIVE_LIMIT = 16 * 2**20  # bytes: the largest file a device call gives back
MANIFEST_NAME = "manifest.json"


def pack(archive: str | Path, configs: Iterable[RunConfig], results_dir: str | Path = "results",
         checkpoint_root: str | Path | None = None, limit: int = ARCHIVE_LIMIT) -> dict:
    """Write results, and where they fit the weights of finished runs and the checkpoints of unfinished
    ones, to one .tar.gz under `limit` bytes.

    Layout inside: results/<profile>/<row>/seed<k>/{run.json, train.log, attention.npz[,
    weights.safetensors]}, checkpoints/<profile>/<row>/seed<k>/checkpoint.pt, manifest.json ({"weights":
    [...], "checkpoints": [...], "left_out": [...], "limit": ...}). Weights (float16: a finished run's
    product) are taken first, then checkpoints, smallest first each, while the archive stays under the
    limit (float tensors barely compress). A run's resume pack stays behind: its checkpoint is the exact
    state, and a pack is as large as the weights it continues.

    Returns:
        the manifest.
    """
    from rstn.runs import checkpoint_dir

    checkpoint_root = Path(checkpoint_root) if checkpoint_root is not None else checkpoint_dir()
    archive = Path(archive)
    archive.parent.mkdir(parents=True, exist_ok=True)
    members, weights, checkpoints = [], [], []
    for config in configs:
        folder = run_dir(results_dir, config.profile, config.row, config.seed)
        if not (folder / RUN_FILE).exists():
            continue
        run = f"{config.profile}/{config.row}/seed{config.seed}"
        for name in (RUN_FILE, LOG_NAME, ATTENTION_NAME):
            if (folder / name).exists():
                members.append((folder / name, f"results/{run}/{name}"))
        finished = read_run(folder / RUN_FILE).finished
        ckpt = run_dir(checkpoint_root, config.profile, config.row, config.seed) / CHECKPOINT_NAME
        if finished and (folder / WEIGHTS_NAME).exists():
            weights.append((folder / WEIGHTS_NAME, f"results/{run}/{WEIGHTS_NAME}"))
        elif not finished and ckpt.exists():
            checkpoints.append((ckpt, f"checkpoints/{run}/{CHECKPOINT_NAME}"))
    # results compress well; leave a margin of 1 MiB for them, the manifest and tar's headers
    room = limit - 2**20 - sum(path.stat().st_size for path, _ in members) // 3
    manifest = {"limit": limit, "weights": [], "checkpoints": [], "left_out": []}
    for kind, files in (("weights", weights), ("checkpoints", checkpoints)):
        for path, name in sorted(files, key=lambda pc: pc[0].stat().st_size):
            size = path.stat().st_size
            if size <= room:
                members.append((path, name))
                manifest[kind].append(name)
                room -= size
            else:
                manifest["left_out"].append(f"{name} ({size / 2**20:.1f} MiB)")
    tmp = archive.with_name(archive.name + ".tmp")
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        for path, name in members:
            # read whole first: jobs still running replace their files (atomically), so one read sees one version
            _add_bytes(tar, name, path.read_bytes(), path.stat().st_mtime)
        _add_bytes(tar, MANIFEST_NAME, json.dumps(manifest, indent=1).encode(), time.time())
    size = tmp.stat().st_size
    if size > limit:
        tmp.unlink()
        raise ValueError(f"{archive} would be {size} bytes, over the limit of {limit}")
    tmp.replace(archive)
    return manifest


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), int(mtime)
    tar.addfile(info, io.BytesIO(data))


def keep_reason(mine: RunRecord, incoming: RunRecord) -> str | None:
    """Why `unpack` keeps the record here (`mine`) rather than the archive's of the same run, or None to
    take the archive's.

    Kept: a record of another config (bf16 aside: the row in another precision is the same experiment),
    a finished one, one in progress at least as far on as an unfinished incoming run (with or without a
    checkpoint here: a GPU restart of a CPU run never replaces it), or any record against a diverged
    incoming run. A record here that diverged is replaced.
    """
    here = f"{mine.status}, {counted(mine.epochs_run, 'epoch')}"
    there = f"{incoming.status}, {counted(incoming.epochs_run, 'epoch')}"
    changes = differences_but_bf16(mine.config, incoming.config)
    if changes:
        return f"here {here}; the archive's ({there}) is of another config ({describe_differences(changes)})"
    if mine.finished:
        return f"finished here ({counted(mine.epochs_run, 'epoch')}); the archive's: {there}"
    if incoming.status == "diverged":
        return f"here {here}; the archive's run diverged ({incoming.error})"
    if mine.status == "running" and not incoming.finished and mine.epochs_run >= incoming.epochs_run:
        return f"here {here}; the archive's ({there}) got no further"
    return None


def unpack(archive: str | Path, results_dir: str | Path = "results",
           checkpoint_root: str | Path | None = None) -> dict:
    """Put an archive of `pack` back: results under `results_dir`, checkpoints under `checkpoint_root`.

    A run whose record here `keep_reason` keeps is left as it is, with its files and checkpoint; the
    manifest returned lists those runs under "kept" (<profile>/<row>/seed<k>) and why under "why". A
    run the archive replaces loses the files of its old record that the archive does not bring
    (train.log, attention.npz, weights.safetensors; its resume pack too unless the incoming run is the
    same config still in progress, which the pack can continue); a local checkpoint is left for
    `train_run`, which checks its config.

    Returns:
        the manifest. Raises ValueError on a member outside those two folders.
    """
    from rstn.runs import checkpoint_dir

    checkpoint_root = Path(checkpoint_root) if checkpoint_root is not None else checkpoint_dir()
    roots = {"results": Path(results_dir), "checkpoints": checkpoint_root}
    manifest: dict = {}
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        runs: dict[str, list[tarfile.TarInfo]] = {}  # <profile>/<row>/seed<k> -> its members
        for member in members:
            top, _, rest = member.name.partition("/")
            if member.name == MANIFEST_NAME:
                manifest = json.load(tar.extractfile(member))
                continue
            if top not in roots or not member.isfile() or ".." in Path(rest).parts or Path(rest).is_absolute():
                raise ValueError(f"{archive}: unexpected member {member.name!r}")
            runs.setdefault(str(Path(rest).parent), []).append(member)
        kept, replaced = {}, {}
        names = {member.name for member in members}
        for run in runs:
            here = roots["results"] / run / RUN_FILE
            name = f"results/{run}/{RUN_FILE}"
            if not here.exists() or name not in names:
                continue
            incoming = RunRecord.from_json(tar.extractfile(name).read().decode(), f"{archive}:{name}")
            try:
                mine = read_run(here)
            except ResultsError:  # an unreadable record is no result to keep
                continue
            why = keep_reason(mine, incoming)
            if why is not None:
                kept[run] = why
            else:
                replaced[run] = (mine, incoming)
        for run, run_members in runs.items():
            if run in kept:
                continue
            if run in replaced:
                _clear_replaced(roots["results"] / run, {Path(m.name).name for m in run_members}, *replaced[run])
            for member in run_members:
                top, _, rest = member.name.partition("/")
                target = roots[top] / rest
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as source:
                    tmp = target.with_name(f".{target.name}.tmp")  # git-ignored: results/**/.*.tmp*
                    tmp.write_bytes(source.read())
                    tmp.replace(target)
    manifest["kept"], manifest["why"] = sorted(kept), kept
    return manifest


def _clear_replaced(folder: Path, brought: set[str], mine: RunRecord, incoming: RunRecord) -> None:
    """Remove the files of the record that an incoming run replaces, which the archive does not bring."""
    stale = {LOG_NAME, ATTENTION_NAME, WEIGHTS_NAME} - brought
    if not (incoming.status == "running" and same_config(mine.config, incoming.config)):
        stale.add(PACK_NAME)  # the pack continues the old record's config only
    for name in stale:
        (folder / name).unlink(missing_ok=True)
