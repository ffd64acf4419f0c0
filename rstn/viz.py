"""Figures. Every function returns a matplotlib ``Figure``; nothing here is needed to compute a result.

Images are drawn with ``extent=(0, W, H, 0)``, so pixel i covers [i, i+1) on both axes: the same
convention as ``SequenceSplit.boxes`` (exclusive max edges), and a box can be drawn as it is stored.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from rstn.data import SequenceSplit

BOX_COLOURS = ("tab:red", "tab:green", "tab:blue", "tab:orange", "tab:purple")


def plot_sequences(split: SequenceSplit, n: int = 16, boxes: bool = True, ncols: int = 4,
                   start: int = 0, size: float = 2.2) -> Figure:
    """A grid of ``n`` images from ``split`` (from index ``start``), titled with their labels left to right.

    Args:
        split: images (N, S, S) in [0, 1], labels (N, D), boxes (N, D, 4) as (x_min, y_min, x_max, y_max).
        boxes: outline each digit's box, one colour per position (left to right).
        ncols: images per row; size: inches per image.
    """
    n = max(0, min(n, len(split) - start))
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, i in zip(axes.flat, range(start, start + n)):
        image = split.images[i]
        height, width = image.shape
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, extent=(0, width, height, 0), interpolation="nearest")
        if boxes:
            for d, (x0, y0, x1, y1) in enumerate(np.asarray(split.boxes[i], dtype=float)):
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.2,
                                       edgecolor=BOX_COLOURS[d % len(BOX_COLOURS)]))
        ax.set_title(" ".join(str(int(label)) for label in split.labels[i]), fontsize=10)
    fig.tight_layout()
    return fig
