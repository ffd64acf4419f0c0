"""How sure a Table 1 number is: standard errors of per-digit test errors and of their differences.

A run's per-digit test error p (in %) is a mean over N = 30,000 test digits (10,000 sequences x 3, ours and
the paper's alike), so its standard error is sqrt(p (100 - p) / N) points. The three digits of a
sequence share one canvas, so they are not quite independent and this is, if anything, an underestimate;
it also leaves out the spread between training seeds, which a row with several seeds measures instead
(std / sqrt(n), or the test-set error if that is larger). The paper reports one run per row, so its
numbers carry the test-set error alone. Two numbers from different test sets differ by sqrt(se_a^2 +
se_b^2) by chance; a difference beyond `CLEAR` = 2 of those is called clear.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

N_TEST_DIGITS = 30_000  # 10,000 test sequences x 3 digits (PROTOCOL.md, "Data"; the paper's Sect. 4)
CLEAR = 2.0  # standard errors of a difference beyond which it is not chance


def digit_error_se(error_pct: float, n_digits: int = N_TEST_DIGITS) -> float:
    """Standard error (points of %) of a per-digit error measured on `n_digits` test digits."""
    p = error_pct / 100
    return 100 * math.sqrt(max(p * (1 - p), 0.0) / n_digits)


@dataclass(frozen=True)
class Estimate:
    """A per-digit test error (%) and its standard error: one run, or the mean over seeds."""

    value: float
    se: float
    n_seeds: int = 1

    @classmethod
    def of_runs(cls, errors_pct: Sequence[float], n_digits: int = N_TEST_DIGITS) -> Estimate:
        """The mean of one or more seeds' errors, each measured on `n_digits` test digits; its SE: the seed
        spread / sqrt(n), at least the test SE."""
        mean = statistics.fmean(errors_pct)
        se = digit_error_se(mean, n_digits) / math.sqrt(len(errors_pct))
        if len(errors_pct) > 1:
            se = max(se, statistics.stdev(errors_pct) / math.sqrt(len(errors_pct)))
        return cls(mean, se, len(errors_pct))

    @classmethod
    def published(cls, error_pct: float) -> Estimate:
        """A number of the paper's Table 1: one run on a test set of N_TEST_DIGITS digits."""
        return cls(error_pct, digit_error_se(error_pct))


@dataclass(frozen=True)
class Difference:
    """a - b, in points, with its standard error and what it says."""

    value: float
    se: float

    @classmethod
    def between(cls, a: Estimate, b: Estimate) -> Difference:
        return cls(a.value - b.value, math.hypot(a.se, b.se))

    @property
    def z(self) -> float:
        """The difference in standard errors."""
        return self.value / self.se if self.se > 0 else math.copysign(math.inf, self.value)

    @property
    def sign(self) -> int:
        """-1: a is clearly lower, +1: clearly higher, 0: within CLEAR standard errors (chance)."""
        return 0 if abs(self.z) <= CLEAR else (1 if self.z > 0 else -1)

    def versus(self) -> str:
        """For a - b between two of our runs: the difference, its size and what it says, e.g.
        "+0.08 (0.7 SE: no clear change)"."""
        word = {0: "no clear change", -1: "clearly lower", 1: "clearly higher"}[self.sign]
        return f"{self.value:+.2f} ({abs(self.z):.1f} SE: {word})"

    def against_paper(self) -> str:
        """For ours - paper (lower error is better): "matches", "better" or "worse", with |z|."""
        word = {0: "matches", -1: "better", 1: "worse"}[self.sign]
        return f"{word} ({abs(self.z):.1f} SE)"
