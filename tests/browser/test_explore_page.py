"""The explorers in a real browser: headless Chromium on pages served from localhost.

Two pages: the built book's Explore page (_build/html/**/07-explore.html, from `make book`) and a
standalone page written here from the same rstn.explorers functions (independent of the book build).
tests/browser/explore.mjs drives each page as a reader would and writes a report; the tests below assert
on it, and compare the browser's sampler with rstn.sampler.transform.

Run with `make browser-test` (which installs Chromium and the npm packages: scripts/ci-browser-deps.sh,
and builds the book). `make test` skips this file: it needs a browser.
Artifacts (screenshots, reports, the measured agreement) go to artifacts/browser/.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch
from browserlib import ARTIFACTS, HERE, ROOT, ensure_browser, needs_browser, serve

from rstn import explorers
from rstn.sampler import transform

pytestmark = needs_browser

BOOK_HTML = Path(os.environ.get("RSTN_BOOK_HTML", ROOT / "_build" / "html"))
GREY_LEVEL = 1 / 255


@pytest.fixture(scope="session")
def browser_ready() -> None:
    ensure_browser()


def open_page(directory: Path, page: str, name: str) -> dict:
    """Serve `directory`, run explore.mjs on `page` in it, and return the report."""
    report_path = ARTIFACTS / f"report-{name}.json"
    report_path.unlink(missing_ok=True)
    with serve(directory) as base:
        subprocess.run(["node", str(HERE / "explore.mjs"), f"{base}/{page}", str(ARTIFACTS), name],
                       cwd=HERE, check=True, timeout=300)
    return json.loads(report_path.read_text())


def standalone_page(directory: Path, picture: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    images = np.stack([picture, picture[::-1], picture[:, ::-1]])
    labels = rng.integers(0, 10, (3, 3))
    scale_shift = np.array([[0.3, 0, -0.5], [0, 0.3, 0.1]], np.float32)
    # a run in progress first: the explorer opens on the first finished one (ffn-spn-d3)
    runs = [explorers.AttentionRun("rnn-spn-d2", "RNN-SPN, d = 2, in progress", 2,
                                   (scale_shift + rng.normal(0, 0.1, (3, 3, 2, 3))).astype(np.float32),
                                   rng.integers(0, 10, (3, 3)), finished=False, epochs=2),
            explorers.AttentionRun("ffn-spn-d3", "FFN-SPN, d = 3", 3,
                                   rng.normal(0, 0.3, (3, 1, 2, 3)).astype(np.float32) + np.eye(2, 3, dtype=np.float32),
                                   rng.integers(0, 10, (3, 3))),
            # every step at the identity, as in a model early in training: the three boxes coincide
            explorers.AttentionRun("rnn-spn-d4", "RNN-SPN, d = 4, untrained", 4,
                                   np.tile(np.eye(2, 3, dtype=np.float32), (3, 3, 1, 1)), rng.integers(0, 10, (3, 3)))]
    page = explorers.standalone_page(explorers.affine_explorer_html(picture),
                                     explorers.attention_explorer_html(images, labels, runs))
    (directory / "explore.html").write_text(page, encoding="utf-8")


@pytest.fixture(scope="session", params=["book", "standalone"])
def report(request, browser_ready, tmp_path_factory, structured_image) -> dict:
    if request.param == "book":
        pages = sorted(BOOK_HTML.rglob("07-explore.html"))
        if not pages:
            pytest.fail(f"no built Explore page under {BOOK_HTML}: run `make book` first")
        return open_page(BOOK_HTML, pages[0].relative_to(BOOK_HTML).as_posix(), "book")
    directory = tmp_path_factory.mktemp("standalone")
    standalone_page(directory, structured_image)
    return open_page(directory, "explore.html", "standalone")


def python_sample(levels: np.ndarray, theta: list[float], d: int) -> np.ndarray:
    """rstn.sampler.transform in its default float32, on the grey levels the page embeds."""
    image = torch.tensor(levels / 255, dtype=torch.float32)[None, None]  # (1, 1, H, W)
    return transform(image, torch.tensor(theta, dtype=torch.float32).view(1, 2, 3), d=d)[0, 0].numpy()


def grey_level_differences(browser: dict, python: np.ndarray) -> tuple[float, float]:
    """max |browser - python| in grey levels: over the interior (1 px border dropped) and everywhere."""
    got = np.array(browser["data"]).reshape(browser["height"], browser["width"])
    assert got.shape == python.shape
    diff = np.abs(got - python) * 255
    return float(diff[1:-1, 1:-1].max()), float(diff.max())


def test_no_console_errors(report):
    assert report["console_errors"] == []


def test_no_request_leaves_localhost(report):
    assert report["external_requests"] == [], "requests to other hosts (blocked, never sent)"
    assert report["requests"], "no request recorded at all"
    for url in report["requests"]:
        parts = urlsplit(url)
        assert parts.scheme in ("data", "blob") or parts.hostname == "127.0.0.1", url
    assert report["failed_requests"] == []


def test_every_explorer_on_the_page_mounts(report):
    assert report["explorers_in_page"] == len(report["explorers_mounted"])
    assert set(report["explorers_mounted"]) == {"affine", "attention"}


def test_moving_a_slider_changes_the_output(report):
    slider = report["slider"]
    assert slider["value"] != 0 and math.isclose(slider["theta"][2], slider["value"])
    assert slider["changed_pixels"] > 0


def test_identity_preset_reproduces_the_input(report):
    identity = report["identity"]
    assert identity["pixels"] == identity["input_pixels"] > 0
    assert identity["mismatches_with_input"] == 0


def test_canvas_shows_what_the_sampler_computes(report):
    assert report["canvas_vs_sample"] == {"height": 50, "width": 50, "mismatches": 0}


def test_browser_sampler_matches_rstn_sampler(report):
    image = report["image"]
    levels = np.array(image["levels"], dtype=np.float64).reshape(image["height"], image["width"])
    measured = {}
    for name, sample in report["samples"].items():
        interior, everywhere = grey_level_differences(sample, python_sample(levels, sample["theta"], sample["d"]))
        measured[name] = {"d": sample["d"], "max_interior_grey_levels": interior, "max_grey_levels": everywhere}
    (ARTIFACTS / f"agreement-{report['name']}.json").write_text(json.dumps(measured, indent=1))
    print(f"\n{report['name']}: max |browser - rstn.sampler| in grey levels (interior):",
          {k: f"{v['max_interior_grey_levels']:.2e}" for k, v in measured.items()})
    assert set(measured) == {"identity", "zoom", "rotation", "translation", "attention_d3"}
    for name, m in measured.items():
        assert m["max_interior_grey_levels"] <= 1, name


def test_attention_crops_match_rstn_sampler(report):
    attention = report["attention"]
    side = math.isqrt(len(attention["image0"]))
    image0 = np.array(attention["image0"], dtype=np.float64).reshape(side, side)
    worst = 0.0
    for row, steps in attention["crops"].items():
        assert len(steps) == (3 if row.startswith("rnn") else 1), row
        for step in steps:
            interior, _ = grey_level_differences(step, python_sample(image0, step["theta"], step["d"]))
            worst = max(worst, interior)
    print(f"\n{report['name']}: attention crops, max |browser - rstn.sampler| = {worst:.2e} grey levels")
    assert worst <= 1
    assert attention["shown_vs_crop_mismatches"] == 0 and attention["shown_crops"] >= 1
    if report["name"] == "standalone":
        assert attention["shown_row"] == "ffn-spn-d3"
    assert attention["next_image_changes_crops"]


def test_screenshots_are_saved(report):
    for kind in ("page", "affine", "attention"):
        png = ARTIFACTS / f"{kind}-{report['name']}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000, png


def test_attention_form_agrees_with_theta(report):
    form = report["attention_form"]
    # the page opens at the identity, which is the attention form with s = 1, tx = ty = 0
    assert form["at_load"]["theta"] == [1, 0, 0, 0, 1, 0]
    assert form["at_load"]["attention_shown"] == [1, 0, 0] and form["at_load"]["note"] == ""
    assert form["zoom"]["attention_shown"] == [0.5, 0, 0] and form["zoom"]["note"] == ""
    assert form["rotate"]["note"]  # a rotation has no attention form: the page says so


def test_browser_pixel_conversion_is_rstn_attention(report):
    from rstn.attention import normalised_to_pixels

    for case in report["normalised_to_pixels"]:
        expected = normalised_to_pixels(np.array(case["point"], dtype=np.float64), case["height"], case["width"])
        np.testing.assert_allclose(case["pixels"], expected, rtol=0, atol=1e-12)


def test_step_numbers_of_coinciding_glimpses_stay_apart(report):
    labels = report["attention"]["step_labels"]
    if report["name"] == "standalone":
        assert set(labels) == {"rnn-spn-d2", "ffn-spn-d3", "rnn-spn-d4"}
    for row, shown in labels.items():
        assert [p["step"] for p in shown] == list(range(1, (3 if row.startswith("rnn") else 1) + 1)), row
    # the identity row: three identical boxes, numbers in three different corners (28 px font)
    if "rnn-spn-d4" in labels:
        xy = np.array([[p["x"], p["y"]] for p in labels["rnn-spn-d4"]])
        gaps = np.hypot(*(xy[:, None] - xy[None]).transpose(2, 0, 1))[~np.eye(len(xy), dtype=bool)]
        assert report["name"] != "standalone" or gaps.min() > 100


def test_chapter_7_holds_the_live_model(report):
    """The book's Explore page has the live explorer's place (#live-model): the model mounted where a finished
    RNN-SPN run has weights, else the one line that says none exists yet (tests/browser/test_live_page.py
    tests the explorer itself)."""
    from rstn.live import live_row

    if report["name"] != "book":
        pytest.skip("the standalone explorers page holds no live model: test_live_page.py writes its own")
    live = report["live"]
    assert live["containers"] == 1, "no #live-model on the built chapter 7: re-execute it (`rstn chapters`)"
    if live_row(ROOT / "results") is not None:
        assert live["mounted"] == 1 and live["missing"] is None
    else:
        assert live["mounted"] == 0
        assert live["missing"] and live["missing"].startswith("The live model needs a finished RNN-SPN run")
