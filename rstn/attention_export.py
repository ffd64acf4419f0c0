"""A model's attention on the first test images, as a run saves it at its best-validation epoch
(``attention.npz`` in the run's folder; `rstn.saved_attention` reads it back).

theta follows the convention of :mod:`rstn.sampler` (output grid -> input sample points, normalised
[-1, 1], ``align_corners=True``, (x, y) order).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


@torch.no_grad()
def attention_arrays(model: nn.Module, split: Any, n: int, device: torch.device) -> dict[str, np.ndarray]:
    """theta, predictions and labels for the first n images of `split` (what a run saves as attention.npz).

    Args:
        model: an rstn model whose output has ``logits`` (B, 3, K) and ``theta`` (B, T, 2, 3) or None.
        split: images (N, H, W) in [0, 1], labels (N, 3), optionally boxes (N, 3, 4).

    Returns:
        indices (n,), theta (n, T, 2, 3) float32 (T = 0 for the conv net), probabilities (n, 3, K)
        float32, predictions (n, 3), labels (n, 3), boxes (n, 3, 4) float32 when the split has them.
    """
    n = min(n, len(split.labels))
    model.eval()
    x = torch.as_tensor(np.asarray(split.images[:n]), dtype=torch.float32, device=device).unsqueeze(1)
    out = model(x)
    theta = out.theta.float().cpu().numpy() if out.theta is not None else np.zeros((n, 0, 2, 3), np.float32)
    arrays = {"indices": np.arange(n), "theta": theta.astype(np.float32),
              "probabilities": out.logits.float().softmax(-1).cpu().numpy().astype(np.float32),
              "predictions": out.logits.argmax(-1).cpu().numpy(), "labels": np.asarray(split.labels[:n])}
    if getattr(split, "boxes", None) is not None:
        arrays["boxes"] = np.asarray(split.boxes[:n], dtype=np.float32)
    return arrays
