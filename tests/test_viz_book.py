"""The rstn.viz pieces the chapters use: plot_attention (the Figure 3 layout of chapter 5) shows the
glimpses the sampler takes where theta says; Table shows the same cells as Markdown, text and HTML; the
paper map (chapter 6) names tests that exist and finds the code's marks."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from rstn import viz
from rstn.sampler import attention_theta, transform


def test_plot_attention_crops_are_the_sampled_glimpses():
    rng = np.random.default_rng(0)
    images = rng.random((2, 100, 100), dtype=np.float32)
    theta = torch.stack([attention_theta(0.3, -0.5, 0.2), attention_theta(0.4, 0.0, 0.0),
                         torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])])  # (3, 2, 3)
    theta = theta.expand(2, -1, -1, -1).numpy()  # (2, 3, 2, 3)
    labels = np.array([[1, 2, 3], [4, 5, 6]])
    predictions = np.array([[1, 2, 0], [4, 5, 6]])
    fig = viz.plot_attention(images, theta, d=2, labels=labels, predictions=predictions,
                             boxes=np.tile([[0, 0, 28, 28]], (2, 3, 1)))
    try:
        axes = np.array(fig.axes).reshape(2, 4)
        for i in range(2):
            for t in range(3):
                shown = axes[i, 1 + t].images[0].get_array()
                expected = transform(torch.from_numpy(images[i : i + 1, None]), torch.from_numpy(theta[i, t : t + 1]),
                                     d=2)[0, 0].numpy()
                assert shown.shape == (50, 50)
                np.testing.assert_allclose(shown, expected, atol=1e-6)
        assert axes[0, 3].get_title() == "step 3: 0" and axes[0, 3].title.get_color() == "tab:red"
        assert axes[1, 3].title.get_color() == "black"
        # step 3 is the identity: its outline runs through the centres of the corner pixels, 0.5 and 99.5
        outline = axes[0, 0].lines[2].get_xydata()
        np.testing.assert_allclose(outline[:4], [[0.5, 0.5], [99.5, 0.5], [99.5, 99.5], [0.5, 99.5]], atol=1e-4)
        assert not any(line.get_clip_on() for line in axes[0, 0].lines)  # outlines on the edge are drawn whole
    finally:
        plt.close(fig)


def test_plot_attention_keeps_the_numbers_of_coinciding_glimpses_apart():
    """Early in training every step is the identity: the three outlines coincide, their numbers must not."""
    theta = np.tile(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32), (1, 3, 1, 1))  # (1, 3, 2, 3)
    fig = viz.plot_attention(np.zeros((1, 100, 100), np.float32), theta, d=4)
    try:
        texts = [t for t in fig.axes[0].texts]
        assert [t.get_text() for t in texts] == ["1", "2", "3"]
        positions = np.array([t.get_position() for t in texts])
        gaps = np.hypot(*(positions[:, None] - positions[None]).transpose(2, 0, 1))
        assert gaps[~np.eye(3, dtype=bool)].min() > 50  # in different corners of the 100 x 100 canvas
        assert ((positions > 0) & (positions < 100)).all()  # inside the canvas
    finally:
        plt.close(fig)


def test_table_markdown_text_and_html_hold_the_same_cells():
    table = viz.Table(["row", "error (%)"], [["rnn-spn-d2", "1.50"], ["a|b", "-"]], caption="Profile **quick**; `x`.")
    assert table._repr_markdown_().splitlines() == [
        "| row | error (%) |", "| --- | --- |", "| rnn-spn-d2 | 1.50 |", "| a\\|b | - |", "", "Profile **quick**; `x`."]
    assert repr(table).splitlines() == ["row         error (%)", "rnn-spn-d2  1.50", "a|b         -",
                                        "Profile quick; x."]
    html = table.to_html()
    assert html.count("<tr>") == 3 and "<td>a|b</td>" in html and "<p>Profile quick; x.</p>" in html
    with pytest.raises(ValueError, match="2 columns"):
        viz.Table(["a", "b"], [["only one"]])


def test_paper_map_names_existing_tests_and_notices_missing_ones(tmp_path):
    from pathlib import Path

    from rstn import papermap

    assert papermap.missing_tests(Path(__file__).parent) == []
    (tmp_path / "test_one.py").write_text("def test_affine_grid_matches_torch():\n    pass\n")
    missing = papermap.missing_tests(tmp_path)
    assert "test_affine_grid_matches_torch" not in missing and "test_output_size_from_d" in missing
    assert len(papermap.paper_map_table().rows) == len(papermap.PAPER_MAP)


def test_code_marks_reads_comments_not_strings(tmp_path):
    from rstn import papermap

    (tmp_path / "mod.py").write_text(
        '"""A docstring that says # paper: not a mark."""\n\n\n'
        "class Config:\n"
        "    lr: float = 5e-4  # paper: RMSprop, lr 5e-4\n\n\n"
        "def f():\n"
        "    # deviation: the code does it otherwise,\n"
        "    # and says why on the next line\n"
        "    return 1\n")
    assert papermap.code_marks(tmp_path) == [
        ("rstn.mod", "Config", "paper", "RMSprop, lr 5e-4"),
        ("rstn.mod", "f", "deviation", "the code does it otherwise, and says why on the next line")]
    assert any(m[0] == "rstn.sampler" and m[2] == "deviation" for m in papermap.code_marks())


def test_learning_curves_mark_each_panels_own_lr_decays():
    """The dotted lr-decay lines of one model family do not leak into another family's panel."""
    from types import SimpleNamespace as NS

    def run(row, lrs):
        history = [{"lr": lr, "valid_error": 0.5 / (e + 1)} for e, lr in enumerate(lrs)]
        return NS(row=row, history=history, best_epoch=len(lrs) - 1)

    runs = [run("rnn-spn-d4", [5e-4] * 8 + [3e-4] * 4), run("ffn-spn-d4", [5e-4] * 3)]
    table = [NS(row="rnn-spn-d4", model="RNN-SPN", paper_error=2.3), NS(row="ffn-spn-d4", model="FFN-SPN", paper_error=5.3)]
    fig = viz.plot_learning_curves(runs, table, "smoke")
    try:
        rnn, ffn = fig.axes
        def verticals(ax):
            return [line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == ":"]
        assert verticals(rnn) == [7.5]
        assert verticals(ffn) == [] and ffn.get_xlim()[1] < 3
    finally:
        plt.close(fig)


def test_variant_curves_draw_a_panel_per_variant_with_an_epoch_over_the_row_it_varies():
    from types import SimpleNamespace as NS

    def run(row, errors, finished=True):
        return NS(row=row, history=[{"valid_error": e} for e in errors],
                  best_epoch=int(np.argmin(errors)) if errors else None, finished=finished)

    base = run("rnn-spn-d4", [0.9, 0.1, 0.05, 0.02])
    pairs = [("rnn-spn-d4-bf16", run("rnn-spn-d4-bf16", [0.8, 0.2], finished=False), base),
             ("rnn-spn-d3-feedback", None, run("rnn-spn-d3", [0.9, 0.03])),
             ("rnn-spn-d3-glimpses2", run("rnn-spn-d3-glimpses2", []), None)]
    fig = viz.plot_variant_curves(pairs, "paper")
    try:
        (ax,) = [a for a in fig.axes if a.get_visible()]
        assert ax.get_title() == "rnn-spn-d4-bf16"
        curves = {line.get_label(): list(line.get_ydata()) for line in ax.lines if not line.get_label().startswith("_")}
        assert curves == {"rnn-spn-d4": pytest.approx([90, 10, 5, 2]),
                          "rnn-spn-d4-bf16, in progress": pytest.approx([80, 20])}
        best = [(line.get_xdata()[0], line.get_ydata()[0]) for line in ax.lines if line.get_marker() == "o"]
        assert best == [(3, pytest.approx(2)), (1, pytest.approx(20))]  # the row's, then the variant's
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="no variant has an epoch yet"):
        viz.plot_variant_curves(pairs[1:], "paper")
