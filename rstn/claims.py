"""The paper's claims, each judged by our finished runs: holds, does not hold, or not tested yet.

Each claim is a set of comparisons between Table 1 rows ("a has a lower error than b"), except the one about
attention, which scores the saved glimpses of the RNN-SPN runs (`rstn.glimpses`). `RULE` states how a
verdict follows from them; `rstn.uncertainty` says what "clearly" means (2 standard errors of the
difference). The landing page, the README and chapter 4 show `claims_rows`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rstn.experiments import run_dir
from rstn.generator import SequenceConfig
from rstn.glimpses import ZOOM_COVERED, ZOOM_MAX_AREA, ZOOM_ON_TARGET, AttentionScore, score_attention, \
    zooms_on_each_digit
from rstn.table import TableRecord, estimate, headline_summary, markdown_headline, markdown_table
from rstn.uncertainty import CLEAR, Difference

HOLDS, DOES_NOT_HOLD, NOT_TESTED = "holds", "does not hold", "not tested yet"
RULE = (f"A claim **holds** when every comparison it needs has finished runs and each goes its way by more "
        f"than {CLEAR:g} standard errors of the difference; it **does not hold** when all of them have finished "
        "and one does not go its way (a tie within that margin, or the other way); it is **not tested yet** "
        "while a row it needs has no finished run. Attention: a run's glimpses count as zoomed in on each digit "
        f"when step t overlaps digit t more than any other digit in at least {100 * ZOOM_ON_TARGET:.0f} % of the "
        f"images, holds at least {100 * ZOOM_COVERED:.0f} % of its box, and samples at most "
        f"{100 * ZOOM_MAX_AREA:.0f} % of the canvas (a magnification of 2 or more in each direction).")


@dataclass(frozen=True)
class Comparison:
    """The claim that row `lower` has a lower per-digit error than row `higher`."""

    lower: str
    higher: str
    label: str  # how the evidence names it, e.g. "d = 2"


@dataclass(frozen=True)
class Claim:
    statement: str
    comparisons: tuple[Comparison, ...] = ()
    attention_rows: tuple[str, ...] = ()  # RNN-SPN rows whose glimpses must zoom on each digit


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    verdict: str  # HOLDS | DOES_NOT_HOLD | NOT_TESTED
    evidence: str  # the numbers behind it, in one line


def _rnn_vs_ffn(d: int) -> Comparison:
    return Comparison(f"rnn-spn-d{d}", f"ffn-spn-d{d}", f"d = {d}")


CLAIMS = (
    Claim("RNN-SPN has a lower error than FFN-SPN at every d (Table 1)",
          tuple(_rnn_vs_ffn(d) for d in (1, 2, 3, 4))),
    Claim("d = 2 is the best down-sampling factor for RNN-SPN (Table 1: 1.5 %)",
          tuple(Comparison("rnn-spn-d2", f"rnn-spn-d{d}", f"d = 2 vs {d}") for d in (1, 3, 4))),
    Claim("RNN-SPN has a lower error than the conv net at every d (Sect. 5: 'better than both')",
          tuple(Comparison(f"rnn-spn-d{d}", "conv-net", f"d = {d}") for d in (1, 2, 3, 4))),
    Claim("FFN-SPN degrades at high d (Sect. 5: the crop must fit all three digits)",
          (Comparison("ffn-spn-d2", "ffn-spn-d3", "d = 2 vs 3"), Comparison("ffn-spn-d3", "ffn-spn-d4", "d = 3 vs 4"))),
    Claim("With d > 1 the RNN-SPN zooms in on each digit (Sect. 5, Figure 3 at d = 3)",
          attention_rows=("rnn-spn-d2", "rnn-spn-d3", "rnn-spn-d4")),
)


def _compare(c: Comparison, rows: Mapping[str, TableRecord]) -> tuple[str, str]:
    """(outcome, evidence) of one comparison; outcome: 'way' | 'not way' | 'missing'."""
    a, b = estimate(rows[c.lower]), estimate(rows[c.higher])
    if a is None or b is None:
        missing = [r for r, e in ((c.lower, a), (c.higher, b)) if e is None]
        return "missing", f"{c.label}: {' and '.join(missing)} not finished"
    diff = Difference.between(a, b)
    return ("way" if diff.sign < 0 else "not way",
            f"{c.label}: {a.value:.2f} vs {b.value:.2f} ({diff.value:+.2f}, {abs(diff.z):.1f} SE)")


def _judge(claim: Claim, rows: Mapping[str, TableRecord], scores: Mapping[str, AttentionScore]) -> Verdict:
    if claim.attention_rows:
        outcomes, evidence = [], []
        for row in claim.attention_rows:
            score = scores.get(row)
            if score is None:
                outcomes.append("missing")
                evidence.append(f"{row}: not finished")
                continue
            outcomes.append("way" if zooms_on_each_digit(score) else "not way")
            evidence.append(f"{row}: step t on digit t in {100 * score.on_target:.0f} % of {score.n} images, "
                            f"holds {100 * score.covered:.0f} % of it, glimpse {100 * score.area:.1f} % of the canvas")
    else:
        outcomes, evidence = zip(*(_compare(c, rows) for c in claim.comparisons), strict=True)
    if "missing" in outcomes:
        verdict = NOT_TESTED
    else:
        verdict = HOLDS if all(o == "way" for o in outcomes) else DOES_NOT_HOLD
    return Verdict(claim, verdict, "; ".join(evidence))


def judge_claims(table: Sequence[TableRecord], scores: Mapping[str, AttentionScore]) -> list[Verdict]:
    """Every claim of `CLAIMS` judged by `table` (Table 1 of one profile) and the attention `scores` of its
    finished RNN-SPN runs (`attention_scores`)."""
    rows = {r.row: r for r in table}
    return [_judge(claim, rows, scores) for claim in CLAIMS]


def attention_scores(table: Sequence[TableRecord], results_dir: str | Path = "results", seed: int = 0
                     ) -> dict[str, AttentionScore]:
    """The glimpse scores of the finished seed-`seed` RNN-SPN runs of `table` that saved their attention."""
    scores = {}
    for r in table:
        run = next((x for x in r.finished_runs if x.seed == seed and x.attention_file), None)
        if run is None or r.model != "RNN-SPN":
            continue
        path = run_dir(results_dir, r.profile, r.row, seed) / run.attention_file
        canvas = run.config["data"].get("canvas_size", SequenceConfig.canvas_size)
        if path.exists():
            with np.load(path) as saved:
                scores[r.row] = score_attention(saved["theta"], saved["boxes"], canvas, canvas)
    return scores


CLAIMS_COLUMNS = ("the paper's claim", "verdict", "the numbers behind it (ours, per-digit test error %)")


def claims_rows(verdicts: Sequence[Verdict]) -> list[list[str]]:
    return [[v.claim.statement, v.verdict, v.evidence] for v in verdicts]


def markdown_claims(verdicts: Sequence[Verdict]) -> str:
    """The claims table in Markdown, with the rule under it (the README)."""
    return markdown_table(CLAIMS_COLUMNS, claims_rows(verdicts)) + "\n\n" + RULE


def markdown_report(table: Sequence[TableRecord], results_dir: str | Path = "results") -> str:
    """The verdict, the claims table with its rule, then Table 1, in Markdown: the README's results block
    (`rstn table --markdown`, `--write-readme`)."""
    verdicts = judge_claims(table, attention_scores(table, results_dir))
    return "\n\n".join([f"**{headline_summary(list(table))}**", markdown_claims(verdicts),
                         "Table 1, per-digit test error (%) at the best-validation epoch, ± its standard error:",
                         markdown_headline(list(table))])
