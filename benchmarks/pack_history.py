"""What a run's resume pack costs the repository's history, pack format 1 against format 2.

Every committed pack stays in the history, which must stay under 150 MiB, so what counts is the size git
stores: the file compressed with zlib (`rstn.checkpoints.history_bytes`). From one checkpoint this writes
the pack three ways and reports each part's share:

    format 1                 the reduced parts cast (optimizer bf16, best weights fp16), tensors as they are
    format 2                 the same values with every float tensor as its byte planes
    format 2, best = model   as a pack written right after a best epoch stores it (best weights once)

    .venv/bin/python benchmarks/pack_history.py ~/.cache/rstn/checkpoints/paper/ffn-spn-d2/seed0/checkpoint.pt
"""

from __future__ import annotations

import argparse
import io
import zlib
from pathlib import Path

import torch

from rstn.checkpoints import GIT_ZLIB_LEVEL, PACK_DTYPES, PLANED_PARTS, as_byte_planes, load_checkpoint, to_pack


def history_mib(obj) -> tuple[float, float]:
    """(raw, as git stores it) MiB of `obj` saved with torch.save."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    raw = buffer.getvalue()
    return len(raw) / 2**20, len(zlib.compress(raw, GIT_ZLIB_LEVEL)) / 2**20


def cast(tree, dtype):
    if isinstance(tree, torch.Tensor):
        return tree.to(dtype) if tree.is_floating_point() else tree
    if isinstance(tree, dict):
        return {k: cast(v, dtype) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(cast(v, dtype) for v in tree)
    return tree


def format_1(state: dict) -> dict:
    return {k: cast(v, PACK_DTYPES[k]) if k in PACK_DTYPES else v for k, v in state.items()} | {"pack_format": 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a checkpoint.pt of rstn.train.fit")
    args = parser.parse_args()
    state = load_checkpoint(args.checkpoint)
    old = format_1(state)
    layouts = {"format 1": old,
               "format 2": old | {k: as_byte_planes(old[k]) for k in PLANED_PARTS},  # best weights stored
               "format 2, best = model": to_pack(state | {"best_state": state["model"]})}
    print(f"{args.checkpoint} (after epoch {state['epoch']}, best epoch {state['best_epoch']}); MiB raw / in history")
    print(f"| layout | {' | '.join(PLANED_PARTS)} | whole pack |")
    print("|---|" + "---:|" * (len(PLANED_PARTS) + 1))
    for name, pack in layouts.items():
        parts = ["%.2f / %.2f" % history_mib(pack[k]) for k in PLANED_PARTS]  # a marker: a few bytes
        print(f"| {name} | {' | '.join(parts)} | %.2f / **%.2f** |" % history_mib(pack))


if __name__ == "__main__":
    main()
