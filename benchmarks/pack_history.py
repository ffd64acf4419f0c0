"""What a run's resume pack costs the repository's history, pack format 1 against format 2.

Every committed pack stays in the history, which must stay under 150 MiB, so what counts is the size git
stores: the file compressed with zlib (`rstn.checkpoints.history_bytes`). From one checkpoint this writes
the pack three ways and reports each part's share:

    format 1                 the reduced parts cast (optimizer bf16, best weights fp16), tensors as they are
    format 2                 the same values with every float tensor as its byte planes
    format 2, best = model   as a pack written right after a best epoch stores it (best weights once)

    .venv/bin/python benchmarks/pack_history.py ~/.cache/rstn/checkpoints/paper/ffn-spn-d2/seed0/checkpoint.pt

With --estimate, for each checkpoint or pack (of either format) it prints instead what the pack written
from it today (format 2) costs the history against the queue's estimate for its row
(`rstn.checkpoints.pack_history_estimate`):

    .venv/bin/python benchmarks/pack_history.py --estimate results/paper/*/seed*/resume.pt
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
    from_pack,
    history_bytes,
    load_checkpoint,
    pack_history_estimate,
    reduce_precision,
    to_pack,
)


def mib(obj, folder: Path) -> tuple[float, float]:
    """(raw, in the history) MiB of `obj` saved with torch.save."""
    path = folder / "part.pt"
    torch.save(obj, path)
    return path.stat().st_size / 2**20, history_bytes(path) / 2**20


def estimate_against_cost(paths: list[Path]) -> None:
    """For each checkpoint or pack: the history cost of its format-2 pack against the row's estimate."""
    from rstn.experiments import run_config
    from rstn.models import build_model

    print("| state | row | epoch | in history (MiB) | estimate (MiB) | cost / estimate |")
    print("|---|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        for path in paths:
            state = load_checkpoint(path)
            state = from_pack(state) if "pack_format" in state else state
            config = state["extra"]["config"]
            cost = mib(to_pack(state), Path(folder))[1]
            model = build_model(run_config(config["row"], config["profile"]).model)
            estimate = pack_history_estimate(model) / 2**20
            print(f"| {path} | {config['row']} | {state['epoch']} | {cost:.2f} | {estimate:.2f} "
                  f"| {cost / estimate:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, nargs="+", help="a checkpoint.pt of rstn.train.fit (with "
                        "--estimate: checkpoints or resume packs, any number)")
    parser.add_argument("--estimate", action="store_true", help="each state's pack against the queue's estimate")
    args = parser.parse_args()
    if args.estimate:
        return estimate_against_cost(args.checkpoint)
    if len(args.checkpoint) > 1:
        parser.error("one checkpoint at a time without --estimate")
    args.checkpoint = args.checkpoint[0]
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
