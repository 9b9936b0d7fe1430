"""The difference between two levels' repeats, with its standard error.

Repeats of different levels with the same repeat index share a seed (``run.seed + repeat``):
the same initial weights for the parts both levels share, the same batch order, the same
augmentation draws. A level's run and the base's run of one repeat are then a matched pair,
and the spread that seeds cause cancels in their difference. So the difference is taken per
repeat and its interval is the paired t interval; only where fewer than two repeats match is
it Welch's interval for independent samples (and it says so).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

PAIRED, WELCH, NONE = "paired", "Welch", "none"


@lru_cache(maxsize=4096)
def t_quantile(q: float, df: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(q, df))


def t_two_sided_p(t: float, df: float) -> float:
    from scipy import stats

    return float(2 * stats.t.sf(abs(t), df))


@dataclass(frozen=True)
class Difference:
    """mean(level) - mean(reference), uncorrected: what one comparison measured."""

    level: str
    reference: str
    diff: float
    se: float  # standard error of ``diff`` (NaN: fewer than two values on a side)
    df: float  # degrees of freedom of its t distribution
    method: str  # PAIRED, WELCH or NONE (no interval)
    n: int  # matched repeats (paired), else the smaller side's repeats
    unpaired: int = 0  # repeats left out because the other level has no run with that seed
    # The spread of one repeat's difference: se = sd / sqrt(n). For Welch, sqrt(var_a + var_b).
    sd: float = math.nan

    @property
    def testable(self) -> bool:
        return self.method != NONE and not math.isnan(self.se)

    def p_value(self) -> float:
        """Two-sided p of the t test that the true difference is 0."""
        if not self.testable:
            return math.nan
        if self.se == 0:
            return 0.0 if self.diff != 0 else 1.0
        return t_two_sided_p(self.diff / self.se, self.df)

    def interval(self, alpha: float) -> tuple[float, float]:
        """The two-sided (1 - alpha) interval of the difference."""
        if not self.testable:
            return math.nan, math.nan
        half = t_quantile(1 - alpha / 2, self.df) * self.se
        return self.diff - half, self.diff + half

    def how(self) -> str:
        if self.method == PAIRED:
            left = f"; {self.unpaired} unmatched repeat(s) left out" if self.unpaired else ""
            return f"paired on {self.n} matched seed(s){left}"
        if self.method == WELCH:
            return f"Welch, unpaired ({self.n}+ repeats a side, fewer than two matched seeds)"
        return "no interval: fewer than two repeats" if self.n < 2 else "no interval"


def difference(level: str, reference: str, a: Mapping[int | None, float], b: Mapping[int | None, float]) -> Difference:
    """``a`` and ``b`` map a repeat index (None: unknown) to that repeat's value."""
    common = sorted(k for k in a if k is not None and k in b)
    if len(common) >= 2:
        d = np.array([a[k] - b[k] for k in common], dtype=float)
        sd = float(d.std(ddof=1))
        unpaired = (len(a) - len(common)) + (len(b) - len(common))
        return Difference(level, reference, float(d.mean()), sd / math.sqrt(len(d)), len(d) - 1, PAIRED, len(d),
                          unpaired, sd)
    x, y = np.asarray(list(a.values()), dtype=float), np.asarray(list(b.values()), dtype=float)
    if len(x) == 0 or len(y) == 0:
        return Difference(level, reference, math.nan, math.nan, math.nan, NONE, 0)
    diff = float(x.mean() - y.mean())
    if len(x) < 2 or len(y) < 2:
        return Difference(level, reference, diff, math.nan, math.nan, NONE, min(len(x), len(y)))
    va, vb = float(x.var(ddof=1)), float(y.var(ddof=1))
    se = math.sqrt(va / len(x) + vb / len(y))
    if se == 0:
        df = float(len(x) + len(y) - 2)
    else:
        df = (va / len(x) + vb / len(y)) ** 2 / ((va / len(x)) ** 2 / (len(x) - 1) + (vb / len(y)) ** 2 / (len(y) - 1))
    return Difference(level, reference, diff, se, df, WELCH, min(len(x), len(y)), 0, math.sqrt(va + vb))


def mean_ci(values: list[float] | tuple[float, ...] | np.ndarray, confidence: float = 0.95
            ) -> tuple[float, float, float, float]:
    """(mean, standard deviation, CI low, CI high) of one level; the interval is NaN below two values."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return math.nan, math.nan, math.nan, math.nan
    mean = float(v.mean())
    if len(v) < 2:
        return mean, 0.0, math.nan, math.nan
    std = float(v.std(ddof=1))
    half = t_quantile(0.5 + confidence / 2, len(v) - 1) * std / math.sqrt(len(v))
    return mean, std, mean - half, mean + half
