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
import tempfile
from pathlib import Path

import torch

from rstn.checkpoints import (
    PACK_FORMAT,
    PLANED_PARTS,
    as_byte_planes,
    history_bytes,
    load_checkpoint,
    reduce_precision,
    to_pack,
)


def mib(obj, folder: Path) -> tuple[float, float]:
    """(raw, in the history) MiB of `obj` saved with torch.save."""
    path = folder / "part.pt"
    torch.save(obj, path)
    return path.stat().st_size / 2**20, history_bytes(path) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a checkpoint.pt of rstn.train.fit")
    args = parser.parse_args()
    state = load_checkpoint(args.checkpoint)
    reduced = reduce_precision(state)
    layouts = {"format 1": reduced | {"pack_format": 1},
               "format 2": reduced | {k: as_byte_planes(reduced[k]) for k in PLANED_PARTS}  # best weights stored
               | {"pack_format": PACK_FORMAT},
               "format 2, best = model": to_pack(state | {"best_state": state["model"]})}
    print(f"{args.checkpoint} (after epoch {state['epoch']}, best epoch {state['best_epoch']}); MiB raw / in history")
    print(f"| layout | {' | '.join(PLANED_PARTS)} | whole pack |")
    print("|---|" + "---:|" * (len(PLANED_PARTS) + 1))
    with tempfile.TemporaryDirectory() as folder:
        for name, pack in layouts.items():
            parts = ["%.2f / %.2f" % mib(pack[k], Path(folder)) for k in PLANED_PARTS]  # a marker: a few bytes
            print(f"| {name} | {' | '.join(parts)} | %.2f / **%.2f** |" % mib(pack, Path(folder)))


if __name__ == "__main__":
    main()
