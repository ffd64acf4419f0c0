"""rstn.results, rstn.data and rstn.attention were split into modules of one job each; every public name
they had before the split is still importable from them, and is the very object of its new home."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

# (facade, new home, the names that moved there), as the three modules defined them before the split
MOVED = [
    ("results", "records", [
        "SCHEMA_VERSION", "RUN_FILE", "STATUSES", "STOP_REASONS", "HISTORY_FIELDS", "ERROR_FIELDS", "FINAL_FIELDS",
        "TIMING_FIELDS", "ResultsError", "RunRecord", "final_metrics", "without_timing", "read_run", "write_run",
        "history_excerpt", "load_runs", "best_profile"]),
    ("results", "table", [
        "TableRecord", "default_table_profile", "load_table", "HEADLINE_COLUMNS", "MIN_EPOCHS_TO_COMPARE",
        "not_run_text", "no_result_text", "test_digits", "estimate", "run_estimate", "last_epoch_error",
        "headline_rows", "headline_summary", "VARIANT_COLUMNS", "variant_rows", "RUN_FACTS_COLUMNS",
        "run_facts_rows", "markdown_table", "README_TABLE_MARK", "README_TABLE_END", "replace_marked_table",
        "markdown_headline", "format_table"]),
    ("data", "generator", [
        "GENERATOR_VERSION", "DIGIT_SIZE", "SPLITS", "SequenceConfig", "SequenceSplit", "PoolDraws", "SplitDraws",
        "seed_streams", "draw_pool", "draw_split", "digit_positions", "build_pool", "render",
        "boxes_from_positions", "generate_sequences"]),
    ("data", "data", [
        "cache_path", "encode_images", "decode_images", "write_npz", "save_cache", "CacheError", "read_cache",
        "load_sequences"]),
    ("attention", "glimpses", [
        "ArrayT", "CORNERS", "normalised_to_pixels", "pixels_to_normalised", "glimpse_corners", "theta_box",
        "box_iou", "box_covered", "sequence_box", "AttentionScore", "step_digit_iou", "score_attention",
        "GlimpseShape", "glimpse_shape", "DIGIT_BOX_AREA", "SCORE_COLUMNS", "score_rows", "describe_glimpses",
        "ZOOM_ON_TARGET", "ZOOM_COVERED", "ZOOM_MAX_AREA", "zooms_on_each_digit"]),
    ("attention", "attention_export", ["attention_arrays"]),
    ("attention", "saved_attention", ["AttentionRun", "SavedAttention", "first_to_show", "load_saved_attention"]),
]


@pytest.mark.parametrize("facade, home, names", MOVED, ids=[f"{f}-{h}" for f, h, _ in MOVED])
def test_every_name_of_before_the_split_is_still_there(facade, home, names):
    old, new = importlib.import_module(f"rstn.{facade}"), importlib.import_module(f"rstn.{home}")
    assert [n for n in names if not hasattr(old, n)] == []
    assert [n for n in names if getattr(old, n) is not getattr(new, n)] == []
    if hasattr(old, "__all__"):
        assert set(names) <= set(old.__all__)


def _defined(module_name: str) -> set[str]:
    """The public names a module defines at its top level (classes, functions, assignments)."""
    tree = ast.parse(Path(importlib.util.find_spec(module_name).origin).read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
    return {n for n in names if not n.startswith("_")}


@pytest.mark.parametrize("facade, homes", [("results", ("records", "table")),
                                           ("attention", ("glimpses", "attention_export", "saved_attention"))])
def test_a_facade_names_every_public_name_of_its_homes(facade, homes):
    public = set().union(*(_defined(f"rstn.{home}") for home in homes))
    assert set(importlib.import_module(f"rstn.{facade}").__all__) == public


def test_the_explorers_import_of_attention_still_works():
    from rstn.attention import AttentionRun, SavedAttention, first_to_show, normalised_to_pixels  # noqa: F401
