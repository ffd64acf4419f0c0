"""The paper map of chapter 6: the spatial transformer's equations (STN eqs. 1-7) and every equation, table
and experimental section of the RNN-SPN paper, the symbol that implements each and the tests that check it;
and the ``# paper:`` / ``# deviation:`` marks in the package's source.

Both are read by the book (chapter 6) and checked there: every test the map names must exist in ``tests/``.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

from rstn.viz import Table

# (paper, item, what it says, symbol, tests)
PAPER_MAP: tuple[tuple[str, str, str, str, str], ...] = (
    ("STN", "eq. (1)", "affine map of output grid points to input points", "rstn.sampler.affine_grid",
     "test_affine_grid_matches_torch, test_translation_by_k_pixels"),
    ("STN", "eq. (2)", "attention: isotropic scale and translation", "rstn.sampler.attention_theta",
     "test_attention_theta_is_eq2_and_zooms_on_centre"),
    ("STN", "eq. (3)", "sampling with a generic kernel", "rstn.sampler.transform (kernel=...)",
     "test_bilinear_matches_literal_eq5_kernel_sum, test_nearest_kernel_matches_references"),
    ("STN", "eq. (4)", "integer (nearest) kernel", "rstn.sampler.nearest_sample",
     "test_nearest_kernel_matches_references"),
    ("STN", "eq. (5)", "bilinear kernel", "rstn.sampler.bilinear_sample",
     "test_bilinear_matches_literal_eq5_kernel_sum, test_equations_match_torch_forward_and_backward"),
    ("STN", "eq. (6)", "gradient with respect to the image", "autograd through rstn.sampler.bilinear_sample",
     "test_equations_match_torch_forward_and_backward, test_gradcheck_float64_image_and_theta"),
    ("STN", "eq. (7)", "sub-gradient with respect to the sample point", "autograd through rstn.sampler.bilinear_sample",
     "test_gradcheck_float64_image_and_theta, test_equations_match_torch_forward_and_backward"),
    ("RNN-SPN", "eq. (1)", "the localisation network outputs A_theta", "rstn.models.FFNSPN, rstn.models.ThetaRegression",
     "test_fresh_model_predicts_identity_theta_at_every_step, test_output_shapes_for_batch_1_and_7"),
    ("RNN-SPN", "eq. (2)", "the regular grid G from -1 to +1, corners included", "rstn.sampler.affine_grid (align_corners=True)",
     "test_affine_grid_matches_torch, test_identity_returns_input_at_d1"),
    ("RNN-SPN", "eq. (3)", "S = A_theta G", "rstn.sampler.affine_grid",
     "test_affine_grid_matches_torch"),
    ("RNN-SPN", "eq. (4)", "n_points = H W / d^2: the glimpse size", "rstn.sampler.output_size, ModelConfig.glimpse_size",
     "test_output_size_from_d, test_spatial_arithmetic"),
    ("RNN-SPN", "eq. (5)", "c = f_conv(I)", "rstn.models.Localisation",
     "test_spatial_arithmetic, test_parameter_counts_match_protocol"),
    ("RNN-SPN", "eq. (6)", "h_t = f_rnn(c, h_{t-1})", "rstn.models.GRU",
     "test_gru_is_lasagne_form_of_torch_gru_cell"),
    ("RNN-SPN", "eq. (7)", "A_theta^t = g(h_t)", "rstn.models.RNNSPN (ThetaRegression on the GRU states)",
     "test_fresh_model_predicts_identity_theta_at_every_step, test_batched_glimpses_equal_step_by_step"),
    ("RNN-SPN", "Sect. 4", "the cluttered MNIST sequences", "rstn.data.generate_sequences, SequenceConfig",
     "test_draw_ranges_are_the_codes, test_digits_abut_and_stay_inside, test_paper_variants"),
    ("RNN-SPN", "Sect. 4", "RMSprop", "rstn.optim.LasagneRMSprop",
     "test_rmsprop_step_matches_hand_computation, test_rmsprop_differs_from_torch_for_small_gradients"),
    ("RNN-SPN", "appendix 6.1", "the RNN-SPN architecture", "rstn.models.RNNSPN, rnn_spn",
     "test_parameter_counts_match_protocol, test_paper_variant_dense_256_and_conv_net_count"),
    ("RNN-SPN", "appendix 6.2", "FFN-SPN and the conv net", "rstn.models.FFNSPN, ConvNet",
     "test_parameter_counts_match_protocol"),
    ("RNN-SPN", "Table 1", "per-digit test error of nine models", "rstn.experiments.ROWS, rstn.results.load_table; rstn.train.digit_error",
     "test_registry_holds_the_nine_rows_with_the_papers_numbers, test_digit_and_sequence_error_on_a_hand_made_example, test_table_mean_and_std_over_seeds_and_runs_in_progress"),
    ("RNN-SPN", "Figure 3", "attention of RNN-SPN (d = 3) and its crops", "rstn.viz.plot_attention, rstn.attention (chapter 5)",
     "test_plot_attention_crops_are_the_sampled_glimpses, test_load_saved_attention_round_trip"),
)

MARK = re.compile(r"#\s*(paper|deviation)\b:?\s*(.*)")


def named_tests() -> set[str]:
    """Every test function the paper map names."""
    return {t.strip() for *_, tests in PAPER_MAP for t in tests.split(",")}


def missing_tests(tests_dir: str | Path) -> list[str]:
    """The tests the paper map names that no ``test_*.py`` under ``tests_dir`` defines (sorted; [] when none)."""
    defined = set()
    for path in Path(tests_dir).rglob("test_*.py"):
        tree = ast.parse(path.read_text())
        defined |= {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    return sorted(named_tests() - defined)


def paper_map_table() -> Table:
    """The paper map as a table (paper and item in one column, to fit the page)."""
    return Table(["item", "what", "implemented by", "checked by"],
                 [[f"{paper} {item}", what, f"`{symbol}`", ", ".join(f"`{t.strip()}`" for t in tests.split(","))]
                  for paper, item, what, symbol, tests in PAPER_MAP])


def code_marks(package: str | Path | None = None) -> list[tuple[str, str, str, str]]:
    """Every ``# paper:`` and ``# deviation:`` comment in the package's modules.

    Only comments count, not strings; a comment block's continuation lines are joined to its first line.

    Args:
        package: the folder to scan (its ``*.py``); None: the installed ``rstn``.

    Returns:
        (module, innermost function or class, "paper" | "deviation", comment) in file and line order.
    """
    import rstn

    root = Path(package) if package else Path(rstn.__file__).parent
    found = []
    for path in sorted(root.glob("*.py")):
        source = path.read_text()
        lines = source.splitlines()
        # real comments only (a docstring that mentions "# paper:" is not a mark)
        comments = {token.start[0]: token.string for token in tokenize.generate_tokens(io.StringIO(source).readline)
                    if token.type == tokenize.COMMENT}
        scopes = [(node.lineno, node.end_lineno, node.name) for node in ast.walk(ast.parse(source))
                  if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
        for number, comment in comments.items():
            match = MARK.match(comment)
            if not match:
                continue
            text = match.group(2).strip()
            if lines[number - 1].lstrip().startswith("#"):  # a comment block: take its continuation lines too
                for following in range(number + 1, len(lines) + 1):
                    if not lines[following - 1].lstrip().startswith("#") or MARK.match(lines[following - 1].lstrip()):
                        break
                    text += " " + lines[following - 1].lstrip()[1:].strip()
            inner = [s for s in scopes if s[0] <= number <= s[1]]
            scope = min(inner, key=lambda s: s[1] - s[0])[2] if inner else "(module)"
            found.append((f"rstn.{path.stem}", scope, match.group(1), text))
    return found


def code_marks_table(package: str | Path | None = None) -> Table:
    """:func:`code_marks` as a table."""
    # plain text in one column: code spans do not wrap, and four narrow columns broke the names
    return Table(["where", "mark", "comment"],
                 [[f"{module}: {scope}", mark, text] for module, scope, mark, text in code_marks(package)])
