"""Standard errors, and the paper's claims judged by a table: holds, does not hold, not tested yet."""

from __future__ import annotations

import math

import pytest

from rstn.attention import AttentionScore
from rstn.claims import CLAIMS, DOES_NOT_HOLD, HOLDS, NOT_TESTED, judge_claims
from rstn.experiments import ROWS
from rstn.results import TableRecord
from rstn.uncertainty import Difference, Estimate, digit_error_se


def test_the_standard_error_of_a_per_digit_error_on_30000_digits():
    assert digit_error_se(2.0) == pytest.approx(100 * math.sqrt(0.02 * 0.98 / 30_000))  # 0.081 points
    assert digit_error_se(0.0) == 0.0
    # ours 2.01 against the paper's 2.3: 0.29 points, 2.4 standard errors of the difference
    diff = Difference.between(Estimate.of_runs([2.01]), Estimate.published(2.3))
    assert diff.se == pytest.approx(math.hypot(digit_error_se(2.01), digit_error_se(2.3)))
    assert diff.z == pytest.approx(-2.44, abs=0.01) and diff.sign == -1 and diff.against_paper() == "better (2.4 SE)"
    assert Difference.between(Estimate.of_runs([1.75]), Estimate.published(1.8)).against_paper() == "matches (0.5 SE)"
    # a variant against its row: rnn-spn-d4 in bf16 (2.09) against float32 (2.01)
    assert Difference.between(Estimate.of_runs([2.09]), Estimate.of_runs([2.01])).versus() == \
        "+0.08 (0.7 SE: no clear change)"
    assert Difference(-0.5, 0.1).versus() == "-0.50 (5.0 SE: clearly lower)"
    assert Difference(0.3, 0.1).versus() == "+0.30 (3.0 SE: clearly higher)"


def test_seeds_that_spread_more_than_the_test_set_widen_the_standard_error():
    tight, spread = Estimate.of_runs([2.0, 2.0, 2.0]), Estimate.of_runs([1.5, 2.0, 2.5])
    assert tight.se == pytest.approx(digit_error_se(2.0) / math.sqrt(3))
    assert spread.se == pytest.approx(0.5 / math.sqrt(3)) and spread.n_seeds == 3


def table_of(errors: dict[str, float]) -> list[TableRecord]:
    """Table 1 with one finished seed at `errors[row]` (%) and no run for the other rows."""
    return [TableRecord(row=r.name, model=r.model_name, d=r.d, paper_error=r.paper_error, profile="paper",
                        seeds=(0,) if r.name in errors else (), test_errors=(errors[r.name],) if r.name in errors else (),
                        sequence_errors=(), best_epochs=(), devices=(), n_diverged=0) for r in ROWS.values()]


ZOOMED = AttentionScore(n=32, step_iou=(0.2, 0.2, 0.2), on_target=1.0, covered=1.0, area=0.2)


def test_the_papers_own_numbers_satisfy_its_claims():
    paper = {r.name: r.paper_error for r in ROWS.values()}
    verdicts = judge_claims(table_of(paper), {f"rnn-spn-d{d}": ZOOMED for d in (2, 3, 4)})
    assert [v.verdict for v in verdicts] == [HOLDS] * len(CLAIMS)
    assert "d = 4: 2.30 vs 5.30 (-3.00," in verdicts[0].evidence


def test_a_missing_row_leaves_a_claim_untested_and_a_tie_breaks_it():
    paper = {r.name: r.paper_error for r in ROWS.values()}
    without_conv = judge_claims(table_of({k: v for k, v in paper.items() if k != "conv-net"}), {})
    assert without_conv[2].verdict == NOT_TESTED and "conv-net not finished" in without_conv[2].evidence
    assert without_conv[4].verdict == NOT_TESTED  # no attention scores
    tie = judge_claims(table_of(paper | {"rnn-spn-d2": 1.78}), {})  # 1.78 vs 1.8: within 2 SE
    assert tie[1].verdict == DOES_NOT_HOLD and "d = 2 vs 1: 1.78 vs 1.80" in tie[1].evidence
    wide = AttentionScore(n=32, step_iou=(0.1,) * 3, on_target=1.0, covered=1.0, area=0.6)  # not zoomed
    assert judge_claims(table_of(paper), {"rnn-spn-d2": wide, "rnn-spn-d3": ZOOMED, "rnn-spn-d4": ZOOMED}
                        )[4].verdict == DOES_NOT_HOLD
