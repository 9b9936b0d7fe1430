"""Per-level statistics of an ablation: each level's mean over its repeats, and its comparison
with the base level, judged as one family (see ``_verdicts``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmsearch.stats._differences import difference, mean_ci
from mmsearch.stats._verdicts import Comparison, Design, judge

DEGENERATE_MARGIN = 1e-4  # a level's mean within this of the most-frequent-label baseline learned nothing more


@dataclass
class TrialRecord:
    """What the statistics and charts need of one trial, independent of Optuna's classes."""

    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    value: float | None
    level: str | None = None
    repeat: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    curve: dict[int, float] = field(default_factory=dict)  # epoch -> the sweep's metric
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def history(self) -> dict[str, list[float]]:
        """Per-epoch metrics the trial recorded (train/val loss, F1, ...), each a list by epoch."""
        return dict(self.attrs.get("history") or {})


@dataclass
class LevelStats:
    """One level of an ablation: its repeats, their mean with a 95% interval, and its
    comparison with the base level (None for the base itself, or without a base)."""

    level: str
    by_repeat: dict[int | None, float]  # repeat index -> value (negative: a trial without one, never paired)
    mean: float
    std: float
    ci_low: float  # 95% interval of the mean (Student's t); NaN below two repeats
    ci_high: float
    failed: int = 0
    baseline: float = math.nan  # most-frequent-label samples-F1 on the validation rows
    is_base: bool = False
    is_best: bool = False
    comparison: Comparison | None = None

    @property
    def values(self) -> list[float]:
        return list(self.by_repeat.values())

    @property
    def n(self) -> int:
        return len(self.by_repeat)

    @property
    def degenerate(self) -> bool:
        """No better than predicting the most frequent label for every row (samples-F1 metrics)."""
        return self.n > 0 and not math.isnan(self.baseline) and self.mean <= self.baseline + DEGENERATE_MARGIN

    @property
    def vs_base(self) -> str:
        if self.is_base:
            return "base"
        return self.comparison.verdict.value if self.comparison is not None else "no base"

    @property
    def decided(self) -> bool:
        return self.comparison is not None and self.comparison.verdict.decided

    @property
    def diff(self) -> float:
        return self.comparison.diff if self.comparison is not None else math.nan

    @property
    def diff_low(self) -> float:
        return self.comparison.low if self.comparison is not None else math.nan

    @property
    def diff_high(self) -> float:
        return self.comparison.high if self.comparison is not None else math.nan

    def as_dict(self) -> dict[str, Any]:
        """Plain values (the parent run's ``levels.csv`` and ``charts/data.json``, ``status --json``)."""
        c = self.comparison
        return {"level": self.level, "n": self.n, "values": self.values, "repeats": list(self.by_repeat),
                "mean": self.mean, "std": self.std, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "diff": self.diff, "diff_low": self.diff_low, "diff_high": self.diff_high,
                "diff_confidence": c.confidence if c is not None else math.nan,
                "p": c.p if c is not None else math.nan, "method": c.difference.method if c is not None else "",
                "vs_base": self.vs_base, "verdict": c.describe() if c is not None else self.vs_base,
                "repeats_to_decide": c.repeats_to_decide if c is not None else None,
                "is_base": self.is_base, "is_best": self.is_best, "degenerate": self.degenerate,
                "baseline": self.baseline, "failed": self.failed}


def level_values(trials: Sequence[TrialRecord], level: str) -> dict[int | None, float]:
    """A level's COMPLETE values by repeat; a repeat that completed twice (a race) counts once."""
    out: dict[int | None, float] = {}
    for t in sorted(trials, key=lambda t: t.number):
        if t.level != level or t.state != "COMPLETE" or t.value is None:
            continue
        if t.repeat is None:  # no repeat index: kept under a key no other trial has, so never paired
            out[-1 - t.number] = float(t.value)
        else:
            out.setdefault(t.repeat, float(t.value))
    return out


def level_stats(trials: Sequence[TrialRecord], levels: Sequence[str], base_level: str | None,
                maximize: bool = True, design: Design | None = None) -> list[LevelStats]:
    """Per level, in the sweep's order: its repeats, mean, std, 95% CI, failures, and its
    comparison with the base level, all of a sweep's comparisons judged as one family. Levels
    whose every trial failed are kept with ``n = 0``, so a chart shows them."""
    design = design or Design()
    out = []
    for level in levels:
        by_repeat = level_values(trials, level)
        mean, std, low, high = mean_ci(list(by_repeat.values()))
        baselines = [float(t.attrs["baseline_f1"]) for t in trials
                     if t.level == level and t.state == "COMPLETE" and t.attrs.get("baseline_f1") is not None]
        out.append(LevelStats(level, by_repeat, mean, std, low, high,
                              failed=sum(1 for t in trials if t.level == level and t.state == "FAIL"),
                              baseline=float(np.mean(baselines)) if baselines else math.nan,
                              is_base=level == base_level))
    base = next((s for s in out if s.is_base), None)
    if base is not None and base.n:
        others = [s for s in out if not s.is_base and s.n]  # a level with no result is not compared
        judged = judge([difference(s.level, base.level, s.by_repeat, base.by_repeat) for s in others], design, maximize)
        for s, c in zip(others, judged):
            s.comparison = c
    best = best_level(out, maximize)
    for s in out:
        s.is_best = s.level == best
    return out


def ranked_levels(stats: Sequence[LevelStats], maximize: bool = True) -> list[LevelStats]:
    """Measured levels, best first, by the one rule every screen uses (``sweep status``, the
    charts, the report, export, the MLflow parent run and the study's attributes): the better
    mean; on a tie, more completed repeats; then the base level; then the sweep's own order."""
    sign = 1.0 if maximize else -1.0
    measured = [(i, s) for i, s in enumerate(stats) if s.n > 0]
    measured.sort(key=lambda ib: (-sign * ib[1].mean, -ib[1].n, not ib[1].is_base, ib[0]))
    return [s for _, s in measured]


def best_level(stats: Sequence[LevelStats], maximize: bool = True) -> str | None:
    ranked = ranked_levels(stats, maximize)
    return str(ranked[0].level) if ranked else None


def pooled_spread(stats: Sequence[LevelStats]) -> tuple[float, int]:
    """The spread of one repeat's paired difference, pooled over a sweep's comparisons that
    have one (degrees of freedom as weights), and those degrees of freedom (0: none measured)."""
    num = den = 0
    for s in stats:
        c = s.comparison
        if c is None or math.isnan(c.difference.sd) or c.difference.n < 2:
            continue
        df = c.difference.n - 1
        num += df * c.difference.sd ** 2
        den += df
    return (math.sqrt(num / den), den) if den else (math.nan, 0)


def next_round(stats: Sequence[LevelStats], max_repeats: int) -> tuple[int, list[str]] | None:
    """Repeats until decided: the repeat index of the next round and the levels that get it
    (the base, so the new seed has a pair, and every level whose comparison is still
    inconclusive), or None when every comparison is decided or the cap is reached."""
    base = next((s for s in stats if s.is_base), None)
    undecided = [s.level for s in stats if s.comparison is not None and not s.decided]
    if base is None or not undecided:
        return None
    repeat = max((r for r in base.by_repeat if r is not None and r >= 0), default=-1) + 1
    if repeat >= max_repeats:
        return None
    return repeat, [base.level, *undecided]


@dataclass(frozen=True)
class SweepLevels:
    """One sweep's levels, for a family that spans sweeps (a reproduction's decisions)."""

    name: str
    levels: Sequence[LevelStats]
    maximize: bool
    design: Design


def judge_across(sweeps: Sequence[SweepLevels], alpha: float) -> dict[str, dict[str, Comparison]]:
    """Every sweep's comparisons with its base level judged again as one family, at a
    false-discovery rate ``alpha`` split over the most looks any sweep planned
    (sweep -> level -> comparison)."""
    keys, diffs, ups, margins = [], [], [], []
    for s in sweeps:
        for b in s.levels:
            if b.comparison is not None:
                keys.append((s.name, b.level))
                diffs.append(b.comparison.difference)
                ups.append(s.maximize)
                margins.append(s.design.margin)
    most = max(sweeps, key=lambda s: s.design.looks, default=None)
    family = Design(alpha=alpha, family="fdr", looks=most.design.looks if most else 1,
                    first_look=most.design.first_look if most else 0)
    out: dict[str, dict[str, Comparison]] = {}
    for (sweep, level), c in zip(keys, judge(diffs, family, ups, margins)):
        out.setdefault(sweep, {})[level] = c
    return out
