"""Interactive explorers of the spatial transformer: the affine explorer and the attention explorer.

Two forms of each idea:

* **Self-contained HTML/JS** (:func:`affine_explorer`, :func:`attention_explorer`): one notebook output that
  carries everything it needs, so it works in the static book with no kernel and no network. The page
  inlines ``rstn/assets/explorer.js`` and ``explorer.css`` and embeds the data as base64 arrays; the warp is
  computed in the browser by a JavaScript port of :mod:`rstn.sampler` with the same convention (theta maps
  output grid points to input sample points, normalised [-1, 1] with the end points on pixel centres,
  ``align_corners=True``, (x, y) order, zeros outside). Nothing is precomputed and nothing is fetched.
  ``tests/browser`` checks in headless Chromium that the JS warp matches :func:`rstn.sampler.transform`.
* **ipywidgets** (:func:`affine_explorer_widget`): sliders that drive :func:`rstn.sampler.transform` in
  Python, for live Jupyter. A static page cannot run it (no kernel); the HTML form is what the book shows.

Images are single-channel (H, W) arrays with values in [0, 1]; the HTML forms embed them as uint8 grey
levels (``round(255 * v)``), which is what the browser samples.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import itertools
import json
from importlib import resources
from typing import Any, Sequence

import numpy as np
import torch

from rstn.glimpses import normalised_to_pixels
from rstn.saved_attention import AttentionRun, SavedAttention, first_to_show
from rstn.sampler import output_size, transform
from rstn.viz import STEP_COLOURS

ASSETS = "assets"
THETA_NAMES = ("theta11", "theta12", "theta13", "theta21", "theta22", "theta23")
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
_instance = itertools.count()  # element ids: unique per kernel, and the same on every re-execution (nbval)


def encode_array(array: np.ndarray) -> dict[str, Any]:
    """An array as JSON-ready ``{"dtype", "shape", "data"}`` with the bytes little-endian, base64.

    Supported dtypes: uint8, int8, int32, float32 (what the JS side decodes into typed arrays).
    """
    array = np.asarray(array)
    if array.dtype.name not in ("uint8", "int8", "int32", "float32"):
        raise ValueError(f"encode_array supports uint8, int8, int32, float32; got {array.dtype}")
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return {"dtype": array.dtype.name, "shape": list(array.shape),
            "data": base64.b64encode(little.tobytes()).decode("ascii")}


def decode_array(spec: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode_array`."""
    dtype = np.dtype(spec["dtype"]).newbyteorder("<")
    return np.frombuffer(base64.b64decode(spec["data"]), dtype=dtype).reshape(spec["shape"]).astype(spec["dtype"])


def to_grey_levels(images: np.ndarray) -> np.ndarray:
    """Images with values in [0, 1] -> uint8 grey levels round(255 v), the form the HTML embeds."""
    images = np.asarray(images, dtype=np.float64)
    if images.size and (images.min() < 0 or images.max() > 1):
        raise ValueError(f"image values must lie in [0, 1], got [{images.min():.3g}, {images.max():.3g}]")
    return np.round(images * 255).astype(np.uint8)


def _as_theta6(theta: Sequence[float] | np.ndarray | torch.Tensor) -> list[float]:
    values = np.asarray(theta, dtype=np.float64).reshape(-1)
    if values.shape != (6,):
        raise ValueError(f"theta must have 6 entries (a 2x3 matrix), got shape {np.shape(theta)}")
    return [float(v) for v in values]


def asset(name: str) -> str:
    """The text of rstn/assets/NAME (the explorers' JS and CSS, inlined into every page)."""
    return resources.files("rstn").joinpath(ASSETS, name).read_text(encoding="utf-8")


def script_json(payload: dict[str, Any]) -> str:
    """`payload` as JSON to put inside a <script> element."""
    # inside <script> only "</" can end the element early; JSON allows "<\/" for it
    return json.dumps(payload, separators=(",", ":")).replace("</", "<\\/")


def element_id(kind: str, data: str) -> str:
    """"rstn-KIND-DIGEST-N": the same for the same data on every re-execution (nbval), unique in a kernel."""
    return f"rstn-{kind}-{hashlib.sha1(data.encode()).hexdigest()[:10]}-{next(_instance)}"


def _explorer_html(kind: str, mount: str, payload: dict[str, Any]) -> str:
    """One self-contained output: container, CSS, data, the explorer JS, and the mount call."""
    payload = payload | {"stepColors": list(STEP_COLOURS)}  # the figures' colours, one per glimpse step
    data = script_json(payload)
    mount_id = element_id(kind, data)
    return (
        f'<div class="rstn-explorer rstn-{kind}" id="{mount_id}">'
        f"<noscript>This explorer runs in the browser: it needs JavaScript.</noscript></div>\n"
        f"<style>{asset('explorer.css')}</style>\n"
        f'<script type="application/json" id="{mount_id}-data">{data}</script>\n'
        f"<script>{asset('explorer.js')}</script>\n"
        f"<script>window.rstnExplorer.{mount}(document.getElementById({json.dumps(mount_id)}), "
        f"JSON.parse(document.getElementById({json.dumps(mount_id + '-data')}).textContent));</script>\n"
    )


def _check_image(image: np.ndarray | torch.Tensor) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64).squeeze()
    if image.ndim != 2:
        raise ValueError(f"image must be (H, W) (or squeezable to it), got shape {np.shape(image)}")
    return image


def affine_explorer_html(
    image: np.ndarray | torch.Tensor,
    d: int = 1,
    theta: Sequence[float] = IDENTITY,
    title: str = "Affine explorer",
    caption: str | None = None,
) -> str:
    """The affine explorer as a self-contained HTML string (see the module docstring).

    Args:
        image: (H, W) grey image, values in [0, 1], e.g. one cluttered test sequence.
        d: initial down-sampling factor (1-4): the output is floor(H/d) x floor(W/d).
        theta: initial theta, 6 values (theta11, theta12, theta13, theta21, theta22, theta23).
        title, caption: the explorer's heading and the input panel's caption.
    """
    if d not in (1, 2, 3, 4):
        raise ValueError(f"d must be 1, 2, 3 or 4, got {d}")
    levels = to_grey_levels(_check_image(image))[None]  # (1, H, W)
    payload = {"image": encode_array(levels), "d": d, "theta": _as_theta6(theta), "title": title}
    if caption is not None:
        payload["caption"] = caption
    return _explorer_html("affine", "mountAffine", payload)


def affine_explorer(image: np.ndarray | torch.Tensor, d: int = 1, **kwargs: Any):
    """The affine explorer as a notebook output (``IPython.display.HTML``); arguments as
    :func:`affine_explorer_html`. Works in the static book: the warp runs in the browser."""
    from IPython.display import HTML

    return HTML(affine_explorer_html(image, d=d, **kwargs))


def attention_explorer_html(
    images: np.ndarray,
    labels: np.ndarray,
    runs: Sequence[AttentionRun],
    indices: Sequence[int] | None = None,
    title: str = "Attention explorer",
    note: str = "",
    initial: str | None = None,
) -> str:
    """The attention explorer as a self-contained HTML string.

    Args:
        images: (N, H, W) test images in [0, 1].
        labels: (N, 3) true digits, left to right.
        runs: one :class:`AttentionRun` per Table 1 row, each over the same N images.
        indices: (N,) the images' indices in the test split (shown beside the image slider).
        title, note: heading and the line under it (say where the data come from: profile, seed).
        initial: the row shown first (default: :func:`rstn.saved_attention.first_to_show`).
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 3 or labels.shape != (images.shape[0], 3):
        raise ValueError(f"images must be (N, H, W) and labels (N, 3), got {images.shape} and {labels.shape}")
    if not runs:
        raise ValueError("no attention runs to show")
    n = images.shape[0]
    rows = []
    for run in runs:
        theta = np.asarray(run.theta, dtype=np.float32)
        predictions = np.asarray(run.predictions)
        if theta.ndim != 4 or theta.shape[0] != n or theta.shape[2:] != (2, 3):
            raise ValueError(f"{run.row}: theta must be ({n}, T, 2, 3), got {theta.shape}")
        if predictions.shape != (n, 3):
            raise ValueError(f"{run.row}: predictions must be ({n}, 3), got {predictions.shape}")
        rows.append({"row": run.row, "label": run.label, "d": int(run.d), "theta": encode_array(theta),
                     "predictions": encode_array(predictions.astype(np.int32))})
    names = [run.row for run in runs]
    if initial is None:
        initial = first_to_show(runs).row
    elif initial not in names:
        raise ValueError(f"initial row {initial!r} is not one of the runs: {', '.join(names)}")
    payload = {"images": encode_array(to_grey_levels(images)), "labels": encode_array(labels.astype(np.int32)),
               "rows": rows, "initial": names.index(initial), "title": title, "note": note}
    if indices is not None:
        payload["indices"] = [int(i) for i in indices]
    return _explorer_html("attention", "mountAttention", payload)


def attention_explorer(images: np.ndarray, labels: np.ndarray, runs: Sequence[AttentionRun], **kwargs: Any):
    """The attention explorer as a notebook output (``IPython.display.HTML``); see
    :func:`attention_explorer_html`."""
    from IPython.display import HTML

    return HTML(attention_explorer_html(images, labels, runs, **kwargs))


def saved_attention_explorer(saved: SavedAttention):
    """The attention explorer of saved runs (:func:`rstn.saved_attention.load_saved_attention`), labelled with
    their profile, as a notebook output (``IPython.display.HTML``)."""
    from IPython.display import HTML

    note = (f"Runs of profile '{saved.profile}' (seed {saved.seed}: {saved.description}); "
            f"the first {len(saved.indices)} test images.")
    return HTML(attention_explorer_html(saved.images, saved.labels, saved.runs, indices=saved.indices, note=note))


def standalone_page(*outputs: str, title: str = "rstn explorers") -> str:
    """A complete HTML document holding explorer outputs (for tests and sharing outside the book)."""
    body = "\n".join(outputs)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"</head>\n<body>\n{body}\n</body></html>\n")


def glimpse(image: np.ndarray, theta: Sequence[float], d: int) -> np.ndarray:
    """rstn.sampler.transform of one (H, W) image by one theta (6 values) at d: (h, w) float64."""
    image = torch.as_tensor(_check_image(image), dtype=torch.float64)[None, None]  # (1, 1, H, W)
    theta_t = torch.tensor(_as_theta6(theta), dtype=torch.float64).reshape(1, 2, 3)
    return transform(image, theta_t, d=d)[0, 0].numpy()


def _png(array: np.ndarray, grid: np.ndarray | None = None) -> bytes:
    """A grey image (values in [0, 1]) as PNG bytes, optionally with sampling-grid points drawn on it."""
    from matplotlib.figure import Figure  # not pyplot: leaves the notebook's backend alone

    height, width = array.shape
    figure = Figure(figsize=(3, 3 * height / width), dpi=100)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.imshow(array, cmap="gray", vmin=0, vmax=1, interpolation="nearest", extent=(0, width, height, 0))
    if grid is not None:
        axes.plot(grid[..., 0].ravel(), grid[..., 1].ravel(), ".", color="#56B4E9", markersize=3)
    axes.set_xlim(0, width)
    axes.set_ylim(height, 0)
    axes.set_axis_off()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


class AffineWidget:
    """The affine explorer as ipywidgets: six theta sliders and d drive :func:`rstn.sampler.transform`.

    Attributes:
        sliders: {"theta11": FloatSlider, ...}; d: the d selector; box: the layout to display.
        output: (h, w) the last glimpse computed; views: (input with grid, output) Image widgets.
    """

    def __init__(self, image: np.ndarray | torch.Tensor, d: int = 1, theta: Sequence[float] = IDENTITY):
        import ipywidgets as widgets

        self.image = _check_image(image)
        self.sliders = {name: widgets.FloatSlider(value=value, min=-2, max=2, step=0.01, description=name,
                                                  continuous_update=False)
                        for name, value in zip(THETA_NAMES, _as_theta6(theta))}
        self.d = widgets.ToggleButtons(options=[1, 2, 3, 4], value=d, description="d")
        self.input_view = widgets.Image(format="png", layout=widgets.Layout(width="300px"))
        self.output_view = widgets.Image(format="png", layout=widgets.Layout(width="300px"))
        for control in (*self.sliders.values(), self.d):
            control.observe(self.update, names="value")
        matrix = widgets.GridBox(list(self.sliders.values()),
                                 layout=widgets.Layout(grid_template_columns="repeat(3, 1fr)"))
        self.box = widgets.VBox([widgets.HBox([self.input_view, self.output_view]), self.d, matrix])
        self.update()

    @property
    def theta(self) -> list[float]:
        return [self.sliders[name].value for name in THETA_NAMES]

    def update(self, change: dict | None = None) -> None:
        """Recompute the glimpse and redraw both views (the sliders' observer)."""
        h, w = output_size(*self.image.shape, d=self.d.value)
        self.output = glimpse(self.image, self.theta, self.d.value)
        # the output grid's points mapped through theta, drawn in input pixel coordinates
        ys, xs = np.meshgrid(np.linspace(-1, 1, min(h, 11)), np.linspace(-1, 1, min(w, 11)), indexing="ij")
        t = np.asarray(self.theta).reshape(2, 3)
        points = np.stack([xs, ys, np.ones_like(xs)], -1) @ t.T  # (11, 11, 2) normalised (x, y)
        self.input_view.value = _png(self.image, normalised_to_pixels(points, *self.image.shape))
        self.output_view.value = _png(np.clip(self.output, 0, 1))

    def _repr_mimebundle_(self, **kwargs: Any):
        return self.box._repr_mimebundle_(**kwargs)


def affine_explorer_widget(image: np.ndarray | torch.Tensor, d: int = 1,
                           theta: Sequence[float] = IDENTITY) -> AffineWidget:
    """The affine explorer for live Jupyter (needs a kernel): see :class:`AffineWidget`."""
    return AffineWidget(image, d=d, theta=theta)
