"""Pure functions that compute each chart's data (tested on their own, no plotting).

An ablation's per-level statistics (means, intervals, verdicts against the base level) come
from ``mmsearch.stats``; the functions here shape the rest of the paper's charts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mmsearch.stats import TrialRecord


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

