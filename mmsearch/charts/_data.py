"""Pure functions that compute each chart's data (tested on their own, no plotting).

An ablation level's result is its mean over repeats with a 95% confidence interval (Student's
t), and its difference from the base level with a Welch interval. A level is called better or
worse than the base only when that interval excludes zero; with fewer than two repeats on
either side there is no interval, and the level is "not distinguishable" by construction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CONFIDENCE = 0.95
DEGENERATE_MARGIN = 1e-4  # a level's mean within this of the most-frequent-label baseline learned nothing more


@dataclass
class TrialRecord:
    """What the charts need to know about one trial, independent of Optuna's classes."""

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


def _t(df: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, df))


def mean_ci(values: Sequence[float]) -> tuple[float, float, float, float]:
    """(mean, standard deviation, CI low, CI high); the interval is NaN below two values."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return math.nan, math.nan, math.nan, math.nan
    mean = float(v.mean())
    if len(v) < 2:
        return mean, 0.0, math.nan, math.nan
    std = float(v.std(ddof=1))
    half = _t(len(v) - 1) * std / math.sqrt(len(v))
    return mean, std, mean - half, mean + half


def welch_diff(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """mean(a) - mean(b) with its Welch 95% interval (NaN below two values per side)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) == 0 or len(y) == 0:
        return math.nan, math.nan, math.nan
    diff = float(x.mean() - y.mean())
    if len(x) < 2 or len(y) < 2:
        return diff, math.nan, math.nan
    va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va**2 / (len(x) - 1) + vb**2 / (len(y) - 1))
    half = _t(df) * se
    return diff, diff - half, diff + half


def verdict(low: float, high: float, maximize: bool) -> str:
    """better / worse / not distinguishable, from an interval of (level - reference)."""
    if math.isnan(low) or math.isnan(high) or low <= 0 <= high:
        return "not distinguishable"
    return "better" if (low > 0) == maximize else "worse"


def _values(trials: Sequence[TrialRecord], level: str) -> list[float]:
    return [float(t.value) for t in trials if t.level == level and t.state == "COMPLETE" and t.value is not None]


def ablation_bars_data(trials: Sequence[TrialRecord], levels: Sequence[str], base_level: str | None,
                       maximize: bool = True) -> list[dict[str, Any]]:
    """Per level, in the sweep's order: n, mean, std, 95% CI, the difference from the base level
    with its Welch interval and what that interval says, failures, and which is base and best.
    Levels whose every trial failed are kept with ``n = 0``, so a chart shows them."""
    base_values = _values(trials, base_level) if base_level is not None else []
    out = []
    for level in levels:
        values = _values(trials, level)
        mean, std, low, high = mean_ci(values)
        diff, diff_low, diff_high = (welch_diff(values, base_values) if base_values and level != base_level
                                     else (math.nan, math.nan, math.nan))
        baselines = [float(t.attrs["baseline_f1"]) for t in trials
                     if t.level == level and t.state == "COMPLETE" and t.attrs.get("baseline_f1") is not None]
        baseline = float(np.mean(baselines)) if baselines else math.nan
        out.append({
            "level": level, "values": values, "n": len(values), "mean": mean, "std": std, "ci_low": low, "ci_high": high,
            # No better than predicting the most frequent label for every row (samples-F1 metrics only).
            "baseline": baseline, "degenerate": bool(values) and not math.isnan(baseline)
            and mean <= baseline + DEGENERATE_MARGIN,
            "diff": diff, "diff_low": diff_low, "diff_high": diff_high,
            "vs_base": "base" if level == base_level else (verdict(diff_low, diff_high, maximize) if base_values else "no base"),
            "failed": sum(1 for t in trials if t.level == level and t.state == "FAIL"),
            "is_base": level == base_level, "is_best": False,
        })
    best = best_level(out, maximize)
    for row in out:
        row["is_best"] = row["level"] == best
    return out


def ranked_levels(bars: Sequence[Mapping[str, Any]], maximize: bool = True) -> list[Mapping[str, Any]]:
    """Measured levels, best first, by the one rule every screen uses (``sweep status``, the
    charts, the report, export, the MLflow parent run and the study's attributes): the better
    mean; on a tie, more completed repeats; then the base level; then the sweep's own order."""
    sign = 1.0 if maximize else -1.0
    measured = [(i, b) for i, b in enumerate(bars) if b["n"] > 0]
    measured.sort(key=lambda ib: (-sign * ib[1]["mean"], -ib[1]["n"], not ib[1].get("is_base", False), ib[0]))
    return [b for _, b in measured]


def best_level(bars: Sequence[Mapping[str, Any]], maximize: bool = True) -> str | None:
    ranked = ranked_levels(bars, maximize)
    return str(ranked[0]["level"]) if ranked else None


def curves_data(trials: Sequence[TrialRecord], factor: str | None = None, metric: str | None = None
                ) -> list[dict[str, Any]]:
    """One per-epoch curve per trial that reported any epoch, in trial order: the sweep's metric
    (``metric=None``) or one of the recorded per-epoch metrics. ``group`` (the level) decides the
    colour, so every repeat of a level shares one; the label names the factor."""
    out = []
    for t in sorted(trials, key=lambda t: t.number):
        if metric is None:
            points = {int(k): float(v) for k, v in t.curve.items()}
        else:
            series = t.history.get(metric) or []
            points = {i + 1: float(v) for i, v in enumerate(series)}
        if not points:
            continue
        epochs = sorted(points)
        group = t.level if t.level is not None else f"trial {t.number}"
        label = (f"{factor}={t.level}" if factor else str(t.level)) if t.level is not None else f"trial {t.number}"
        out.append({"trial": t.number, "group": group, "label": label, "repeat": t.repeat, "state": t.state,
                    "epochs": epochs, "values": [points[e] for e in epochs]})
    return out


def bubble_data(trials: Sequence[TrialRecord], levels: Sequence[str]) -> list[dict[str, Any]]:
    """The paper's Fig. 1: per backbone, model size (MB) vs mean F1, bubble area = parameters."""
    out = []
    for level in levels:
        done = [t for t in trials if t.level == level and t.state == "COMPLETE" and t.value is not None]
        if not done:
            continue
        out.append({
            "level": level,
            "size_mb": float(done[0].attrs.get("size_mb", math.nan)),
            "params": int(done[0].attrs.get("params", 0)),
            "f1": float(np.mean([t.value for t in done])),
        })
    return out


def length_data(lengths: Sequence[int], ks: Sequence[int] = (6, 7, 8, 9, 10)) -> dict[str, Any]:
    """Caption-length histogram, box-plot statistics and "fewer than k words" counts (Fig. 8)."""
    arr = np.asarray(lengths, dtype=int)
    values, counts = np.unique(arr, return_counts=True)
    q1, med, q3 = np.percentile(arr, [25, 50, 75]) if len(arr) else (math.nan,) * 3
    return {
        "histogram": {int(v): int(c) for v, c in zip(values, counts)},
        "box": {"q1": float(q1), "median": float(med), "q3": float(q3), "min": int(arr.min()), "max": int(arr.max()),
                "mean": float(arr.mean())},
        "fewer_than": {int(k): int((arr < k).sum()) for k in ks},
    }


def oov_data(reports: Sequence[Any]) -> list[dict[str, Any]]:
    """Words without a vector per corpus (Fig. 7); unavailable corpora carry their error."""
    return [{"corpus": r.corpus, "oov_words": r.oov_words, "vocab": r.vocab_size, "oov_tokens": r.oov_tokens,
             "available": r.error is None, "error": r.error} for r in reports]

