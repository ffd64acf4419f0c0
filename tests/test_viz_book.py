"""The rstn.viz pieces the chapters use: plot_attention (the Figure 3 layout of chapter 5) shows the
glimpses the sampler takes where theta says; Table shows the same cells as Markdown, text and HTML."""

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
