"""A live RNN-SPN in the static page: chapter 7's third explorer runs a trained model in the browser.

The reader builds a 100 x 100 input from three MNIST test digits (from a strip or at random), placed by
dragging or by the generator's own layout, with its clutter on or off, or resets it to a real test
sequence; at every change the page runs the RNN-SPN and draws the three glimpse boxes, the three crops, and
each step's prediction with its probabilities. Like `rstn.explorers`, one self-contained HTML output: no
kernel, nothing fetched.

Why a JavaScript forward pass (rstn/assets/live.js), not an ONNX export run by onnxruntime-web:
* page weight: the weights are what weighs (1.68 M parameters at d = 3: 1.7 MB as int8, 2.2 MB as base64);
  live.js is ~25 kB. onnxruntime-web 1.30's smallest WebAssembly backend (ort-wasm-simd-threaded.wasm) is
  14.2 MB before any weight, ~19 MB as base64 in a page that may fetch nothing.
* speed: a forward pass is ~11 M multiply-adds (localisation 2.5 M, the GRU's input projection 1.2 M, three
  33 x 33 glimpses through the classifier 6.6 M); plain loops take ~30 ms in headless Chromium on 2 busy
  cores (benchmarks/README.md), inside the 100 ms target, with no wasm start-up.
* one sampler: live.js samples with explorer.js's port of `rstn.sampler`, already tested against PyTorch;
  ONNX would bring a second implementation (GridSample) to keep in agreement.

Weights in the page (`PRECISIONS`): "int8", symmetric with one scale per output channel (q = round(w / s),
s = max |w| / 127 over the channel: |w - q s| <= s / 2), or "fp16"; biases and h0 stay float32.
`precision="auto"` takes int8 when its per-digit test error on 1,000 test sequences is within 0.1 points
of the run's own weights' (in PyTorch, `agreement`), else fp16. `page_model` is the PyTorch model with
exactly the page's weights: the reference of tests/browser/test_live_page.py.

The input's pieces (test digits, clutter patches, the layout, real test sequences) are `rstn.scenes`'; theta
maps output to input in normalised coordinates (`rstn.sampler`).
"""

from __future__ import annotations

import base64
import copy
import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rstn.configs import filled
from rstn.data import SequenceConfig
from rstn.explorers import asset, element_id, encode_array, script_json
from rstn.models import RNNSPN, rnn_spn
from rstn.scenes import first_test_images, material_payload, scene_material
from rstn.viz import STEP_COLOURS
from rstn.weights import WEIGHTS_NAME

LIVE_ROWS = ("rnn-spn-d3", "rnn-spn-d2")  # the page's candidates, lightest first (d = 3: 1.68 M parameters)
CONTAINER_ID = "live-model"
PRECISIONS = ("int8", "fp16")
AGREEMENT_POINTS = 0.1  # int8 must keep the test error within this many points of the run's weights
N_AGREEMENT = 1000  # test sequences the agreement is measured on
_CHANNEL_AXIS = {"gru.input_weight": 1, "gru.hidden_weight": 1}  # (in, 3 hidden): a column per output unit


@dataclass(frozen=True)
class LiveModel:
    """An RNN-SPN for the page, and what the page says about it.

    model: the RNN-SPN (`rstn.models.RNNSPN`); label: e.g. "RNN-SPN, d = 3"; source: where its weights
    come from, in words; row, test_error (per digit, a fraction): of the finished run (None for a model
    passed in); data, data_seed: the generator whose test split the page's digits come from.
    """

    model: nn.Module
    label: str
    source: str
    row: str | None = None
    test_error: float | None = None
    data: SequenceConfig = SequenceConfig()
    data_seed: int = 0


def _run_state(results_dir: str | Path, profile: str, row: str, seed: int) -> tuple[str, Any]:
    """("weights", record) | ("no weights" | "running" | "diverged" | "not run" | "unreadable", record or None)."""
    from rstn.experiments import run_dir
    from rstn.results import RUN_FILE, ResultsError, read_run

    folder = run_dir(results_dir, profile, row, seed)
    if not (folder / RUN_FILE).exists():
        return "not run", None
    try:
        record = read_run(folder / RUN_FILE)
    except ResultsError:
        return "unreadable", None
    if not record.finished:
        return record.status, record
    return ("weights" if (folder / WEIGHTS_NAME).exists() else "no weights"), record


def live_row(results_dir: str | Path = "results", profile: str = "paper", seed: int = 0,
             rows: Sequence[str] = LIVE_ROWS) -> str | None:
    """The first of `rows` whose run finished with its weights; None while there is none."""
    return next((row for row in rows if _run_state(results_dir, profile, row, seed)[0] == "weights"), None)


def find_live_model(results_dir: str | Path = "results", profile: str = "paper", seed: int = 0,
                    rows: Sequence[str] = LIVE_ROWS) -> LiveModel | None:
    """The model of `live_row` with its weights (`rstn.runs.load_trained`); None while there is none."""
    from rstn.runs import load_trained

    row = live_row(results_dir, profile, seed, rows)
    if row is not None:
        record = _run_state(results_dir, profile, row, seed)[1]
        model = load_trained(row, profile, seed, results_dir=results_dir)
        source = (f"{profile} profile, seed {seed}, best-validation epoch {record.best_epoch}, "
                  f"test error {100 * record.test_error:.2f} % per digit")
        return LiveModel(model, f"RNN-SPN, d = {model.config.d} ({row})", source, row, record.test_error,
                         filled(SequenceConfig, record.config["data"]), record.config.get("data_seed", 0))
    return None


def missing_line(results_dir: str | Path = "results", profile: str = "paper", seed: int = 0,
                 rows: Sequence[str] = LIVE_ROWS) -> str:
    """The one line the page shows until a finished RNN-SPN run with weights exists."""
    words = {"no weights": "finished before runs kept their weights", "running": "is in progress",
             "diverged": "diverged", "not run": "has not run", "unreadable": "has an unreadable run.json"}
    parts = [f"{row} {words.get(state, state)}" for row in rows
             for state in [_run_state(results_dir, profile, row, seed)[0]]]
    return (f"The live model needs a finished RNN-SPN run with trained weights ({profile} profile, seed {seed}) "
            f"and none exists yet: {'; '.join(parts)}.")


def random_model(d: int = 3, seed: int = 0) -> RNNSPN:
    """An RNN-SPN with random weights in which every parameter changes the output, in eval mode.

    `rstn.models` starts theta's regression at zero weights (theta = identity for every input) and every
    bias at zero: a test of the page on that model would not reach the GRU's weights through theta, nor
    any bias. Here those get small random values too.
    """
    with torch.random.fork_rng(devices=[]), torch.no_grad():  # the caller's random stream is left as it was
        torch.manual_seed(seed)
        model = rnn_spn(d=d)
        for name, p in model.named_parameters():
            if name.endswith("bias") or name == "gru.initial_state":
                p.add_(0.05 * torch.randn_like(p))
        model.theta.weight.normal_(0, 0.03)
    return model.eval()


def check_supported(model: nn.Module) -> None:
    """The page runs the Table 1 RNN-SPN: the align_corners=True sampler, one glimpse per digit, no feedback."""
    if not isinstance(model, RNNSPN):
        raise ValueError(f"the live explorer runs an RNN-SPN (rstn.models.RNNSPN), got {type(model).__name__}")
    config = model.config
    if config.sampler not in ("torch", "equations"):
        raise ValueError(f"the page's sampler is rstn.sampler's align_corners=True one, not {config.sampler!r}")
    if config.glimpses_per_digit != 1 or config.glimpse_feedback:
        raise ValueError("the page runs the Table 1 RNN-SPN, not the extensions (glimpses_per_digit, feedback)")


def channel_axis(name: str, tensor: torch.Tensor) -> int | None:
    """The output-channel axis of a weight (int8 gets one scale per channel); None: kept float32."""
    if name in _CHANNEL_AXIS:
        return _CHANNEL_AXIS[name]
    return 0 if name.endswith("weight") and tensor.ndim >= 2 else None


def quantise(weight: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one scale per channel along `axis`.

    Returns:
        q: int8, weight's shape, in [-127, 127]; scale: (weight.shape[axis],) float32, max |w| / 127 over the
        channel (1 for an all-zero channel); weight = q * scale (broadcast along axis) within scale / 2.
    """
    w = weight.detach().float()
    axis %= w.ndim
    peak = w.abs().amax(dim=[i for i in range(w.ndim) if i != axis])
    scale = torch.where(peak > 0, peak / 127, torch.ones_like(peak))
    q = torch.round(w / _along(scale, w.ndim, axis)).clamp(-127, 127).to(torch.int8)
    return q, scale


def dequantise(q: torch.Tensor, scale: torch.Tensor, axis: int) -> torch.Tensor:
    """q * scale in float32, as live.js decodes it."""
    return q.float() * _along(scale, q.ndim, axis % q.ndim)


def _check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be 'auto' or one of {PRECISIONS}, got {precision!r}")
    return precision


def _along(scale: torch.Tensor, ndim: int, axis: int) -> torch.Tensor:
    shape = [1] * ndim
    shape[axis] = -1
    return scale.reshape(shape)


def page_state(model: nn.Module, precision: str) -> dict[str, torch.Tensor]:
    """The model's state as the page holds it, in float32: weights through int8 or float16, the rest exact."""
    _check_precision(precision)
    out = {}
    for name, tensor in model.state_dict().items():
        axis, t = channel_axis(name, tensor), tensor.detach().float().cpu()
        if axis is not None:
            t = dequantise(*quantise(t, axis), axis) if precision == "int8" else t.half().float()
        out[name] = t
    return out


def page_model(model: nn.Module, precision: str) -> nn.Module:
    """A copy of `model` with exactly the weights the page computes with (float32, eval mode)."""
    copied = copy.deepcopy(model).float().cpu()
    copied.load_state_dict(page_state(model, precision))
    return copied.eval()


def _encode_weight(tensor: torch.Tensor, axis: int | None, precision: str) -> tuple[dict, int]:
    """One tensor as the page embeds it, and its size in bytes (before base64)."""
    t = tensor.detach().float().cpu()
    if axis is None:
        return encode_array(t.numpy()), 4 * t.numel()
    if precision == "int8":
        q, scale = quantise(t, axis)
        spec = encode_array(q.numpy()) | {"scale": encode_array(scale.numpy()), "axis": axis}
        return spec, q.numel() + 4 * scale.numel()
    half = np.ascontiguousarray(t.half().numpy(), dtype="<f2")  # encode_array has no float16: its bits, base64
    spec = {"dtype": "float16", "shape": list(half.shape), "data": base64.b64encode(half.tobytes()).decode()}
    return spec, half.nbytes


def _trunk_ops(trunk: nn.Module, prefix: str, encode) -> list[dict]:
    """A Sequential trunk as the page's op list, in forward order: conv (3x3 valid), maxpool (2x2, floor),
    relu, dense; dropout is left out (eval mode) and flatten is implicit ((C, H, W) row-major, as PyTorch)."""
    ops: list[dict] = []
    for name, module in trunk.named_modules():
        if isinstance(module, nn.Conv2d) and (module.kernel_size, module.stride, module.padding, module.dilation,
                                              module.groups) != ((3, 3), (1, 1), (0, 0), (1, 1), 1):
            raise ValueError(f"{prefix}{name}: the page runs 3x3 valid convs only, got {module}")
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            ops.append({"op": "conv" if isinstance(module, nn.Conv2d) else "dense",
                        "weight": encode(f"{prefix}{name}.weight"), "bias": encode(f"{prefix}{name}.bias")})
        elif isinstance(module, nn.MaxPool2d):
            if module.kernel_size not in (2, (2, 2)) or module.stride not in (2, (2, 2)) or module.ceil_mode:
                raise ValueError(f"{prefix}{name}: the page runs 2x2 max-pools only, got {module}")
            ops.append({"op": "maxpool"})
        elif isinstance(module, nn.ReLU):
            ops.append({"op": "relu"})
        elif not isinstance(module, (nn.Sequential, nn.Dropout, nn.Flatten)):
            raise ValueError(f"{prefix}{name}: {type(module).__name__} has no counterpart in live.js")
    return ops


def model_payload(model: nn.Module, precision: str) -> dict[str, Any]:
    """The RNN-SPN as live.js runs it: op lists of the two trunks, the GRU, theta's regression and the head.

    Every tensor is {dtype, shape, data} (`rstn.explorers.encode_array`; "float16" added here), an int8 one
    with its per-channel "scale" and "axis"; "weightBytes" is their total size before base64.
    """
    check_supported(model)
    _check_precision(precision)
    state, total = model.state_dict(), [0]

    def encode(name: str) -> dict:
        spec, size = _encode_weight(state[name], channel_axis(name, state[name]), precision)
        total[0] += size
        return spec

    config = model.config
    gru = {"inputWeight": encode("gru.input_weight"), "hiddenWeight": encode("gru.hidden_weight"),
           "bias": encode("gru.bias"), "hidden": config.gru_hidden}
    if "gru.initial_state" in state:  # a learned h0 (gru_learn_init); otherwise the zero state
        gru["h0"] = encode("gru.initial_state")
    return {"precision": precision, "inputSize": config.input_size, "d": config.d, "glimpse": config.glimpse_size,
            "steps": config.steps, "localisation": _trunk_ops(model.localisation, "localisation.", encode),
            "gru": gru, "theta": {"weight": encode("theta.weight"), "bias": encode("theta.bias")},
            "classifier": _trunk_ops(model.classifier, "classifier.", encode),
            "head": {"weight": encode("head.weight"), "bias": encode("head.bias")}, "weightBytes": total[0]}


@dataclass(frozen=True)
class Agreement:
    """The page's weights against the model's own, both in PyTorch, on the first n test sequences.

    error, page_error: per-digit test error (%) with the model's weights and with the page's;
    max_dtheta, max_dlogit: the largest |difference| of theta and of the logits.
    """

    precision: str
    n: int
    error: float
    page_error: float
    max_dtheta: float
    max_dlogit: float

    @property
    def keeps_result(self) -> bool:
        return abs(self.page_error - self.error) <= AGREEMENT_POINTS


@torch.no_grad()
def agreement(model: nn.Module, images: np.ndarray, labels: np.ndarray, precision: str, batch: int = 250) -> Agreement:
    """`Agreement` of `page_model(model, precision)` with `model` on images (n, S, S) with labels (n, D)."""
    x = torch.as_tensor(np.asarray(images), dtype=torch.float32).unsqueeze(1)  # (n, 1, S, S)
    truth = torch.as_tensor(np.asarray(labels))
    outputs = [[m(x[a:a + batch]) for a in range(0, len(x), batch)]
               for m in (copy.deepcopy(model).float().cpu().eval(), page_model(model, precision))]
    (theta, logits), (page_theta, page_logits) = (
        (torch.cat([o.theta for o in out]), torch.cat([o.logits for o in out])) for out in outputs)
    error, page_error = (100 * float((z.argmax(-1) != truth).double().mean()) for z in (logits, page_logits))
    return Agreement(precision, len(x), error, page_error, float((theta - page_theta).abs().max()),
                     float((logits - page_logits).abs().max()))


def choose_precision(live: LiveModel, precision: str = "auto",
                     data_dir: str | Path | None = None) -> tuple[str, Agreement | None]:
    """`precision`, or for "auto": int8 if it keeps the test error on `N_AGREEMENT` test sequences within
    `AGREEMENT_POINTS` of the model's own weights, else fp16; with the agreement measured (None if not)."""
    if precision != "auto":
        return _check_precision(precision), None
    images, labels = first_test_images(live.data, live.data_seed, N_AGREEMENT, data_dir)
    measured = agreement(live.model, images, labels, "int8")
    if measured.keeps_result:
        return "int8", measured
    return "fp16", agreement(live.model, images, labels, "fp16")


def _note(live: LiveModel, model: dict, measured: Agreement | None) -> str:
    words = {"int8": "int8 with one scale per output channel", "fp16": "float16"}[model["precision"]]
    note = f"{live.label}: {live.source}. Weights in this page: {words}, {model['weightBytes'] / 1e6:.2f} MB"
    if measured is not None:
        note += (f"; on the first {measured.n:,} test sequences they score {measured.page_error:.2f} % in "
                 f"PyTorch, the run's own {measured.error:.2f} %")
    return note + "."


def missing_html(line: str, container_id: str = CONTAINER_ID) -> str:
    """The explorer's place on the page while there is no model to run: one line."""
    text = re.sub(r"\b[a-z]+(-[a-z0-9]+)+\b", r'<span class="rstn-nowrap">\g<0></span>', html.escape(line))  # rows
    return (f'<div id="{html.escape(container_id)}" class="rstn-live-container"><div class="rstn-explorer rstn-live '
            f'rstn-live-missing"><div class="rstn-note" data-role="missing">{text}</div></div></div>\n'
            f"<style>{asset('explorer.css')}{asset('live.css')}</style>\n")


def live_explorer_html(live: LiveModel | None = None, *, results_dir: str | Path = "results", profile: str = "paper",
                       seed: int = 0, precision: str = "auto", n_sequences: int = 8, per_class: int = 3,
                       data_dir: str | Path | None = None, container_id: str = CONTAINER_ID,
                       title: str = "Live RNN-SPN") -> str:
    """The live explorer as one self-contained HTML output (see the module docstring).

    Args:
        live: the model to run; None: the first of `LIVE_ROWS` that finished with weights (`find_live_model`
            in results_dir, profile, seed); while there is none, the page says so in one line.
        precision: "auto" (measured, see `choose_precision`), "int8" or "fp16".
        n_sequences, per_class: real test sequences and strip digits per class embedded.
        container_id: the id of the element that holds the explorer.
    """
    if live is None:
        live = find_live_model(results_dir, profile, seed)
    if live is None:
        return missing_html(missing_line(results_dir, profile, seed), container_id)
    material = scene_material(live.data, live.data_seed, n_sequences, per_class, data_dir=data_dir)
    precision, measured = choose_precision(live, precision, data_dir)
    model = model_payload(live.model, precision)
    payload = {"title": title, "label": live.label, "note": _note(live, model, measured), "model": model,
               **material_payload(material), "stepColors": list(STEP_COLOURS)}
    data = script_json(payload)
    mount_id = element_id("live", data)
    return (f'<div id="{html.escape(container_id)}" class="rstn-live-container">'
            f'<div class="rstn-explorer rstn-live" id="{mount_id}">'
            f"<noscript>This explorer runs the model in the browser: it needs JavaScript.</noscript></div></div>\n"
            f"<style>{asset('explorer.css')}{asset('live.css')}</style>\n"
            f'<script type="application/json" id="{mount_id}-data">{data}</script>\n'
            f"<script>{asset('explorer.js')}</script>\n<script>{asset('live.js')}</script>\n"
            f"<script>window.rstnLive.mount(document.getElementById({json.dumps(mount_id)}), "
            f"JSON.parse(document.getElementById({json.dumps(mount_id + '-data')}).textContent));</script>\n")


def live_explorer(live: LiveModel | None = None, **kwargs: Any):
    """The live explorer as a notebook output (``IPython.display.HTML``); see `live_explorer_html`."""
    from IPython.display import HTML

    return HTML(live_explorer_html(live, **kwargs))
