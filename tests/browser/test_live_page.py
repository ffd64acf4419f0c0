"""The live RNN-SPN (rstn.live, rstn/assets/live.js) in headless Chromium, against rstn in PyTorch.

Runs now, on a seeded RNN-SPN with random weights (`rstn.live.random_model(d=3)`: theta's regression and
every bias drawn too, so that each parameter reaches theta and the logits), on a standalone page holding
the model twice, as int8 and as float16:

* 8 fixed inputs (real test sequences, one with a digit moved, one without clutter, digits from the strip,
  a blank and a noise image) fed to the page's models: theta and the logits against
  `rstn.live.page_model` (PyTorch with exactly the page's weights) and against the model's own weights;
* the explorer used as a reader would (select, keys, a mouse drag, the buttons): each time, the input the
  page shows is `rstn.scenes.compose` of its state bit for bit, and what it shows is PyTorch's answer on it;
* one forward pass timed, warm, in this browser (target: under 100 ms);
* the page without a finished run: its one line.

Waits for a finished RNN-SPN paper run with weights (skipped until then, with the reason): the page built
from it, its test error on 1,000 test sequences against PyTorch's with the same weights, and that moving a
digit moves the glimpse that looks at it: random weights' glimpses look at no digit, so the check would
mean nothing on them.

Run with `make browser-test`; artifacts (screenshots, reports, live-agreement.json) go to artifacts/browser/.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch
from browserlib import ARTIFACTS, HERE, ROOT, ensure_browser, needs_browser, serve

from rstn import explorers, following, live, scenes
from rstn.data import DIGIT_SIZE, SequenceConfig

pytestmark = needs_browser

# JS (float64 activations) against PyTorch (float32) with the same weights: float32 rounding, ~1e-6
PAGE_WEIGHTS_TOL = 1e-4
# against the model's own float32 weights the quantisation adds its error (measured: live-agreement.json)
OWN_WEIGHTS_TOL = {"fp16": 1e-3, "int8": 2e-2}
FORWARD_MS = 100
# one move need only be followed the digit's way: over 103 moves the trained rnn-spn-d2's glimpse moved 17-39 %
# of the move (quartiles) and went the digit's way in 95 % of them (chapter 7, rstn.following)
MIN_ALONG = 0.0
# the results whose finished RNN-SPN drives the trained checks; RSTN_LIVE_RESULTS points them at another folder
# (e.g. a copy holding a quick run as paper/rnn-spn-d3/seed0, to try the checks before a paper run has weights)
RESULTS = Path(os.environ.get("RSTN_LIVE_RESULTS", ROOT / "results"))


@pytest.fixture(scope="module")
def material() -> scenes.Material:
    return scenes.scene_material(SequenceConfig(), 0)  # what live_explorer_html embeds for this LiveModel


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return live.random_model(d=3, seed=0)


def fixed_inputs(material: scenes.Material) -> dict[str, np.ndarray]:
    """Eight (100, 100) float32 inputs, by name."""
    first, second = material.sequences[0], material.sequences[1]
    (x0, y0), (x1, y1), (x2, y2) = first.digit_xy
    moved = dataclasses.replace(first, digit_xy=((x0, y0), (x1 + 12, max(y1 - 10, 0)), (x2, y2)))
    strip = [material.strip[3 * c] for c in (1, 7, 4)]  # the strip holds 3 digits per class, in class order
    picked = scenes.Scene(tuple(strip), ((10, 20), (38, 30), (66, 40)), clutter=False)
    noise = np.random.default_rng(0).random((100, 100), dtype=np.float32)
    built = {"sequence 0": first, "sequence 1": second, "sequence 2": material.sequences[2],
             "sequence 0, digit 2 moved": moved, "sequence 1, no clutter": dataclasses.replace(second, clutter=False),
             "1 7 4 from the strip": picked}
    return {name: scenes.compose(material, s) for name, s in built.items()} | {
        "blank": np.zeros((100, 100), np.float32), "noise": noise}


def run_page(directory: Path, page: str, name: str, inputs: np.ndarray | None = None) -> dict:
    """Serve `directory`, run live.mjs on `page` (feeding `inputs` (n, 100, 100)), return the report."""
    report_path = ARTIFACTS / f"report-{name}.json"
    report_path.unlink(missing_ok=True)
    extra = []
    if inputs is not None:
        extra = [str(directory / f"{name}-inputs.f32")]
        Path(extra[0]).write_bytes(np.ascontiguousarray(inputs, dtype="<f4").tobytes())
    with serve(directory) as base:
        subprocess.run(["node", str(HERE / "live.mjs"), f"{base}/{page}", str(ARTIFACTS), name, *extra],
                       cwd=HERE, check=True, timeout=600)
    return json.loads(report_path.read_text())


@pytest.fixture(scope="module")
def port(model, material, tmp_path_factory) -> dict:
    """The standalone page with the random model as int8 (#live-model) and as fp16 (#live-model-fp16)."""
    ensure_browser()
    directory = tmp_path_factory.mktemp("live")
    subject = live.LiveModel(model, "RNN-SPN, d = 3, random weights",
                             "rstn.live.random_model(d=3, seed=0), untrained: the glimpses look at nothing")
    page = explorers.standalone_page(live.live_explorer_html(subject, precision="int8"),
                                     live.live_explorer_html(subject, precision="fp16", container_id="live-model-fp16"),
                                     title="rstn live model")
    (directory / "live.html").write_text(page, encoding="utf-8")
    inputs = fixed_inputs(material)
    report = run_page(directory, "live.html", "live-port", np.stack(list(inputs.values())))
    return report | {"input_names": list(inputs), "inputs": inputs, "page_bytes": len(page.encode())}


@pytest.fixture(scope="module")
def missing(tmp_path_factory) -> dict:
    """The page where no finished run with weights exists (an empty results folder)."""
    ensure_browser()
    directory = tmp_path_factory.mktemp("missing")
    results = directory / "results"
    page = explorers.standalone_page(live.live_explorer_html(results_dir=results), title="rstn live model")
    (directory / "missing.html").write_text(page, encoding="utf-8")
    return run_page(directory, "missing.html", "live-missing") | {"line": live.missing_line(results)}


@torch.no_grad()
def pytorch(model: torch.nn.Module, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """theta (n, 3, 6) and logits (n, 3, 10) of `model` (eval mode) on images (n, 100, 100)."""
    out = model.eval()(torch.as_tensor(np.asarray(images, np.float32)).unsqueeze(1))
    return out.theta.reshape(len(images), -1, 6).numpy(), out.logits.numpy()


def browser(outputs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([o["theta"] for o in outputs]), np.array([o["logits"] for o in outputs])


def assert_local(report: dict) -> None:
    assert report["console_errors"] == []
    assert report["external_requests"] == [] and report["failed_requests"] == []
    for url in report["requests"]:
        parts = urlsplit(url)
        assert parts.scheme in ("data", "blob") or parts.hostname == "127.0.0.1", url


def test_pages_load_nothing_and_log_no_error(port, missing):
    assert_local(port)
    assert_local(missing)


def test_page_models_match_pytorch(port, model):
    images = np.stack(list(port["inputs"].values()))
    theta_own, logits_own = pytorch(model, images)
    measured = {"page_bytes": port["page_bytes"]}
    assert [m["precision"] for m in port["models"]] == ["int8", "fp16"]
    for m in port["models"]:
        theta_js, logits_js = browser(m["outputs"])
        theta_page, logits_page = pytorch(live.page_model(model, m["precision"]), images)
        measured[m["precision"]] = {
            "page_weights": {"max_dtheta": float(np.abs(theta_js - theta_page).max()),
                             "max_dlogit": float(np.abs(logits_js - logits_page).max())},
            "own_weights": {"max_dtheta": float(np.abs(theta_js - theta_own).max()),
                            "max_dlogit": float(np.abs(logits_js - logits_own).max())},
            "forward_ms_median": float(np.median(m["forward_ms"])), "forward_ms": m["forward_ms"]}
    (ARTIFACTS / "live-agreement.json").write_text(json.dumps(measured, indent=1))
    print("\nlive model, |browser - PyTorch| over 8 inputs:",
          {p: {w: {k: f"{v:.1e}" for k, v in d.items()} for w, d in measured[p].items() if w.endswith("weights")}
           for p in ("int8", "fp16")})
    for precision in ("int8", "fp16"):
        page, own = measured[precision]["page_weights"], measured[precision]["own_weights"]
        assert page["max_dtheta"] <= PAGE_WEIGHTS_TOL and page["max_dlogit"] <= PAGE_WEIGHTS_TOL, precision
        assert max(own.values()) <= OWN_WEIGHTS_TOL[precision], precision
    # the inputs differ, and so do the model's answers: the comparison is not of eight copies of one case
    assert len({tuple(np.round(t, 6).ravel()) for t in browser(port["models"][0]["outputs"])[0]}) == 8


def test_forward_pass_is_fast_enough(port):
    medians = {m["precision"]: float(np.median(m["forward_ms"])) for m in port["models"]}
    print(f"\nlive model, one forward pass in headless Chromium (median of {len(port['models'][0]['forward_ms'])}, "
          f"warm): {', '.join(f'{p} {v:.1f} ms' for p, v in medians.items())}; page {port['page_bytes'] / 1e6:.2f} MB")
    assert all(v < FORWARD_MS for v in medians.values()), medians


def test_the_page_shows_the_model_on_its_own_input(port, model, material):
    reference = live.page_model(model, "int8")
    for name, snap in port["ui"].items():
        if not isinstance(snap, dict) or "state" not in snap:
            continue
        image = scenes.compose(material, scenes.scene_from_state(snap["state"]))
        np.testing.assert_array_equal(np.array(snap["image"], np.float32).reshape(100, 100), image, err_msg=name)
        theta, logits = pytorch(reference, image[None])
        for key, expected in (("theta", theta[0]), ("logits", logits[0])):
            np.testing.assert_allclose(np.array(snap["shown"][key]), expected, rtol=0, atol=PAGE_WEIGHTS_TOL,
                                       err_msg=f"{name}: {key}")
        assert snap["shown"]["predictions"] == logits[0].argmax(-1).tolist(), name


def moved(before: list, by: tuple[int, int]) -> list:
    top = 100 - DIGIT_SIZE
    return [min(max(before[0] + by[0], 0), top), min(max(before[1] + by[1], 0), top)]


def is_generator_layout(xy: list, config: SequenceConfig) -> bool:
    """Could rstn.data's draws have placed the digits at xy ("abut": one x offset in 0..15, stride 28)?"""
    xs, ys = [p[0] for p in xy], [p[1] for p in xy]
    offset_ok = len({x - DIGIT_SIZE * i for i, x in enumerate(xs)}) == 1 and 0 <= xs[0] <= 15
    top = config.canvas_size - DIGIT_SIZE
    slopes = range(config.slope_range[0], config.slope_range[1] + 1)
    return offset_ok and any([min(max(y0 + i * s, 0), top) for i in range(3)] == ys
                             for y0 in range(config.canvas_size) for s in slopes)


def test_controls_do_what_they_say(port, material):
    ui, sequences = port["ui"], material.sequences
    as_state = lambda scene: {"digits": list(scene.digits), "xy": [list(p) for p in scene.digit_xy]}  # noqa: E731
    assert {k: ui["initial"]["state"][k] for k in ("digits", "xy")} == as_state(sequences[0])
    assert ui["initial"]["state"]["sequence"] == 0 and ui["reset"]["state"]["sequence"] == 0
    start = ui["sequence4"]["state"]["xy"]
    assert {k: ui["sequence4"]["state"][k] for k in ("digits", "xy")} == as_state(sequences[4])
    keys, drag = ui["keys"]["state"], ui["drag"]["state"]
    assert keys["selected"] == 1 and keys["sequence"] is None
    assert ui["keys_right"]["state"]["xy"] == [start[0], moved(start[1], (6, 0)), start[2]]
    assert keys["xy"] == [start[0], moved(start[1], (0, 7)), start[2]]
    assert drag["selected"] == 2 and drag["xy"][:2] == keys["xy"][:2]
    assert drag["xy"][2] == moved(keys["xy"][2], (0, 16))
    assert ui["clutter_off"]["state"]["clutter"] is False and ui["clutter_off"]["image"] != ui["drag"]["image"]
    assert ui["strip"]["state"]["digits"][:2] == ui["strip_ids"]
    assert [int(material.labels[i]) for i in ui["strip_ids"]] == [1, 7]
    assert is_generator_layout(ui["layout"]["state"]["xy"], material.config)
    assert ui["layout"]["state"]["xy"] != ui["strip"]["state"]["xy"]
    clutter = ui["new_clutter"]["state"]
    assert clutter["clutter"] is True and len(clutter["patches"]) == material.config.n_clutter
    assert clutter["patches"] != ui["layout"]["state"]["patches"]
    top = material.config.canvas_size - material.config.clutter_size - 1  # rstn.data: U{0..S - k - 1}
    assert all(0 <= v <= top for p in clutter["patchXY"] for v in p)
    assert set(ui["random"]["state"]["digits"]) <= set(material.strip)
    assert ui["next_sequence"]["state"]["sequence"] == 0  # from an input of one's own, 't' goes to the first
    assert ui["summary"].startswith("placed, left to right: ") and "forward pass in this browser" in ui["timing"]


def test_without_a_finished_run_the_page_says_so_in_one_line(missing):
    assert missing["containers"] == 1 and missing["models"] == []
    assert missing["missing"] == [missing["line"]] and "\n" not in missing["line"]
    assert missing["line"].startswith("The live model needs a finished RNN-SPN run")


def test_screenshots_are_saved(port, missing):
    for name in ("live-live-port", "live-live-missing", "page-live-port"):
        png = ARTIFACTS / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2_000, png


# ---- what needs a finished RNN-SPN paper run with weights: skipped, with the reason, until one exists


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    found = live.find_live_model(RESULTS)
    if found is None:
        pytest.skip(live.missing_line(RESULTS))
    ensure_browser()
    directory = tmp_path_factory.mktemp("trained")
    page = explorers.standalone_page(live.live_explorer_html(found), title="rstn live model")
    (directory / "trained.html").write_text(page, encoding="utf-8")
    images, labels = scenes.first_test_images(found.data, found.data_seed, live.N_AGREEMENT)
    report = run_page(directory, "trained.html", "live-trained", images)
    return report | {"found": found, "images": images, "labels": labels, "page_bytes": len(page.encode())}


def test_trained_page_scores_as_pytorch_on_1000_test_sequences(trained):
    found, labels = trained["found"], trained["labels"]
    _, logits = pytorch(found.model, trained["images"])
    page = np.array([o["logits"] for o in trained["models"][0]["outputs"]])
    error, page_error = (100 * float((x.argmax(-1) != labels).mean()) for x in (logits, page))
    print(f"\n{found.row}: test error on {len(labels)} test sequences, page {page_error:.2f} %, PyTorch {error:.2f} % "
          f"({trained['models'][0]['precision']}, page {trained['page_bytes'] / 1e6:.2f} MB)")
    assert abs(page_error - error) <= live.AGREEMENT_POINTS


@pytest.mark.parametrize("before, after, digit", [("sequence4", "keys", 1), ("keys", "drag", 2)])
def test_moving_a_digit_moves_the_glimpse_that_looks_at_it(trained, material, before, after, digit):
    """A digit moved down inside the generator's layout: the glimpse nearest it moves the same way and
    still holds it. Not "as far as the digit": the trained glimpses are wider than a digit and follow a moved
    one by a fraction of its move (chapter 7 measures how far, `rstn.following`)."""
    ui = trained["ui"]
    start, end = (np.array(ui[k]["state"]["xy"][digit]) for k in (before, after))
    assert following.in_layout(scenes.scene_from_state(ui[after]["state"]), material)
    theta = [np.array(ui[k]["shown"]["theta"]).reshape(-1, 2, 3) for k in (before, after)]
    answer = following.following(*theta, tuple(start), tuple(end - start), digit, material.config.canvas_size)
    print(f"\n{trained['found'].row}: {answer}")
    assert answer.along > MIN_ALONG, f"glimpse {answer.glimpse + 1} followed digit {digit + 1} by {answer.along:.0%}"
    assert answer.covered >= 0.9, f"glimpse {answer.glimpse + 1} holds {answer.covered:.0%} of digit {digit + 1}"
