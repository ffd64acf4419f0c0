"""Figures. Every function returns a matplotlib ``Figure``; nothing here is needed to compute a result.

Images are drawn with ``extent=(0, W, H, 0)``, so pixel i covers [i, i+1) on both axes: the same
convention as ``SequenceSplit.boxes`` (exclusive max edges), and a box can be drawn as it is stored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from rstn.generator import SequenceSplit
from rstn.table import estimate

# One colour per glimpse step (and digit position), in every figure and explorer: Okabe-Ito, which readers
# with colour-blindness tell apart. rstn.explorers hands it to the browser.
STEP_COLOURS = ("#E69F00", "#56B4E9", "#009E73", "#CC79A7")
BOX_COLOURS = STEP_COLOURS
# The book's text column is about 690 px wide; figures drawn at 100 dpi and at most PAGE_WIDTH_IN wide are
# shown 1:1, so a font of 9 pt stays 9 pt on the page (`use_book_style`).
PAGE_WIDTH_IN = 6.9
BOOK_STYLE = {"figure.dpi": 100, "savefig.dpi": 100, "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9,
              "xtick.labelsize": 9, "ytick.labelsize": 9, "legend.fontsize": 9, "legend.title_fontsize": 9,
              "figure.titlesize": 10, "image.cmap": "gray"}


def use_book_style() -> None:
    """Set matplotlib up as the chapters draw: 100 dpi, fonts of 9 pt and more, grey images."""
    plt.rcParams.update(BOOK_STYLE)


def plot_sequences(split: SequenceSplit, n: int = 16, boxes: bool = True, ncols: int = 4,
                   start: int = 0, size: float = PAGE_WIDTH_IN / 4) -> Figure:
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
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, extent=(0, width, height, 0),
                  interpolation="nearest")
        if boxes:
            for d, (x0, y0, x1, y1) in enumerate(np.asarray(split.boxes[i], dtype=float)):
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.2,
                                       edgecolor=BOX_COLOURS[d % len(BOX_COLOURS)]))
        ax.set_title(" ".join(str(int(label)) for label in split.labels[i]))
    fig.tight_layout()
    return fig


def plot_attention(images: np.ndarray, theta: np.ndarray, d: float = 1, labels: np.ndarray | None = None,
                   predictions: np.ndarray | None = None, boxes: np.ndarray | None = None,
                   size: float = PAGE_WIDTH_IN / 4) -> Figure:
    """Where a transformer model looks, laid out as the RNN-SPN paper's Figure 3.

    One row per image: the image with each step's glimpse outlined and numbered (the true digit boxes
    dashed), then the glimpse each step sampled, titled with the prediction (red where it is wrong).

    Args:
        images: (N, H, W) in [0, 1].
        theta: (N, T, 2, 3), output -> input in normalised coordinates (the ``rstn.sampler`` convention).
        d: down-sampling factor of the glimpses, floor(H/d) x floor(W/d) (RNN-SPN eq. 4).
        labels, predictions: (N, D) digits left to right; step t shows digit t when T = D, all D when T = 1.
        boxes: (N, D, 4) true digit boxes (x_min, y_min, x_max, y_max), exclusive max edges.
    """
    import torch

    from rstn.glimpses import glimpse_corners
    from rstn.sampler import transform

    images, theta = np.asarray(images, np.float32), np.asarray(theta, np.float32)
    n, steps = theta.shape[:2]
    height, width = images.shape[1:]
    x = torch.from_numpy(images).unsqueeze(1).repeat_interleave(steps, 0)  # (N*T, 1, H, W)
    glimpses = transform(x, torch.from_numpy(theta).reshape(n * steps, 2, 3), d=d)[:, 0].numpy()
    glimpses = glimpses.reshape(n, steps, *glimpses.shape[1:])  # (N, T, h, w)
    fig, axes = plt.subplots(n, 1 + steps, figsize=(size * (1 + steps), size * n + 0.3), squeeze=False)
    for i in range(n):
        ax = axes[i, 0]
        ax.imshow(images[i], cmap="gray", vmin=0.0, vmax=1.0, extent=(0, width, height, 0))
        if boxes is not None:
            for j, (x0, y0, x1, y1) in enumerate(np.asarray(boxes[i], dtype=float)):
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=0.8, ls="--",
                                       edgecolor=BOX_COLOURS[j % len(BOX_COLOURS)]))
        corners = glimpse_corners(theta[i], height, width)  # (T, 4, 2) pixel (x, y) of the corner samples
        for t in range(steps):
            colour = BOX_COLOURS[t % len(BOX_COLOURS)]
            outline = np.concatenate([corners[t], corners[t, :1]])  # closed
            # not clipped: an outline on the canvas edge (the identity) or beyond it stays whole
            ax.plot(outline[:, 0], outline[:, 1], color=colour, lw=1.5, clip_on=False)
            # step t's number inside corner t (of 4) of its outline, so that coinciding glimpses (all
            # identity early in training) keep their numbers apart
            corner = corners[t, t % 4]
            inward = corners[t].mean(0) - corner
            corner = corner + inward * min(1.0, 9.0 / max(float(np.hypot(*inward)), 1e-6))
            ax.text(*corner, str(t + 1), color=colour, fontsize=9, fontweight="bold", ha="center", va="center",
                    clip_on=False, bbox=dict(boxstyle="round,pad=0.15", facecolor="black", alpha=0.7, lw=0))
        # the view holds the canvas and every outline (glimpses may reach past the canvas), 2 px spare
        low = np.minimum(corners.reshape(-1, 2).min(0), 0) - 2
        high = np.maximum(corners.reshape(-1, 2).max(0), (width, height)) + 2
        ax.set(xlim=(low[0], high[0]), ylim=(high[1], low[1]), xticks=[], yticks=[])
        if labels is not None:
            ax.set_title("true " + " ".join(str(int(v)) for v in labels[i]))
        for t in range(steps):
            ax = axes[i, 1 + t]
            ax.imshow(glimpses[i, t], cmap="gray", vmin=0.0, vmax=1.0)
            ax.set(xticks=[], yticks=[])
            for side in ax.spines.values():
                side.set_edgecolor(BOX_COLOURS[t % len(BOX_COLOURS)])
            if predictions is not None:
                shown = [t] if steps == predictions.shape[1] else list(range(predictions.shape[1]))
                wrong = labels is not None and any(predictions[i, k] != labels[i, k] for k in shown)
                ax.set_title(f"step {t + 1}: " + " ".join(str(int(predictions[i, k])) for k in shown),
                             fontsize=9, color="tab:red" if wrong else "black")
    fig.tight_layout()
    return fig


FAMILY_COLOURS = {"RNN-SPN": "tab:blue", "FFN-SPN": "tab:orange", "CNN": "tab:gray"}


def plot_table1_by_d(table: Sequence, profile: str, top: float = 6.0) -> Figure:
    """Table 1's per-digit test error against d: the paper's (dashed) and ours, on a linear axis.

    The axis shows 0 to ``top`` % (the paper's numbers lie in 1.5-5.3 %), or up to our largest value when
    that is at most twice ``top``. Our values above the axis (short runs) are drawn as a triangle on its top
    edge, labelled with the value, instead of squeezing the paper's range.

    Args:
        table: the rows of :func:`rstn.table.load_table` (``model``, ``d``, ``paper_error``, ``mean``,
            ``test_errors``); profile: the profile named in the title and legend. Error bars: 2 standard errors.
    """
    ours = [r.mean for r in table if r.mean is not None]
    if ours and max(ours) <= 2 * top:
        top = max(top, 1.1 * max(r.mean + 2 * estimate(r).se for r in table if r.mean is not None))
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH_IN, 4.6))
    above = []  # (x, value, colour) of ours off the top of the axis

    def mark_above(x: float, value: float, colour: str) -> None:
        ax.plot(x, top, "^", color=colour, ms=8, clip_on=False, zorder=5)
        ax.annotate(f"{value:.0f}", (x, top), xytext=(0, 6), textcoords="offset points", ha="center",
                    color=colour, annotation_clip=False)
        above.append(value)

    for kind in ("RNN-SPN", "FFN-SPN"):
        colour = FAMILY_COLOURS[kind]
        mine = [r for r in table if r.model == kind]
        ax.plot([r.d for r in mine], [r.paper_error for r in mine], "--o", ms=3, color=colour, alpha=0.7,
                label=f"{kind}, paper")
        have = [r for r in mine if r.mean is not None and r.mean <= top]
        if have:  # the bars: 2 standard errors (`rstn.table.estimate`), the margin Table 1 judges by
            ax.errorbar([r.d for r in have], [r.mean for r in have], yerr=[2 * estimate(r).se for r in have],
                        marker="o", color=colour, capsize=3, label=f"{kind}, ours ({profile}) ± 2 SE")
        for r in mine:
            if r.mean is not None and r.mean > top:
                mark_above(r.d + (0.09 if kind == "FFN-SPN" else -0.09), r.mean, colour)
        # runs still in progress: their best-so-far error, hollow
        running = [(r.d, 100 * r.best_so_far.test_error) for r in mine
                   if r.mean is None and getattr(r, "best_so_far", None) is not None]
        if running:
            ax.plot([], [], "o", mfc="none", color=colour, ms=7, label=f"{kind}, ours in progress (best so far)")
        for d, error in running:
            if error <= top:
                ax.plot(d, error, "o", mfc="none", color=colour, ms=7)
            else:  # off the axis: a hollow triangle on the top edge, labelled
                x = d + (0.09 if kind == "FFN-SPN" else -0.09)
                ax.plot(x, top, "^", mfc="none", color=colour, ms=8, clip_on=False, zorder=5)
                ax.annotate(f"{error:.0f}", (x, top), xytext=(0, 6), textcoords="offset points", ha="center",
                            color=colour, annotation_clip=False)
                above.append(error)
    conv = next(r for r in table if r.d is None)  # no d: a horizontal line across the axis
    ax.axhline(conv.paper_error, color=FAMILY_COLOURS["CNN"], ls="--", alpha=0.7, label="conv net, paper")
    if conv.mean is not None and conv.mean <= top:
        ax.axhline(conv.mean, color=FAMILY_COLOURS["CNN"], label=f"conv net, ours ({profile})")
    elif conv.mean is not None:
        mark_above(4.35, conv.mean, FAMILY_COLOURS["CNN"])
    ax.set(xlabel="down-sampling factor d", ylabel="per-digit test error (%)", xticks=[1, 2, 3, 4],
           xlim=(0.6, 4.6), ylim=(0, top))
    title = f"Per-digit test error against d (profile {profile!r})"
    if above:
        title += f"\n▲ ours above {top:g} %, labelled with the value"
        ax.plot([], [], "^", color="black", ms=6, label=f"ours ({profile}), off the axis")
    ax.set_title(title, pad=18 if above else 6)
    # below the axes, off the data: the paper's points fill the plot's corners
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    fig.tight_layout()
    return fig


def plot_learning_curves(runs: Sequence, table: Sequence, profile: str) -> Figure:
    """Validation per-digit error per epoch, averaged over seeds, one panel per model family.

    A dot marks the epoch of best validation accuracy (rounded mean over seeds), whose test error Table 1
    reports; dashed lines are the paper's test errors; dotted verticals are the epochs after which the
    learning rate was divided (read from the runs' own histories). The error axis is logarithmic, with
    plain percentages as labels: the curves fall from chance (90 %) to a few per cent.

    Args:
        runs: run records (`rstn.records.load_runs`); table: the rows of `load_table` (for the order and
            the families); profile: named in the titles.
    """
    from matplotlib.ticker import FixedLocator, NullFormatter

    by_row: dict[str, list] = {}
    for r in runs:
        if r.history:
            by_row.setdefault(r.row, []).append(r)
    families = [kind for kind in ("RNN-SPN", "FFN-SPN", "CNN") if any(by_row.get(r.row) for r in table
                                                                      if r.model == kind)] or ["RNN-SPN"]
    fig, axes = plt.subplots(1, len(families), figsize=(PAGE_WIDTH_IN, 3.9), sharey=True, squeeze=False)
    any_decay = False
    for ax, kind in zip(axes[0], families):
        decays: set[int] = set()  # this panel's runs only: another family may have run longer
        for row in [r for r in table if r.model == kind]:
            mine = by_row.get(row.row, [])
            if not mine:
                continue
            n_epochs = min(len(r.history) for r in mine)
            curve = [100 * float(np.mean([r.history[e]["valid_error"] for r in mine])) for e in range(n_epochs)]
            line, = ax.plot(range(n_epochs), curve, label=row.row, lw=1.2)
            ax.axhline(row.paper_error, color=line.get_color(), ls="--", lw=0.8, alpha=0.7)
            best = round(float(np.mean([r.best_epoch for r in mine])))
            if best < n_epochs:
                ax.plot(best, curve[best], "o", color=line.get_color())
            lrs = [r["lr"] for r in mine[0].history[:n_epochs]]
            decays |= {e for e in range(1, n_epochs) if lrs[e] < lrs[e - 1]}
        for e in sorted(decays):
            ax.axvline(e - 0.5, color="gray", ls=":", lw=0.8)
        any_decay |= bool(decays)
        ax.set(title=f"{kind} ({profile!r})", xlabel="epoch", yscale="log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))  # epochs are whole
        if ax.lines:
            ax.legend(title="valid; paper test --", loc="upper right")
    ticks = [1, 2, 3, 5, 10, 20, 50, 100]
    axes[0][0].yaxis.set_major_locator(FixedLocator(ticks))
    axes[0][0].yaxis.set_minor_formatter(NullFormatter())
    axes[0][0].set_yticklabels([str(t) for t in ticks])
    axes[0][0].set(ylabel="validation per-digit error (%)", ylim=(1, 100))
    if any_decay:
        fig.text(0.01, 0.01, "dotted: learning rate divided by 1.5 after that epoch", color="gray")
    fig.tight_layout(rect=(0, 0.05 if any_decay else 0, 1, 1))  # room for the note under the axes
    return fig


def plot_variant_curves(pairs: Sequence[tuple[str, object, object]], profile: str) -> Figure:
    """Each variant's validation per-digit error per epoch over the row it varies, one panel per variant
    that has an epoch (chapter 8). Dots mark each run's best-validation epoch; log error axis.

    Args:
        pairs: (variant, its record, the varied row's record) as `rstn.results.variant_pairs` gives them;
            a variant whose record is None or has no epoch gets no panel.
        profile: named in the caption line under the panels.
    """
    from matplotlib.ticker import FixedLocator, NullFormatter

    drawn = [(name, mine, base) for name, mine, base in pairs if mine is not None and mine.history]
    if not drawn:
        raise ValueError("no variant has an epoch yet: nothing to draw")
    ncols = min(3, len(drawn))
    nrows = -(-len(drawn) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(PAGE_WIDTH_IN, 2.9 * nrows), sharey=True, squeeze=False)
    for ax, (name, mine, base) in zip(axes.flat, drawn):
        for record, label, style in ((base, base.row if base else None, dict(color="gray", lw=1.0)),
                                     (mine, name, dict(color="C0", lw=1.3))):
            if record is None or not record.history:
                continue
            curve = [100 * h["valid_error"] for h in record.history]
            status = "" if record.finished else ", in progress"
            ax.plot(range(len(curve)), curve, label=f"{label}{status}", **style)
            if record.best_epoch is not None and record.best_epoch < len(curve):
                ax.plot(record.best_epoch, curve[record.best_epoch], "o", color=style["color"], ms=4)
        ax.set(title=name, xlabel="epoch", yscale="log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))
        ax.legend(loc="upper right", fontsize="small")
    for ax in list(axes.flat)[len(drawn):]:
        ax.set_visible(False)
    ticks = [1, 2, 3, 5, 10, 20, 50, 100]
    for ax in axes[:, 0]:
        ax.yaxis.set_major_locator(FixedLocator(ticks))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_yticklabels([str(t) for t in ticks])
        ax.set(ylabel="validation per-digit error (%)", ylim=(1, 100))
    fig.text(0.01, 0.01, f"profile {profile!r}; dots: best-validation epoch, whose test error the table reports",
             color="gray")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def plot_run_curves(record, paper_error: float | None = None) -> Figure:
    """One run's training loss, and its train / valid / test per-digit error, per epoch (chapter 3).

    Args:
        record: a `rstn.records.RunRecord`; the dotted vertical marks its best-validation epoch.
        paper_error: the paper's test error of the row (%), drawn dashed; None for none.
    """
    history = record.history
    epochs = [r["epoch"] for r in history]
    fig, (loss_ax, error_ax) = plt.subplots(1, 2, figsize=(PAGE_WIDTH_IN, 2.9))
    loss_ax.plot(epochs, [r["train_loss"] for r in history], marker="." if len(epochs) < 30 else None)
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="training loss")
    for split in ("train", "valid", "test"):
        error_ax.plot(epochs, [100 * r[f"{split}_error"] for r in history], marker="." if len(epochs) < 30 else None,
                      label=split, lw=1.2)
    if record.best_epoch is not None:
        error_ax.axvline(record.best_epoch, color="gray", ls=":", label="best valid")
    if paper_error is not None:
        error_ax.axhline(paper_error, color="black", ls="--", lw=0.8, label="paper (test)")
    error_ax.set(xlabel="epoch", ylabel="per-digit error (%)", title=f"{record.row} ({record.profile!r})")
    if len(epochs) >= 30:  # a long run falls from chance to a few per cent: a log axis shows both
        from matplotlib.ticker import FuncFormatter

        error_ax.set_yscale("log")
        error_ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # 1, 10, 100
    error_ax.legend(loc="upper right")
    for ax in (loss_ax, error_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))  # epochs are whole
    fig.tight_layout()
    return fig


class Table:
    """A small table for the chapters: Markdown in the book and Jupyter, aligned plain text elsewhere.

    The plain text (``repr``) is what nbval compares and a terminal prints; ``_repr_markdown_`` is what
    the book renders; ``to_html`` is for cross-page glue, which carries HTML but not Markdown.

    Args:
        header: column names; rows: one sequence of cells (str) per row, as many as the header;
        caption: Markdown shown under the table (``**`` and backticks are dropped from the plain text).
    """

    def __init__(self, header: Sequence[str], rows: Sequence[Sequence[str]], caption: str = "") -> None:
        self.header, self.rows, self.caption = list(header), [list(map(str, r)) for r in rows], caption
        bad = [r for r in self.rows if len(r) != len(self.header)]
        if bad:
            raise ValueError(f"{len(self.header)} columns in the header, but a row has {len(bad[0])}: {bad[0]}")

    def _repr_markdown_(self) -> str:
        lines = [self.header, ["---"] * len(self.header), *self.rows]
        table = "\n".join("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in lines)
        return table + (f"\n\n{self.caption}" if self.caption else "")

    def __repr__(self) -> str:
        widths = [max(len(cell) for cell in column) for column in zip(self.header, *self.rows)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [self.header, *self.rows]]
        plain = self.caption.replace("**", "").replace("`", "")
        return "\n".join(lines + ([plain] if plain else []))

    def to_html(self) -> str:
        from html import escape

        head = "".join(f"<th>{escape(c)}</th>" for c in self.header)
        body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in self.rows)
        caption = escape(self.caption.replace("**", "").replace("`", ""))
        return (f"<table class='table'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
                + (f"<p>{caption}</p>" if caption else ""))
