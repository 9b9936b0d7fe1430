"""Four verdicts from one interval per comparison, with one error rate for the family.

Each comparison (a level against its reference) gets one two-sided interval of the difference,
at the level its family's correction tested it at:

* ``holm`` (a sweep's comparisons with its base level): Holm's step-down on the p-values keeps
  the family-wise error rate (any false better/worse in the sweep) at ``alpha``. A rejected
  comparison's interval is at the level Holm rejected it at; the others at the level where the
  step-down stopped, so an interval excludes 0 exactly when the comparison is decided.
* ``fdr`` (the findings of a whole reproduction): Benjamini-Hochberg keeps the expected share
  of false better/worse among the decided ones at ``alpha`` (and, when nothing differs at all,
  the chance of any false one); every interval is at the one threshold it finds.

Sequential looks (repeats added until decided, one round per repeat from ``first_look`` to the
cap): every level a family would test at, ``a``, becomes the per-look level ``c`` at which the
chance that a comparison with no true difference is ever decided, at any of the planned looks,
is ``a`` (a constant boundary, as Pocock's group-sequential design; calibrated once by simulating
the paired t statistic's path, which under the null does not depend on the spread). Without the
first look known it falls back to ``a / looks`` (Bonferroni over looks, valid however the looks
depend on each other).

From that interval and the margin of practical equivalence ``margin`` (in the metric's units):
*better*/*worse* when it excludes 0; *equivalent* when it lies inside ±margin (two one-sided
tests, each at half the interval's level); *inconclusive* otherwise, with the repeats that
would likely decide it at the difference and spread seen so far. A decided difference whose
whole interval lies inside ±margin is also equivalent: real, but smaller than the margin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from mmsearch.stats._differences import Difference, t_quantile

ALPHA = 0.05
DEFAULT_MARGIN = 0.005  # samples-F1 (and the other F1 metrics): half a point
METRIC_MARGINS = {"val_loss": 0.005, "train_loss": 0.005}  # a loss's default is on its own scale
MAX_REPEATS = 100
POWER = 0.8
# The spread of one repeat's paired difference assumed before a study has measured its own:
# the real COMP5329 captions' per-repeat sd of samples-F1 (0.004), pairs taken as uncorrelated
# (sqrt 2 x 0.004), which is the cautious side: matched seeds only shrink it.
PRIOR_PAIR_SD = 0.0057


class Verdict(str, Enum):
    BETTER = "better"
    WORSE = "worse"
    EQUIVALENT = "equivalent"
    INCONCLUSIVE = "inconclusive"

    @property
    def decided(self) -> bool:
        return self is not Verdict.INCONCLUSIVE


FAMILIES = ("holm", "fdr")


class Looks(NamedTuple):
    """The analyses a study plans: one (fixed repeats), or one per round from ``first`` repeats
    to the cap (repeats added until decided)."""

    count: int = 1
    first: int = 0


@dataclass(frozen=True)
class Design:
    """How comparisons are judged: the error rate, the margin, the correction, the looks."""

    alpha: float = ALPHA  # family-wise error rate (holm) or false-discovery rate (fdr)
    margin: float = DEFAULT_MARGIN  # differences inside ±margin are practically equivalent
    family: str = "holm"
    looks: int = 1  # planned analyses of the same comparisons (repeats added until decided)
    first_look: int = 0  # repeats at the first of them (0: unknown, Bonferroni over the looks)

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha {self.alpha}: must be between 0 and 1")
        if not self.margin >= 0:
            raise ValueError(f"margin {self.margin}: must be 0 or more")
        if self.family not in FAMILIES:
            raise ValueError(f"family {self.family!r}: one of {', '.join(FAMILIES)}")
        if self.looks < 1:
            raise ValueError(f"looks {self.looks}: must be 1 or more")

    @property
    def alpha_per_look(self) -> float:
        return self.per_look(self.alpha)

    def per_look(self, level: float, one_sided: bool = False) -> float:
        """The per-look level that keeps ``level`` over every planned look (two-sided tests, or
        one-sided ones for the two tests of equivalence)."""
        if self.looks == 1:
            return level
        if self.first_look < 1:
            return level / self.looks
        return sequential_level(level, self.first_look, self.first_look + self.looks - 1, one_sided)

    def with_looks(self, looks: Looks) -> Design:
        return replace(self, looks=max(1, looks.count), first_look=looks.first if looks.count > 1 else 0)

    def describe(self) -> str:
        rate = (f"family-wise error rate {self.alpha:.0%} across the comparisons (Holm)" if self.family == "holm"
                else f"false-discovery rate {self.alpha:.0%} across the comparisons (Benjamini-Hochberg)")
        looks = "" if self.looks == 1 else (f", held over {self.looks} planned looks (repeats added until decided; "
                                             + ("a calibrated constant boundary)" if self.first_look else "Bonferroni)"))
        return (f"paired t on matched seeds (Welch where fewer than two match); {rate}{looks}; equivalent within "
                f"±{self.margin:g}")


@dataclass(frozen=True)
class Comparison:
    """One level against its reference, judged."""

    difference: Difference
    verdict: Verdict
    low: float
    high: float
    confidence: float  # of the interval [low, high]: 1 - the level its family tested it at
    p: float  # raw two-sided p
    margin: float
    maximize: bool = True
    repeats_to_decide: int | None = None  # inconclusive: repeats per level that would likely decide it
    # The interval of the two one-sided tests (at twice the level): inside ±margin means equivalent.
    tost_low: float = math.nan
    tost_high: float = math.nan
    tost_confidence: float = math.nan

    @property
    def level(self) -> str:
        return self.difference.level

    @property
    def reference(self) -> str:
        return self.difference.reference

    @property
    def diff(self) -> float:
        return self.difference.diff

    @property
    def equivalent(self) -> bool:
        """Both one-sided tests reject a difference of ±margin (also true of a decided but small one)."""
        return not math.isnan(self.tost_low) and -self.margin < self.tost_low and self.tost_high < self.margin

    @property
    def interval(self) -> str:
        if math.isnan(self.low):
            return self.difference.how()
        return f"{self.confidence:.1%} CI {self.low:+.4f}..{self.high:+.4f}, {self.difference.how()}"

    def describe(self, reference: str | None = None) -> str:
        """``better than 1 by +0.0100 (98.3% CI +0.0040..+0.0160, paired on 5 matched seeds)``."""
        ref = reference or self.reference
        v = self.verdict
        if v in (Verdict.BETTER, Verdict.WORSE):
            small = f"; smaller than the margin ±{self.margin:g}" if self.equivalent else ""
            return f"{v.value} than {ref} by {self.diff:+.4f} ({self.interval}{small})"
        if v is Verdict.EQUIVALENT:
            tost = f"{self.tost_confidence:.1%} CI {self.tost_low:+.4f}..{self.tost_high:+.4f}"
            return f"equivalent to {ref} within ±{self.margin:g} ({self.diff:+.4f}; {tost}, {self.difference.how()})"
        if not self.difference.testable:
            return f"inconclusive against {ref}: {self.difference.how()}"
        more = (f"; about {self.repeats_to_decide} repeats per level would likely decide it"
                if self.repeats_to_decide is not None else "; more repeats than 100 per level would be needed")
        return f"inconclusive against {ref} ({self.diff:+.4f}; {self.interval}){more}"


def verdict_of(low: float, high: float, margin: float, maximize: bool, tost: tuple[float, float] | None = None
               ) -> Verdict:
    """From the decision interval [low, high] and the equivalence interval ``tost`` (default: the same)."""
    if math.isnan(low) or math.isnan(high):
        return Verdict.INCONCLUSIVE
    if low > 0 or high < 0:
        return Verdict.BETTER if (low > 0) == maximize else Verdict.WORSE
    t_low, t_high = tost or (low, high)
    if -margin < t_low and t_high < margin:
        return Verdict.EQUIVALENT
    return Verdict.INCONCLUSIVE


def levels_tested(differences: Sequence[Difference], design: Design) -> list[tuple[float, float]]:
    """For each comparison, the two-sided level its decision interval is drawn at and the
    two-sided level of its equivalence interval: the two one-sided tests each at the family's
    level, so an interval at twice it (90% for 5%)."""
    alpha = design.alpha
    testable = [i for i, d in enumerate(differences) if d.testable]
    m = len(testable)
    family = [math.nan] * len(differences)
    if m == 0:
        return [(math.nan, math.nan)] * len(differences)
    order = sorted(testable, key=lambda i: differences[i].p_value())
    if design.family == "holm":
        stopped_at = None
        for rank, i in enumerate(order):
            level = alpha / (m - rank)
            if stopped_at is None and differences[i].p_value() <= design.per_look(level):
                family[i] = level
            else:
                stopped_at = stopped_at if stopped_at is not None else level
                family[i] = stopped_at
    else:
        threshold = alpha / m  # Benjamini-Hochberg: the largest k with p_(k) <= k alpha / m sets it
        for rank, i in enumerate(order, start=1):
            if differences[i].p_value() <= design.per_look(rank * alpha / m):
                threshold = rank * alpha / m
        for i in testable:
            family[i] = threshold
    return [(math.nan, math.nan) if math.isnan(f) else (design.per_look(f), 2 * design.per_look(f, one_sided=True))
            for f in family]


def judge(differences: Sequence[Difference], design: Design, maximize: bool | Sequence[bool] = True,
          margins: Sequence[float] | None = None) -> list[Comparison]:
    """Each difference judged as one family (see the module's docstring), in the given order.
    ``maximize`` and ``margins`` may differ per difference (a report's findings: one family,
    each in its own metric's units); by default the design's margin for all."""
    n = len(differences)
    ups = [maximize] * n if isinstance(maximize, bool) else list(maximize)
    widths = [design.margin] * n if margins is None else list(margins)
    out = []
    for d, (level, tost_level), up, margin in zip(differences, levels_tested(differences, design), ups, widths):
        low, high = d.interval(level) if not math.isnan(level) else (math.nan, math.nan)
        tost = d.interval(tost_level) if not math.isnan(level) else (math.nan, math.nan)
        v = verdict_of(low, high, margin, up, tost)
        more = repeats_to_decide(d, level, margin, tost_level) if v is Verdict.INCONCLUSIVE else None
        out.append(Comparison(d, v, low, high, 1 - level if not math.isnan(level) else math.nan, d.p_value(),
                              margin, up, more, *tost, 1 - tost_level))
    return out


def repeats_to_decide(d: Difference, level: float, margin: float, tost_level: float | None = None) -> int | None:
    """Repeats per level at which the interval would likely exclude 0 or fit inside ±margin,
    if the difference and the spread stay as measured (None: more than ``MAX_REPEATS``)."""
    if math.isnan(d.sd) or math.isnan(d.diff) or math.isnan(level):
        return None
    tost_level = 2 * level if tost_level is None else tost_level
    for n in range(max(2, d.n + 1), MAX_REPEATS + 1):
        half = t_quantile(1 - level / 2, n - 1) * d.sd / math.sqrt(n)
        tost_half = t_quantile(1 - tost_level / 2, n - 1) * d.sd / math.sqrt(n)
        if abs(d.diff) > half or abs(d.diff) + tost_half < margin:
            return n
    return None


def detectable_difference(sd: float, repeats: int, level: float, power: float = POWER) -> float:
    """The smallest true difference a paired t test at ``level`` (two-sided) detects with
    probability ``power`` at ``repeats`` matched seeds, given the spread ``sd`` of one repeat's
    difference; infinite below two repeats (no interval at all)."""
    if repeats < 2 or math.isnan(sd):
        return math.inf
    df = repeats - 1
    return (t_quantile(1 - level / 2, df) + t_quantile(power, df)) * sd / math.sqrt(repeats)


def comparisons_level(design: Design, comparisons: int) -> float:
    """The level the hardest-pressed comparison of a family is tested at (Bonferroni's), which
    the power figures assume: a guarantee, not a hope."""
    return design.alpha_per_look / max(1, comparisons)


def margin_for(metric: str) -> float:
    return METRIC_MARGINS.get(metric, DEFAULT_MARGIN)


CALIBRATION_PATHS = 100_000  # simulated null paths per plan: a 0.2% level from 200 of them


@lru_cache(maxsize=64)
def _min_p(first: int, last: int, one_sided: bool) -> np.ndarray:
    """Sorted smallest p over the looks n = first..last of the paired t test, along null paths
    (fixed seed: the same boundary on every machine)."""
    from scipy import stats

    rng = np.random.default_rng(20261206)
    first = max(2, first)
    x = rng.standard_normal((CALIBRATION_PATHS, last)).astype(np.float64)
    csum, csq = np.cumsum(x, axis=1), np.cumsum(x * x, axis=1)
    best = np.ones(CALIBRATION_PATHS)
    for n in range(first, last + 1):
        mean = csum[:, n - 1] / n
        var = np.maximum((csq[:, n - 1] - n * mean * mean) / (n - 1), 1e-300)
        t = mean / np.sqrt(var / n)
        p = stats.t.sf(t, n - 1) if one_sided else 2 * stats.t.sf(np.abs(t), n - 1)
        np.minimum(best, p, out=best)
    return np.sort(best)


def sequential_level(level: float, first: int, last: int, one_sided: bool = False) -> float:
    """The constant per-look level at which a null comparison looked at after n = first..last
    paired repeats is decided at some look with probability ``level``."""
    if last <= max(2, first):
        return level
    return float(np.quantile(_min_p(first, last, one_sided), level))
