"""The explorers' Python side: self-contained HTML, the embedded data, the ipywidgets version, and the JS
sampler against rstn.sampler (run in node, without a browser; tests/browser checks it in Chromium)."""

from __future__ import annotations

import dataclasses

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from rstn import attention, explorers
from rstn.sampler import transform

ASSETS = Path(explorers.__file__).parent / "assets"


@pytest.fixture(scope="module")
def image(structured_image) -> np.ndarray:
    return structured_image


def embedded_payload(page: str) -> dict:
    """The JSON the explorer embeds in its <script type="application/json"> tag."""
    match = re.search(r'<script type="application/json" id="[^"]+">(.*?)</script>', page, re.S)
    assert match, "no embedded data"
    return json.loads(match.group(1))


def attention_runs(n: int = 5) -> tuple[np.ndarray, np.ndarray, list[explorers.AttentionRun]]:
    rng = np.random.default_rng(0)
    images = rng.random((n, 100, 100))
    labels = rng.integers(0, 10, (n, 3))
    runs = [explorers.AttentionRun("rnn-spn-d2", "RNN-SPN, d = 2", 2,
                                   rng.normal(size=(n, 3, 2, 3)).astype(np.float32), rng.integers(0, 10, (n, 3))),
            explorers.AttentionRun("ffn-spn-d3", "FFN-SPN, d = 3", 3,
                                   rng.normal(size=(n, 1, 2, 3)).astype(np.float32), rng.integers(0, 10, (n, 3)))]
    return images, labels, runs


def assert_self_contained(page: str) -> None:
    assert not re.search(r"\b(src|href)\s*=", page, re.I), "the output loads something by URL"
    assert not re.search(r"https?:|//cdn|@import|url\(|<link\b|\bfetch\(|XMLHttpRequest|import\(", page, re.I)
    # everything the explorer needs is inline: its CSS, its JS, and the call that mounts it
    assert explorers.asset("explorer.js") in page and explorers.asset("explorer.css") in page
    assert re.search(r"window\.rstnExplorer\.mount(Affine|Attention)\(", page)


def test_affine_html_is_self_contained(image):
    assert_self_contained(explorers.affine_explorer_html(image, d=2))


def test_attention_html_is_self_contained():
    assert_self_contained(explorers.attention_explorer_html(*attention_runs()))


def test_attention_explorer_opens_on_a_finished_run():
    images, labels, runs = attention_runs()
    assert embedded_payload(explorers.attention_explorer_html(images, labels, runs))["initial"] == 0
    runs[0] = dataclasses.replace(runs[0], finished=False, epochs=2)  # a row just started comes first
    assert embedded_payload(explorers.attention_explorer_html(images, labels, runs))["initial"] == 1
    runs[1] = dataclasses.replace(runs[1], finished=False, epochs=5)  # none finished: the longest trained
    assert embedded_payload(explorers.attention_explorer_html(images, labels, runs))["initial"] == 1
    page = explorers.attention_explorer_html(images, labels, runs, initial="rnn-spn-d2")
    assert embedded_payload(page)["initial"] == 0
    with pytest.raises(ValueError, match="initial row 'conv-net'"):
        explorers.attention_explorer_html(images, labels, runs, initial="conv-net")


def test_each_output_gets_its_own_element_id(image):
    ids = [re.search(r'id="(rstn-affine-[^"]+)"', explorers.affine_explorer_html(image)).group(1) for _ in range(2)]
    assert ids[0] != ids[1]


def test_script_tag_cannot_be_closed_by_the_data(image):
    page = explorers.affine_explorer_html(image, title="a </script><b>title</b>")
    assert page.count("</script>") == 3  # data, explorer.js, mount call
    assert embedded_payload(page)["title"] == "a </script><b>title</b>"


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int32", "float32"])
def test_encode_decode_round_trip(dtype):
    array = (np.arange(-12, 12).reshape(2, 3, 4) * 7.25).astype(dtype)[:, ::-1]  # not contiguous
    decoded = explorers.decode_array(explorers.encode_array(array))
    assert decoded.dtype == array.dtype and np.array_equal(decoded, array)


def test_encode_writes_little_endian_bytes():
    spec = explorers.encode_array(np.array([1, 256], dtype=">i4"))  # big-endian input
    import base64
    assert base64.b64decode(spec["data"]) == bytes([1, 0, 0, 0, 0, 1, 0, 0])


def test_encode_rejects_dtypes_the_js_cannot_read():
    with pytest.raises(ValueError, match="float64"):
        explorers.encode_array(np.zeros(3))


def test_affine_payload_round_trips(image):
    theta = [0.5, 0.1, -0.2, 0.0, 0.6, 0.3]
    payload = embedded_payload(explorers.affine_explorer_html(image, d=3, theta=theta))
    levels = explorers.decode_array(payload["image"])
    assert levels.shape == (1, 100, 100)
    assert np.array_equal(levels[0], np.round(image * 255).astype(np.uint8))
    assert np.abs(levels[0] / 255 - image).max() <= 0.5 / 255  # one grey level, half of it rounding
    assert payload["d"] == 3 and payload["theta"] == theta


def test_attention_payload_round_trips():
    images, labels, runs = attention_runs()
    payload = embedded_payload(explorers.attention_explorer_html(images, labels, runs, indices=[4, 5, 6, 7, 8]))
    assert np.array_equal(explorers.decode_array(payload["images"]), np.round(images * 255).astype(np.uint8))
    assert np.array_equal(explorers.decode_array(payload["labels"]), labels)
    assert payload["indices"] == [4, 5, 6, 7, 8]
    for run, row in zip(runs, payload["rows"], strict=True):
        assert (row["row"], row["d"]) == (run.row, run.d)
        assert np.array_equal(explorers.decode_array(row["theta"]), run.theta)  # float32, bit for bit
        assert np.array_equal(explorers.decode_array(row["predictions"]), run.predictions)


def test_bad_inputs_are_rejected(image):
    with pytest.raises(ValueError, match="d must be"):
        explorers.affine_explorer_html(image, d=5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        explorers.affine_explorer_html(image * 255)
    images, labels, runs = attention_runs()
    with pytest.raises(ValueError, match="theta must be"):
        explorers.attention_explorer_html(images[:4], labels[:4], runs)


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    """Two one-epoch smoke runs (RNN-SPN and FFN-SPN, d = 4) trained here into a temporary results dir."""
    from rstn.runlist import train_row

    results = tmp_path_factory.mktemp("results")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        for row in ("rnn-spn-d4", "ffn-spn-d4"):
            train_row(row, "smoke", 0, results_dir=results, progress=False, max_epochs=1)
        yield results


def test_saved_attention_reads_the_runs_and_their_test_images(smoke_results):
    from rstn.data import generate_sequences
    from rstn.experiments import run_config

    saved = attention.load_saved_attention(smoke_results, n_images=5)
    assert (saved.profile, saved.seed) == ("smoke", 0)  # the only profile with results
    assert [run.row for run in saved.runs] == ["rnn-spn-d4", "ffn-spn-d4"]  # Table 1 order, no conv net
    for run, steps in zip(saved.runs, (3, 1), strict=True):
        with np.load(smoke_results / "smoke" / run.row / "seed0" / "attention.npz") as npz:
            assert np.array_equal(run.theta, npz["theta"][:5]) and run.theta.shape == (5, steps, 2, 3)
            assert np.array_equal(run.predictions, npz["predictions"][:5])
        assert run.d == 4
    config = run_config("rnn-spn-d4", "smoke")
    test = generate_sequences(config.data, seed=config.data_seed)["test"]
    assert np.array_equal(saved.images, test.images[:5]) and np.array_equal(saved.labels, test.labels[:5])
    assert list(saved.indices) == [0, 1, 2, 3, 4]


def test_saved_attention_explorer_names_its_profile(smoke_results):
    saved = attention.load_saved_attention(smoke_results, n_images=3)
    page = explorers.saved_attention_explorer(saved).data
    assert_self_contained(page)
    payload = embedded_payload(page)
    assert "profile 'smoke'" in payload["note"] and payload["indices"] == [0, 1, 2]
    assert [row["row"] for row in payload["rows"]] == ["rnn-spn-d4", "ffn-spn-d4"]


def test_saved_attention_without_runs_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match="quick"):
        attention.load_saved_attention(tmp_path, profile="quick")


def test_widget_starts_at_the_identity(image):
    widget = explorers.affine_explorer_widget(image)
    np.testing.assert_allclose(widget.output, image, atol=1e-12)
    assert bytes(widget.input_view.value)[:4] == bytes(widget.output_view.value)[:4] == b"\x89PNG"


def test_widget_updates_when_a_slider_moves(image):
    widget = explorers.affine_explorer_widget(image)
    before_png, before = widget.output_view.value, widget.output.copy()
    widget.sliders["theta13"].value = 0.5  # the observer runs on the trait change
    assert widget.theta == [1.0, 0.0, 0.5, 0.0, 1.0, 0.0]
    assert widget.output_view.value != before_png
    assert not np.allclose(widget.output, before)
    reference = transform(torch.tensor(image)[None, None], torch.tensor(widget.theta).view(1, 2, 3).double())
    np.testing.assert_allclose(widget.output, reference[0, 0].numpy(), atol=1e-12)


def test_widget_observer_follows_d(image):
    widget = explorers.affine_explorer_widget(image)
    widget.d.value = 3
    assert widget.output.shape == (33, 33)
    widget.update({"name": "value", "new": 3})  # calling the observer directly recomputes the same glimpse
    assert widget.output.shape == (33, 33)


def js_transform(image: np.ndarray, cases: dict[str, tuple[list[float], int]]) -> dict[str, np.ndarray]:
    """Run explorer.js's transform in node (no DOM needed for the sampler) on each (theta, d)."""
    script = """
    globalThis.window = {};
    require(process.argv[1]);
    const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
    const image = {height: input.height, width: input.width, data: input.data};
    const out = {};
    for (const [name, [theta, d]] of Object.entries(input.cases)) {
      const o = window.rstnExplorer.transform(image, theta, d);
      out[name] = {shape: [o.height, o.width], data: Array.from(o.data)};
    }
    console.log(JSON.stringify(out));
    """
    stdin = json.dumps({"height": image.shape[0], "width": image.shape[1], "data": image.ravel().tolist(),
                        "cases": cases})
    done = subprocess.run(["node", "-e", script, str(ASSETS / "explorer.js")], input=stdin, text=True,
                          capture_output=True, check=True, timeout=60)
    return {k: np.array(v["data"]).reshape(v["shape"]) for k, v in json.loads(done.stdout).items()}


SAMPLER_CASES = {
    "identity": ([1, 0, 0, 0, 1, 0], 1),
    "zoom": ([0.5, 0, 0, 0, 0.5, 0], 1),
    "rotation": ([math.cos(0.5), -math.sin(0.5), 0.1, math.sin(0.5), math.cos(0.5), -0.2], 2),
    "translation": ([1, 0, 0.3, 0, 1, -0.25], 1),
    "attention_d3": ([0.4, 0, -0.3, 0, 0.4, 0.2], 3),
    "outside": ([0.8, 0.3, 0.9, -0.2, 1.1, -0.7], 4),  # most sample points off the image: zeros there
}


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_js_sampler_matches_rstn_sampler(image):
    got = js_transform(image, SAMPLER_CASES)
    for name, (theta, d) in SAMPLER_CASES.items():
        expected = transform(torch.tensor(image)[None, None], torch.tensor(theta, dtype=torch.float64).view(1, 2, 3),
                             d=d)[0, 0].numpy()
        assert got[name].shape == expected.shape, name
        # float64 on both sides: the same arithmetic, so far tighter than the one grey level required
        np.testing.assert_allclose(got[name], expected, atol=1e-9, err_msg=name)
