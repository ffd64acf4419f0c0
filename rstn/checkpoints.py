"""Checkpoints and resume packs: what a run in progress needs to continue, on this machine or another.

Two files hold the same state (the dict `rstn.train.fit` saves: weights, optimizer state, best weights so
far, the epoch, history, early-stopping counter, RNG states, sessions):

    checkpoint.pt  full precision, outside the work tree (`rstn.runs.checkpoint_path`), never committed;
                   a resume from it continues the run bit for bit on the same machine.
    resume.pt      the resume pack, beside run.json and committed with the results, so that a fresh clone
                   on a new machine continues the run. The weights stay float32; the optimizer state is
                   kept in bfloat16 (RMSprop's running mean of g^2 spans far more than float16's range) and
                   the best weights in float16, to keep the pack small (every committed pack stays in the
                   repository's history). A resume from it is therefore close to, not exactly, the run it
                   continues; on another processor the kernels round differently anyway.

A pack (format 2) also stores what git compresses well: each float tensor as its byte planes (all first
bytes, then all second bytes, ...), so that the sign-and-exponent bytes, which vary little, lie together for
zlib; and best weights that equal the weights (a pack written right after a best epoch) only once. Both are
lossless. Measured on ffn-spn-d2 after one epoch: 24.4 MiB of history as format 1, 22.0 byte-planed, 16.2
with the best weights stored once (benchmarks/README.md, "Resume packs in the history"). Format 1 packs are
still read.

`resume_point` picks the one to continue from: the checkpoint when it is at least as far as the pack.
"""

from __future__ import annotations

import os
import pickle
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_NAME = "checkpoint.pt"  # git-ignored by the pattern results/**/checkpoint*.pt
PACK_NAME = "resume.pt"
PACK_FORMAT = 2
READABLE_FORMATS = (1, 2)  # 1: the tensors as they are, the best weights always stored
# The reduced precision of each part of a pack; anything not named stays as the checkpoint has it.
PACK_DTYPES = {"optimizer": torch.bfloat16, "best_state": torch.float16}
PLANED_PARTS = ("model", "optimizer", "best_state")  # the parts that hold the float tensors
BEST_IS_MODEL = "rstn:best_state_is_model"  # a pack's best_state when the best weights are the weights
GIT_ZLIB_LEVEL = 6  # git's default core.compression for the objects of its history


class CheckpointError(RuntimeError):
    """A checkpoint or pack that cannot be read (truncated, or not one of ours)."""


class NewerPackError(RuntimeError):
    """A pack written by a newer rstn: not passed over (the run would start over and overwrite it)."""


def _save_atomically(path: Path, state: Mapping, tmp_name: str) -> None:
    """torch.save to a temporary file in the same folder, then rename: a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(tmp_name)
    torch.save(dict(state), tmp)
    os.replace(tmp, path)


def save_checkpoint(path: Path, state: Mapping) -> None:
    """Write a full-precision checkpoint atomically."""
    _save_atomically(Path(path), state, "checkpoint.tmp.pt")  # the temporary file is git-ignored too


def load_checkpoint(path: Path) -> dict:
    """The state `save_checkpoint` (or `write_pack`, then `read_pack`) wrote. Raises CheckpointError."""
    try:
        # weights_only=False: the state holds numpy/python RNG states besides tensors; it is our own file.
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
        raise CheckpointError(f"{path} is unreadable ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or "epoch" not in state:
        raise CheckpointError(f"{path} is not a checkpoint of rstn.train.fit")
    return state


def _map_floats(tree: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """`tree` with `fn` applied to every floating-point tensor in it (dicts, lists and tuples walked, byte
    planes kept whole; everything else as is)."""
    if isinstance(tree, torch.Tensor):
        return fn(tree) if tree.is_floating_point() else tree
    if isinstance(tree, Mapping) and not _is_planes(tree):
        return {k: _map_floats(v, fn) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_map_floats(v, fn) for v in tree)
    return tree


def _cast_floats(tree: Any, dtype: torch.dtype) -> Any:
    """`tree` with every floating-point tensor in it cast to `dtype`, on the CPU."""
    return _map_floats(tree, lambda t: t.detach().to("cpu", dtype))


def reduce_precision(state: Mapping) -> dict:
    """A checkpoint state with the parts named in PACK_DTYPES cast to their pack precision."""
    return {k: _cast_floats(v, PACK_DTYPES[k]) if k in PACK_DTYPES else v for k, v in state.items()}


_PLANES_KEYS = {"byte_planes", "dtype", "shape"}


def _is_planes(tree: Any) -> bool:
    return isinstance(tree, Mapping) and tree.keys() == _PLANES_KEYS


def _tensor_as_planes(tensor: torch.Tensor) -> dict:
    flat = tensor.detach().cpu().reshape(-1).contiguous()  # reshape: a 0-d tensor cannot view as bytes
    planes = flat.view(torch.uint8).view(-1, flat.element_size()).T.contiguous()
    return {"byte_planes": planes, "dtype": str(tensor.dtype).removeprefix("torch."), "shape": list(tensor.shape)}


def as_byte_planes(tree: Any) -> Any:
    """`tree` with every floating-point tensor stored as its byte planes: a (itemsize, numel) uint8 tensor
    whose row i holds byte i of every element, with the dtype and shape to rebuild it (contiguous: a
    channels_last tensor comes back in the default memory format, with the same values)."""
    return _map_floats(tree, _tensor_as_planes)


def from_byte_planes(tree: Any) -> Any:
    """The inverse of `as_byte_planes` (a tree without byte planes comes back as it is)."""
    if _is_planes(tree):
        return tree["byte_planes"].T.contiguous().view(getattr(torch, tree["dtype"])).reshape(tree["shape"])
    if isinstance(tree, Mapping):
        return {k: from_byte_planes(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(from_byte_planes(v) for v in tree)
    return tree


def _best_is_model(state: Mapping) -> bool:
    """Whether the best weights are exactly the weights (a checkpoint written right after a best epoch).
    The best weights are a CPU copy; the weights may still be on the GPU."""
    best, model = state.get("best_state"), state.get("model")
    if not isinstance(best, Mapping) or not isinstance(model, Mapping) or best.keys() != model.keys():
        return False
    return all(torch.equal(best[k], model[k].detach().cpu()) for k in model)


def to_pack(state: Mapping) -> dict:
    """A checkpoint state as a pack: the parts in PACK_DTYPES in reduced precision, the float tensors as byte
    planes, best weights that are the weights as BEST_IS_MODEL; marked as a pack of PACK_FORMAT."""
    packed = reduce_precision(state)
    if _best_is_model(state):
        packed["best_state"] = BEST_IS_MODEL
    packed |= {k: as_byte_planes(packed[k]) for k in PLANED_PARTS if k in packed}
    return packed | {"pack_format": PACK_FORMAT}


def from_pack(packed: Mapping) -> dict:
    """A pack as a checkpoint state: the reduced parts back in float32 (best weights stored as BEST_IS_MODEL
    come back as a copy of the weights, which they were)."""
    state = {k: from_byte_planes(v) if k in PLANED_PARTS else v for k, v in packed.items()}
    state = {k: _cast_floats(v, torch.float32) if k in PACK_DTYPES else v for k, v in state.items()}
    if state.get("best_state") == BEST_IS_MODEL:
        state["best_state"] = {k: v.clone() for k, v in state["model"].items()}
    state.pop("pack_format", None)
    return state


def pack_part_bytes(model: torch.nn.Module) -> dict[str, int]:
    """About the largest size of each part of a resume pack of `model`: its float32 weights, RMSprop's one
    running mean per trained parameter and the best weights, each in the pack's precision (the history and
    RNG states, a few kB, left out; a pack whose best weights are its weights has no best_state bytes)."""
    floats = sum(t.numel() for t in model.state_dict().values() if t.is_floating_point())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"model": floats * 4, "optimizer": trained * PACK_DTYPES["optimizer"].itemsize,
            "best_state": floats * PACK_DTYPES["best_state"].itemsize}


def pack_bytes(model: torch.nn.Module) -> int:
    """About the largest size of a resume pack of `model` (`pack_part_bytes`, summed)."""
    return sum(pack_part_bytes(model).values())


# What a byte of each part of a pack costs the history once zlib has compressed it, measured on ffn-spn-d2
# after epoch 1 (benchmarks/README.md, "Resume packs in the history"): only the sign-and-exponent byte plane
# compresses. The committed packs, written as format 2, cost within 5 % of this estimate (ffn-spn-d2 after
# epoch 42, rnn-spn-d2 after 18 and 48, ffn-spn-d3 after 77, rnn-spn-d4-bf16 after 138).
HISTORY_PER_BYTE = {"model": 11.69 / 13.83, "optimizer": 4.45 / 6.92, "best_state": 5.88 / 6.92}


def pack_history_estimate(model: torch.nn.Module) -> float:
    """About what committing a resume pack of `model` costs the history, in bytes (`HISTORY_PER_BYTE`)."""
    return sum(HISTORY_PER_BYTE[part] * size for part, size in pack_part_bytes(model).items())


def write_pack(path: Path, state: Mapping) -> None:
    """Write the resume pack of a checkpoint state atomically."""
    _save_atomically(Path(path), to_pack(state), f".{PACK_NAME}.tmp")  # git-ignored: results/**/.*.tmp*


def read_pack(path: Path) -> dict:
    """The checkpoint state a pack holds (reduced parts in float32). Raises CheckpointError, or
    NewerPackError for a pack of a format this code does not know yet."""
    packed = load_checkpoint(path)
    fmt = packed.get("pack_format")
    if isinstance(fmt, int) and fmt > PACK_FORMAT:
        raise NewerPackError(f"{path} is a resume pack of format {fmt}, newer than this rstn reads ("
                             f"{PACK_FORMAT}): update rstn (git pull) to continue the run; the pack is left as it is")
    if fmt not in READABLE_FORMATS:
        raise CheckpointError(f"{path} is not a resume pack of format {' or '.join(map(str, READABLE_FORMATS))}")
    return from_pack(packed)


def history_bytes(path: Path) -> int:
    """What a file costs the repository's history once committed: its size as git stores it (zlib)."""
    return len(zlib.compress(Path(path).read_bytes(), GIT_ZLIB_LEVEL))


def describe_pack_size(path: Path) -> str:
    """'29.0 MB, about 22.0 MiB of history': a pack's size and what committing it costs the history."""
    path = Path(path)
    return f"{path.stat().st_size / 1e6:.1f} MB, about {history_bytes(path) / 2**20:.1f} MiB of history"


@dataclass
class ResumePoint:
    """A state to continue a run from, and the file it came from."""

    state: dict
    path: Path
    kind: str  # "checkpoint" | "pack"

    @property
    def epoch(self) -> int:
        """The last epoch the state holds (0-based)."""
        return int(self.state["epoch"])

    def describe(self) -> str:
        what = "the local checkpoint" if self.kind == "checkpoint" else f"the resume pack {PACK_NAME}"
        return f"{what} ({self.path}, after epoch {self.epoch})"


def resume_point(checkpoint: Path, pack: Path, accepts: Callable[[Mapping], bool],
                 say: Callable[[str], None] = print) -> ResumePoint | None:
    """The state to resume from: the checkpoint when it is at least as far as the pack, else the pack.

    A file that is missing, unreadable or written for another config (`accepts(state["extra"]["config"])`
    is False) is passed over, saying why. None when neither can be used.
    """
    points = []
    for path, kind, read in ((Path(checkpoint), "checkpoint", load_checkpoint), (Path(pack), "pack", read_pack)):
        if not path.exists():
            continue
        try:
            state = read(path)
        except CheckpointError as err:
            say(f"{err}: not resumed from it")
            continue
        if not accepts(state.get("extra", {}).get("config", {})):
            say(f"{path} was written for another config: not resumed from it")
            continue
        points.append(ResumePoint(state, path, kind))
    if not points:
        return None
    # max keeps the first of equals: the checkpoint, which is exact
    return max(points, key=lambda p: p.epoch)


def latest_state(checkpoint: Path, pack: Path) -> dict | None:
    """The furthest readable state of a run whatever its config (for the record of a diverged run)."""
    point = resume_point(checkpoint, pack, accepts=lambda config: True, say=lambda line: None)
    return point.state if point is not None else None
