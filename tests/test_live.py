"""The live explorer's Python side (rstn.live, rstn.scenes): quantisation, the payload, the input pieces
against the generator, the choice of a finished run, the one line without one, and live.js's forward pass
in node against PyTorch (tests/browser/test_live_page.py runs it in Chromium)."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rstn import explorers, live, scenes
from rstn.data import SequenceConfig, generate_sequences
from rstn.models import ffn_spn, relu_before_pool, rnn_spn

ASSETS = Path(live.__file__).parent / "assets"
SMALL = SequenceConfig(n_train=0, n_valid=0, n_test=40)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return live.random_model(d=3, seed=0)


@pytest.fixture(scope="module")
def material(mnist_file) -> scenes.Material:
    return scenes.scene_material(SMALL, seed=0, n_sequences=8, data_dir=mnist_file.parent)


def payload_of(page: str) -> dict:
    match = re.search(r'<script type="application/json" id="rstn-live-[^"]+">(.*?)</script>', page, re.S)
    assert match, "no embedded data"
    return json.loads(match.group(1))


def decode(spec: dict) -> np.ndarray:
    """A payload tensor as live.js decodes it, in numpy (float32)."""
    raw = base64.b64decode(spec["data"])
    if spec["dtype"] == "float16":
        return np.frombuffer(raw, "<f2").astype(np.float32).reshape(spec["shape"])
    values = explorers.decode_array(spec).astype(np.float32)
    if spec["dtype"] == "int8":
        shape = [1] * values.ndim
        shape[spec["axis"]] = -1
        values = values * explorers.decode_array(spec["scale"]).reshape(shape)
    return values


@pytest.mark.parametrize("shape, axis", [((20, 1, 3, 3), 0), ((1620, 768), 1), ((400, 512), 0)])
def test_quantise_round_trip_is_within_half_a_step(shape, axis):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(shape, generator=generator) * torch.rand(shape[axis], generator=generator).reshape(
        [-1 if i == axis else 1 for i in range(len(shape))])
    weight.select(axis, 1).zero_()  # an all-zero channel: scale 1, q 0
    q, scale = live.quantise(weight, axis)
    assert q.dtype == torch.int8 and q.shape == weight.shape and scale.shape == (shape[axis],)
    assert int(q.abs().max()) == 127 and scale[1] == 1 and not q.select(axis, 1).any()
    error = (live.dequantise(q, scale, axis) - weight).abs()
    step = scale.reshape([-1 if i == axis else 1 for i in range(len(shape))])
    assert bool((error <= step / 2 * (1 + 1e-6)).all())
    peaks = weight.abs().amax(dim=[i for i in range(len(shape)) if i != axis])
    torch.testing.assert_close(scale[peaks > 0], peaks[peaks > 0] / 127)


@pytest.mark.parametrize("precision", live.PRECISIONS)
def test_page_state_changes_only_the_weights(model, precision):
    state, page = model.state_dict(), live.page_state(model, precision)
    assert set(page) == set(state)
    for name, tensor in state.items():
        axis = live.channel_axis(name, tensor)
        if axis is None:  # biases and h0 travel as float32
            assert torch.equal(page[name], tensor), name
        elif precision == "fp16":
            assert torch.equal(page[name], tensor.half().float()), name
        else:
            assert torch.equal(page[name], live.dequantise(*live.quantise(tensor, axis), axis)), name
    assert live.channel_axis("gru.input_weight", state["gru.input_weight"]) == 1  # (in, 3 hidden): per column
    with pytest.raises(ValueError, match="precision"):
        live.page_state(model, "int4")


@pytest.mark.parametrize("precision", live.PRECISIONS)
def test_payload_holds_the_page_state(model, precision):
    spec = live.model_payload(model, precision)
    page = live.page_state(model, precision)
    assert (spec["d"], spec["glimpse"], spec["steps"], spec["inputSize"]) == (3, 33, 3, 100)
    assert [op["op"] for op in spec["localisation"]] == \
        ["maxpool", "conv", "maxpool", "relu", "conv", "maxpool", "relu", "conv", "relu"]
    assert [op["op"] for op in spec["classifier"]] == \
        ["conv", "maxpool", "relu", "conv", "maxpool", "relu", "conv", "relu", "dense", "relu"]
    weighted = [op for op in spec["localisation"] + spec["classifier"] if "weight" in op]
    names = [n for n in page if n.startswith(("localisation", "classifier"))]
    decoded = [decode(t) for op in weighted for t in (op["weight"], op["bias"])]
    assert len(decoded) == len(names)
    for name, values in zip(names, decoded):
        np.testing.assert_array_equal(values, page[name].numpy(), err_msg=name)
    gru = spec["gru"]
    for name, values in [("gru.input_weight", gru["inputWeight"]), ("gru.hidden_weight", gru["hiddenWeight"]),
                         ("gru.bias", gru["bias"]), ("gru.initial_state", gru["h0"]),
                         ("theta.weight", spec["theta"]["weight"]), ("head.bias", spec["head"]["bias"])]:
        np.testing.assert_array_equal(decode(values), page[name].numpy(), err_msg=name)
    weights = sum(t.numel() for n, t in page.items() if live.channel_axis(n, t) is not None)
    per_weight = {"int8": 1, "fp16": 2}[precision]
    assert per_weight * weights < spec["weightBytes"] < per_weight * weights + 60_000  # + scales, biases, h0


def test_the_op_list_follows_the_model():
    model = rnn_spn(d=3)
    reordered = live.model_payload(relu_before_pool(model), "fp16")  # the authors' conv-ReLU-pool order
    assert [op["op"] for op in reordered["localisation"]][:4] == ["maxpool", "conv", "relu", "maxpool"]
    assert "h0" in live.model_payload(model, "fp16")["gru"]
    assert "h0" not in live.model_payload(rnn_spn(d=3, gru_learn_init=False), "fp16")["gru"]  # a zero state


@pytest.mark.parametrize("make, match", [
    (lambda: ffn_spn(d=3), "RNN-SPN"),
    (lambda: rnn_spn(d=3, sampler="lasagne2015"), "sampler"),
    (lambda: rnn_spn(d=3, glimpses_per_digit=2), "extensions"),
])
def test_models_the_page_cannot_run_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        live.model_payload(make(), "int8")


def test_real_sequences_compose_to_the_generators_test_images(material, mnist_file):
    test = generate_sequences(SMALL, seed=0, data_dir=mnist_file.parent)["test"]
    for scene in material.sequences:
        np.testing.assert_array_equal(scenes.compose(material, scene), test.images[scene.index])
        assert material.labels[list(scene.digits)].tolist() == test.labels[scene.index].tolist()
        assert len(scene.patches) == SMALL.n_clutter
    images, labels = scenes.first_test_images(SMALL, seed=0, n=12, data_dir=mnist_file.parent)
    np.testing.assert_array_equal(images, test.images[:12])
    np.testing.assert_array_equal(labels, test.labels[:12])


def test_material_shapes_and_strip(material):
    assert material.digits.dtype == np.uint8 and material.digits.shape[1:] == (28, 28)
    assert material.patches.dtype == np.uint8 and material.patches.shape[1:] == (9, 9)
    assert material.labels[list(material.strip)].tolist() == [c for c in range(10) for _ in range(3)]
    assert len(material.sequences) == 8 and [s.index for s in material.sequences] == list(range(8))
    payload = scenes.material_payload(material)
    json.dumps(payload)  # JSON-ready
    assert payload["layout"] == {"canvas": 100, "digit": 28, "nDigits": 3, "xPlacement": "abut", "slope": [-14, 13],
                                 "nClutter": 8, "clutterSize": 9}
    assert explorers.decode_array(payload["digits"]).shape == material.digits.shape


def test_compose_overlaps_and_bounds(material):
    one = scenes.Scene((0, 0, 0), ((10, 10), (10, 10), (50, 40)), clutter=False)
    image = scenes.compose(material, one)
    np.testing.assert_array_equal(image[10:38, 10:38], material.digits[0] / np.float32(256))  # max of equals
    assert image.dtype == np.float32 and image.max() <= 1
    with pytest.raises(ValueError, match="inside"):
        scenes.compose(material, dataclasses.replace(one, digit_xy=((73, 0), (0, 0), (0, 0))))


def test_without_a_finished_run_the_page_says_so_in_one_line(tmp_path):
    page = live.live_explorer_html(results_dir=tmp_path)
    line = live.missing_line(tmp_path)
    assert 'id="live-model"' in page and 'data-role="missing"' in page
    assert line in re.sub(r"<[^>]+>", "", page)  # the row names sit in spans that keep them in one piece
    assert "<script" not in page and "\n" not in line
    assert line == ("The live model needs a finished RNN-SPN run with trained weights (paper profile, seed 0) and "
                    "none exists yet: rnn-spn-d3 has not run; rnn-spn-d2 has not run.")


def fake_runs(monkeypatch, states: dict[str, str], model: torch.nn.Module) -> None:
    """_run_state and load_trained as if results/ held runs in `states` ({row: state})."""
    record = SimpleNamespace(best_epoch=170, test_error=0.0175,
                             config={"data": dataclasses.asdict(SMALL), "data_seed": 0})
    monkeypatch.setattr(live, "_run_state", lambda results, profile, row, seed: (states.get(row, "not run"), record))
    monkeypatch.setattr("rstn.runs.load_trained", lambda row, profile, seed, results_dir: model)


def test_missing_line_says_what_each_row_lacks(monkeypatch, model):
    fake_runs(monkeypatch, {"rnn-spn-d3": "no weights", "rnn-spn-d2": "running"}, model)
    assert live.missing_line().endswith(
        "rnn-spn-d3 finished before runs kept their weights; rnn-spn-d2 is in progress.")
    assert live.find_live_model() is None


@pytest.mark.parametrize("states, row", [({"rnn-spn-d3": "weights", "rnn-spn-d2": "weights"}, "rnn-spn-d3"),
                                         ({"rnn-spn-d3": "no weights", "rnn-spn-d2": "weights"}, "rnn-spn-d2")])
def test_the_page_takes_d3_then_d2(monkeypatch, model, states, row):
    fake_runs(monkeypatch, states, model)
    found = live.find_live_model()
    assert found.row == row and found.test_error == 0.0175 and found.data == SMALL
    assert "test error 1.75 %" in found.source and row in found.label


def test_auto_precision_is_measured_and_named(model, mnist_file):
    subject = live.LiveModel(model, "RNN-SPN, d = 3, random weights", "test", data=SMALL)
    precision, measured = live.choose_precision(subject, "auto", data_dir=mnist_file.parent)
    assert measured.n == SMALL.n_test and measured.precision == precision
    # int8 where it keeps the result; otherwise fp16, with fp16's agreement
    assert measured.keeps_result if precision == "int8" else precision == "fp16"
    assert measured.max_dlogit < 0.05 and measured.max_dtheta < 0.05
    assert live.choose_precision(subject, "fp16") == ("fp16", None)
    with pytest.raises(ValueError, match="precision"):
        live.choose_precision(subject, "bf16")


def test_html_is_self_contained_and_deterministic(model, mnist_file):
    subject = live.LiveModel(model, "RNN-SPN, d = 3, random weights", "test", data=SMALL)
    first, second = (live.live_explorer_html(subject, precision="int8", data_dir=mnist_file.parent) for _ in range(2))
    assert payload_of(first) == payload_of(second)
    assert re.sub(r"rstn-live-(\w+)-\d+", r"\1", first) == re.sub(r"rstn-live-(\w+)-\d+", r"\1", second)
    assert not re.search(r"\b(src|href)\s*=", first, re.I)
    assert not re.search(r"https?:|//cdn|@import|url\(|<link\b|\bfetch\(|XMLHttpRequest|import\(", first, re.I)
    for asset in ("explorer.js", "live.js", "explorer.css", "live.css"):
        assert explorers.asset(asset) in first, asset
    assert 'id="live-model"' in first and "window.rstnLive.mount(" in first
    note = payload_of(first)["note"]
    assert note.startswith("RNN-SPN, d = 3, random weights: test. Weights in this page: int8") and "MB" in note


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_js_forward_in_node_matches_pytorch(model, material):
    """live.js's forward pass (no DOM needed) on two inputs, against PyTorch with the page's weights."""
    images = np.stack([scenes.compose(material, material.sequences[0]), np.zeros((100, 100), np.float32)])
    spec = live.model_payload(model, "int8")
    script = """
    globalThis.window = {};
    require(process.argv[1]);
    require(process.argv[2]);
    const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
    const model = window.rstnLive.decodeModel(input.model);
    console.log(JSON.stringify(input.images.map((x) => window.rstnLive.forward(model, x))));
    """
    stdin = json.dumps({"model": spec, "images": images.reshape(2, -1).tolist()})
    done = subprocess.run(["node", "-e", script, str(ASSETS / "explorer.js"), str(ASSETS / "live.js")], input=stdin,
                          text=True, capture_output=True, check=True, timeout=120)
    got = json.loads(done.stdout)
    with torch.no_grad():
        out = live.page_model(model, "int8")(torch.as_tensor(images).unsqueeze(1))
    np.testing.assert_allclose([o["theta"] for o in got], out.theta.reshape(2, 3, 6).numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose([o["logits"] for o in got], out.logits.numpy(), rtol=0, atol=1e-5)
    assert [o["predictions"] for o in got] == out.logits.argmax(-1).tolist()
