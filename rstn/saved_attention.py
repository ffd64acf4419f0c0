"""The attention the runs saved (``attention.npz``, written by `rstn.attention_export.attention_arrays` at the
best-validation epoch), read back with the test images it was computed on: `load_saved_attention`.

theta follows the convention of :mod:`rstn.sampler`; `rstn.glimpses` turns it into boxes, scores and shapes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rstn import experiments
from rstn.data import cache_path, load_sequences
from rstn.experiments import BEST
from rstn.generator import SequenceConfig, generate_sequences
from rstn.progress import counted
from rstn.records import RUN_FILE, display_profile, read_run


@dataclass(frozen=True)
class AttentionRun:
    """Saved attention of one trained model on a fixed set of test images.

    row: Table 1 row ("rnn-spn-d2"); label: what the explorer shows for it; d: its down-sampling factor;
    theta: (N, T, 2, 3) float32, T = 3 for RNN-SPN and 1 for FFN-SPN; predictions: (N, 3) digits;
    finished: whether the run has ended (False: saved when a run in progress paused); epochs: epochs run.
    """

    row: str
    label: str
    d: int
    theta: np.ndarray
    predictions: np.ndarray
    finished: bool = True
    epochs: int | None = None


@dataclass(frozen=True)
class SavedAttention:
    """The attention of the trained Table 1 rows on the same fixed test images, read from results/.

    images: (N, H, W) in [0, 1]; labels: (N, 3); boxes: (N, 3, 4) true digit boxes; indices: (N,) in the
    test split; runs: one per row, in Table 1 order; profile, seed: where they come from; description:
    the profile's one-line description.
    """

    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    indices: np.ndarray
    runs: tuple[AttentionRun, ...]
    profile: str
    seed: int
    description: str

    def run(self, row: str) -> AttentionRun | None:
        """The run of Table 1 row ``row``, or None when it saved no attention."""
        return next((r for r in self.runs if r.row == row), None)

    def pick(self, rows: Sequence[str]) -> AttentionRun | None:
        """The run to show among ``rows`` (in order of preference): `first_to_show` of their runs."""
        return first_to_show([run for run in map(self.run, rows) if run is not None])

    def pick_note(self, rows: Sequence[str], chosen: AttentionRun | None) -> str:
        """Why `chosen` (what `pick(rows)` returned) stands in for ``rows[0]``; "" when it is that row."""
        wanted = rows[0]
        if chosen is None or chosen.row == wanted:
            return ""
        run = self.run(wanted)
        state = "has no saved attention" if run is None else f"is in progress ({counted(run.epochs, 'epoch')})"
        how = "the first finished run" if chosen.finished else "the run trained longest"
        return f"{wanted} {state}: drawn instead is {chosen.row}, {how} of {', '.join(rows)}"


def first_to_show(runs: Sequence[AttentionRun]) -> AttentionRun | None:
    """The first run that has finished, else the one trained longest (the first of those), so that a row
    just started does not stand in for a trained one; None for no runs."""
    finished = [run for run in runs if run.finished]
    if finished:
        return finished[0]
    return max(runs, key=lambda run: run.epochs or 0, default=None)


def _test_split(data: dict, data_dir: str | Path | None):
    """The test split of a run's data config (as saved in run.json): from the sequence cache when it holds
    it, else generated alone (its random stream does not depend on the training and validation sizes)."""
    # run.json stores tuples as lists
    config = SequenceConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data["data"].items()})
    seed = data["data_seed"]
    if cache_path(config, seed).exists():
        return load_sequences(config, seed=seed, data_dir=data_dir)["test"]
    return generate_sequences(dataclasses.replace(config, n_train=0, n_valid=0), seed=seed, data_dir=data_dir)["test"]



def _has_saved_attention(seed: int) -> Callable[[Path], bool]:
    """Whether a profile's folder holds an attention.npz of seed `seed` from a run that did not diverge."""
    def has(folder: Path) -> bool:
        return any((saved.parent / RUN_FILE).exists() and read_run(saved.parent / RUN_FILE).status != "diverged"
                   for saved in folder.glob(f"*/seed{seed}/attention.npz"))

    return has


def load_saved_attention(results_dir: str | Path = "results", profile: str | None = BEST, seed: int = 0,
                         n_images: int | None = 16, rows: Sequence[str] | None = None,
                         data_dir: str | Path | None = None) -> SavedAttention:
    """theta and predictions saved by the runs (results/<profile>/<row>/seed<k>/attention.npz), with the
    test images they were computed on (regenerated from the run's data config, or read from the cache).

    Args:
        profile: a profile, or `BEST` (the default; None too): the most complete profile with saved
            attention for this seed, paper, then quick, then smoke (a paper run in progress saves its
            attention each time it pauses); paper where none has (`rstn.records.display_profile`).
        n_images: keep the first n saved images (None: all).
        rows: Table 1 rows to include (default: every transformer row that has an attention.npz; a
            diverged run's is skipped, as it predates the divergence).

    Raises:
        FileNotFoundError: no attention.npz for this profile and seed.
        ValueError: the runs disagree on the test images they saved, or the regenerated test split differs
            from what they saved (labels or boxes).
    """
    profile = display_profile(profile, results_dir, _has_saved_attention(seed))
    names = [r for r in (rows or experiments.ROWS) if experiments.get_row(r).d is not None]  # conv net: no theta
    runs, first, record = [], None, None
    keep = slice(None, n_images)
    for name in names:
        run = experiments.run_dir(results_dir, profile, name, seed)
        if not (run / "attention.npz").exists():
            continue
        with np.load(run / "attention.npz") as saved:
            arrays = {key: saved[key] for key in ("indices", "theta", "predictions", "labels", "boxes")
                      if key in saved.files}
        this = read_run(run / RUN_FILE)
        if this.status == "diverged":
            continue  # its attention.npz is from a pause before the divergence: not this run's model
        if first is None:
            first, record = arrays, this
        elif not (np.array_equal(arrays["indices"], first["indices"])
                  and np.array_equal(arrays["labels"], first["labels"])):
            raise ValueError(f"{run}: its attention.npz holds other test images than the first run's")
        row = experiments.get_row(name)
        progress = "" if this.finished else f", in progress: {counted(this.epochs_run, 'epoch')}"
        runs.append(AttentionRun(row=name, label=f"{row.model_name}, d = {row.d} ({name}{progress})", d=row.d,
                                 theta=arrays["theta"][keep], predictions=arrays["predictions"][keep],
                                 finished=this.finished, epochs=this.epochs_run))
    if first is None:
        raise FileNotFoundError(f"no attention.npz under {Path(results_dir) / profile}/*/seed{seed}/")
    indices = first["indices"][keep]
    test = _test_split(record.config, data_dir)
    if not np.array_equal(test.labels[indices], first["labels"][keep]):
        raise ValueError("the regenerated test split's labels differ from the saved ones: data changed since the runs")
    if "boxes" in first and not np.array_equal(test.boxes[indices], first["boxes"][keep]):
        raise ValueError("the regenerated test split's boxes differ from the saved ones: data changed since the runs")
    return SavedAttention(images=test.images[indices], labels=first["labels"][keep],
                          boxes=np.asarray(test.boxes[indices], dtype=np.float32), indices=indices,
                          runs=tuple(runs), profile=profile, seed=seed,
                          description=experiments.PROFILES[profile].description)
