"""The trained weights of finished runs: writing them (weights.safetensors, float16) and loading them.

A finished run keeps its best-validation weights beside its run.json (`rstn.runs` writes them when the run
finishes). `load_trained` rebuilds the model from the record's config and loads them; `trained_glimpses`
runs it over the run's test split (chapter 5 scores attention beyond the images the run saved).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rstn.configs import filled
from rstn.experiments import get_row, run_dir
from rstn.records import RUN_FILE, RunRecord, read_run
from rstn.weights import WEIGHTS_NAME, load_weights, save_weights


def save_best_weights(path: Path, best_state: Mapping[str, torch.Tensor], record: RunRecord) -> int:
    """weights.safetensors: the best-validation weights in float16, with the epoch and config as metadata."""
    return save_weights(path, best_state, {"row": record.row, "profile": record.profile, "seed": str(record.seed),
                                           "epoch": str(record.best_epoch), "config": json.dumps(record.config)})


def load_trained(row: str, profile: str = "paper", seed: int = 0, *, results_dir: str | Path = "results",
                 device: str | torch.device = "cpu") -> nn.Module:
    """The model of a finished run with its best-validation weights (float16 on disk, float32 here), in
    eval mode. Example: `load_trained("rnn-spn-d3")(x).theta`.

    Raises:
        FileNotFoundError: the run has no weights (not finished, or finished before runs kept them).
    """
    from rstn.models import ModelConfig, build_model

    folder = run_dir(results_dir, profile, get_row(row).name, seed)
    path = folder / WEIGHTS_NAME
    if not path.exists():
        status = read_run(folder / RUN_FILE).status if (folder / RUN_FILE).exists() else "not run"
        raise FileNotFoundError(f"{path} does not exist ({profile}/{row}/seed{seed}: {status}); only runs that "
                                "finished with a checkpoint of their best epoch have weights")
    record = read_run(folder / RUN_FILE)
    model = build_model(filled(ModelConfig, record.config["model"]))
    tensors, _ = load_weights(path)
    model.load_state_dict(tensors)
    return model.to(device).eval()


@torch.no_grad()
def trained_glimpses(row: str, profile: str = "paper", seed: int = 0, n: int = 1000, *,
                     results_dir: str | Path = "results", batch: int = 250) -> tuple[np.ndarray, np.ndarray]:
    """(theta (n, T, 2, 3), boxes (n, 3, 4)) of a finished run's trained model (`load_trained`) on the first
    `n` sequences of its test split: attention beyond the images the run saved (chapter 5)."""
    from rstn.data import load_sequences
    from rstn.generator import SequenceConfig

    model = load_trained(row, profile, seed, results_dir=results_dir)
    record = read_run(run_dir(results_dir, profile, get_row(row).name, seed) / RUN_FILE)
    test = load_sequences(filled(SequenceConfig, record.config["data"]), seed=record.config.get("data_seed", 0))["test"]
    n = min(n, len(test.labels))
    images = torch.as_tensor(np.asarray(test.images[:n]), dtype=torch.float32).unsqueeze(1)  # (n, 1, H, W)
    thetas = [model(images[a:a + batch]).theta for a in range(0, n, batch)]
    return torch.cat(thetas).numpy(), np.asarray(test.boxes[:n], dtype=np.float32)


def has_weights(row: str, profile: str = "paper", seed: int = 0, results_dir: str | Path = "results") -> bool:
    """Did this run finish and keep its weights (weights.safetensors beside its run.json)?"""
    return (run_dir(results_dir, profile, get_row(row).name, seed) / WEIGHTS_NAME).exists()


def describe_trained_glimpses(rows: list[str], profile: str = "paper", seed: int = 0, *, n: int = 1000,
                              results_dir: str | Path = "results") -> str:
    """Chapter 5's look beyond the saved images: for each of `rows` with weights, its trained model's
    glimpses on the first `n` test sequences (`describe_scored`), one line each; or why there are none."""
    from rstn.generator import SequenceConfig
    from rstn.glimpses import describe_scored

    lines = []
    for row in [r for r in rows if has_weights(r, profile, seed, results_dir)]:
        theta, boxes = trained_glimpses(row, profile, seed, n=n, results_dir=results_dir)
        record = read_run(run_dir(results_dir, profile, row, seed) / RUN_FILE)
        canvas = filled(SequenceConfig, record.config["data"]).canvas_size
        lines.append(describe_scored(f"{row}, its trained weights", theta, boxes, canvas, canvas))
    return "\n".join(lines) or ("none of these runs kept its trained weights (they finished before runs did), so "
                                "these numbers come from the test images each run saved")
