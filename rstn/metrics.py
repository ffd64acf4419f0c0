"""The loss and the error metrics of Table 1 (fractions in [0, 1], not %).

    error           per-digit error, 1 - accuracy over all T positions flattened (the paper's Table 1 metric)
    sequence_error  1 - fraction of sequences with all T digits right
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def sequence_loss(logits: torch.Tensor, labels: torch.Tensor, softmax_tol: float = 1e-5) -> torch.Tensor:
    """Mean over the B x T digits of -log(softmax(logits)[label] + softmax_tol).

    Args:
        logits: (B, T, K).
        labels: (B, T) int64.
        softmax_tol: the authors' code computes categorical_crossentropy(softmax + 1e-5, y); 0 gives the
            ordinary (log-softmax) cross-entropy.
    """
    flat = logits.reshape(-1, logits.shape[-1]).float()  # (B*T, K)
    target = labels.reshape(-1)
    if softmax_tol == 0:
        return F.cross_entropy(flat, target)
    p_true = flat.softmax(-1).gather(1, target[:, None]).squeeze(1)  # (B*T,)
    return -(p_true + softmax_tol).log().mean()


def digit_error(predictions: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> float:
    """Per-digit error: 1 - accuracy over every position of every sequence, flattened (Table 1's metric).

    Args:
        predictions, labels: (N, T) integer class indices.
    """
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {predictions.shape} and labels {labels.shape} differ in shape")
    return float(1.0 - np.mean(predictions == labels))


def sequence_error(predictions: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> float:
    """Whole-sequence error: 1 - fraction of sequences whose T digits are all right. (N, T) inputs."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {predictions.shape} and labels {labels.shape} differ in shape")
    return float(1.0 - np.mean(np.all(predictions == labels, axis=1)))
