"""Where the models look, under the one name the chapters, explorers and tests import.

The code lives in three modules, one job each:

* `rstn.glimpses`: the geometry of a glimpse (normalised <-> pixel coordinates, its corners, box and
  shape), its IoU and coverage with the digits, the scores and chapter 5's table and text, and the
  rule of the claims table (`zooms_on_each_digit`); its docstring states the conventions;
* `rstn.attention_export`: a model's theta and predictions on the first test images, what a run saves as
  ``attention.npz`` (`attention_arrays`);
* `rstn.saved_attention`: the attention the runs saved, read back with their test images
  (`load_saved_attention`, `SavedAttention`, `AttentionRun`, `first_to_show`).

Inside the package, import from those; ``rstn.attention.X`` keeps working for every name below.
"""

from rstn.attention_export import attention_arrays
from rstn.glimpses import (
    CORNERS,
    DIGIT_BOX_AREA,
    SCORE_COLUMNS,
    ZOOM_COVERED,
    ZOOM_MAX_AREA,
    ZOOM_ON_TARGET,
    ArrayT,
    AttentionScore,
    GlimpseShape,
    box_covered,
    box_iou,
    describe_glimpses,
    describe_scored,
    glimpse_corners,
    glimpse_shape,
    identity_baseline,
    normalised_to_pixels,
    pixels_to_normalised,
    score_attention,
    score_rows,
    sequence_box,
    step_digit_iou,
    theta_box,
    zooms_on_each_digit,
)
from rstn.saved_attention import AttentionRun, SavedAttention, first_to_show, load_saved_attention

__all__ = [
    "attention_arrays",
    "CORNERS", "DIGIT_BOX_AREA", "SCORE_COLUMNS", "ZOOM_COVERED", "ZOOM_MAX_AREA", "ZOOM_ON_TARGET", "ArrayT",
    "AttentionScore", "GlimpseShape", "box_covered", "box_iou", "describe_glimpses", "describe_scored",
    "glimpse_corners", "glimpse_shape", "identity_baseline", "normalised_to_pixels", "pixels_to_normalised", "score_attention", "score_rows",
    "sequence_box", "step_digit_iou", "theta_box", "zooms_on_each_digit",
    "AttentionRun", "SavedAttention", "first_to_show", "load_saved_attention",
]
