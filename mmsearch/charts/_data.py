"""Pure functions that compute each chart's data (tested on their own, no plotting)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class TrialRecord:
    """What the charts need to know about one trial, independent of Optuna's classes."""

    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    value: float | None
    level: str | None = None
    repeat: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    curve: dict[int, float] = field(default_factory=dict)  # epoch -> val F1
    attrs: dict[str, Any] = field(default_factory=dict)


def curves_data(trials: Sequence[TrialRecord]) -> list[dict[str, Any]]:
    """One validation-F1 curve per trial that reported any epoch, in trial order."""
    out = []
    for t in sorted(trials, key=lambda t: t.number):
        if not t.curve:
            continue
        epochs = sorted(t.curve)
        name = f"#{t.number}" + (f" {t.level}" if t.level is not None else "") + (f" r{t.repeat}" if t.repeat is not None else "")
        out.append({"trial": t.number, "label": name, "state": t.state, "epochs": epochs, "f1": [t.curve[e] for e in epochs]})
    return out


def ablation_bars_data(trials: Sequence[TrialRecord], levels: Sequence[str], base_level: str | None) -> list[dict[str, Any]]:
    """Mean and standard deviation of the metric over repeats, per level, in the sweep's order.
    Levels whose every trial failed are kept with ``n = 0`` and the failure count, so a chart
    shows them instead of silently dropping them."""
    out = []
    for level in levels:
        done = [t.value for t in trials if t.level == level and t.state == "COMPLETE" and t.value is not None]
        failed = sum(1 for t in trials if t.level == level and t.state == "FAIL")
        values = np.asarray(done, dtype=float)
        out.append({
            "level": level,
            "mean": float(values.mean()) if len(values) else math.nan,
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "n": int(len(values)),
            "failed": failed,
            "is_base": level == base_level,
        })
    return out


def best_level(bars: Sequence[Mapping[str, Any]], maximize: bool = True) -> str | None:
    candidates = [b for b in bars if b["n"] > 0]
    if not candidates:
        return None
    key = (lambda b: b["mean"]) if maximize else (lambda b: -b["mean"])
    return str(max(candidates, key=key)["level"])


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


def history_data(history: Sequence[Any]) -> dict[str, list[float]]:
    """Per-epoch curves of a single training run (train/val loss and val F1)."""
    return {
        "epoch": [h.epoch for h in history],
        "train_loss": [h.train_loss for h in history],
        "val_loss": [h.val_loss for h in history],
        "val_f1": [h.val_f1 for h in history],
    }
