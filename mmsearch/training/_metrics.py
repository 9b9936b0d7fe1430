"""The Kaggle "Mean F1-Score" (samples-averaged F1), micro and macro F1, and threshold tuning."""

from __future__ import annotations

import numpy as np

from mmsearch.data import binarize


def samples_f1(truth: np.ndarray, pred: np.ndarray) -> float:
    return float(samples_f1_rows(truth, pred).mean()) if len(truth) else 0.0


def _counts(truth: np.ndarray, pred: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """F1's true positives and (true + predicted) labels, summed along ``axis``: F1 = 2 tp / denom."""
    truth, pred = truth.astype(bool), pred.astype(bool)
    return (truth & pred).sum(axis), truth.sum(axis) + pred.sum(axis)


def samples_f1_rows(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Each row's F1 (a row with no true and no predicted label scores 1)."""
    tp, denom = _counts(truth, pred, 1)
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 1.0)


def micro_f1(truth: np.ndarray, pred: np.ndarray) -> float:
    tp, denom = _counts(truth, pred, None)
    return float(2 * tp / denom) if denom else 1.0


def macro_f1(truth: np.ndarray, pred: np.ndarray) -> float:
    tp, denom = _counts(truth, pred, 0)
    present = denom > 0
    return float((2 * tp[present] / denom[present]).mean()) if present.any() else 1.0


def scores(truth: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | float = 0.5) -> dict[str, float]:
    pred = binarize(probs, thresholds)
    return {"f1": samples_f1(truth, pred), "f1_micro": micro_f1(truth, pred), "f1_macro": macro_f1(truth, pred)}


def tune_thresholds(truth: np.ndarray, probs: np.ndarray, grid: np.ndarray | None = None, rounds: int = 2) -> np.ndarray:
    """Per-class thresholds by coordinate ascent on samples F1 (it is not separable per class)."""
    grid = np.linspace(0.05, 0.95, 19) if grid is None else grid
    thresholds = np.full(probs.shape[1], 0.5)
    best = samples_f1(truth, binarize(probs, thresholds))
    for _ in range(rounds):
        for c in range(probs.shape[1]):
            for t in grid:
                trial = thresholds.copy()
                trial[c] = t
                value = samples_f1(truth, binarize(probs, trial))
                if value > best + 1e-9:
                    best, thresholds = value, trial
    return thresholds


def validation_scores(truth: np.ndarray, probs: np.ndarray, tune: bool) -> tuple[np.ndarray, dict[str, float]]:
    """A model's decision thresholds (tuned per class on these rows when ``tune``, else 0.5) and
    its validation metrics: ``val_f1``, ``val_f1_micro``, ``val_f1_macro`` (at 0.5), and
    ``val_f1_tuned`` when tuned."""
    thresholds = tune_thresholds(truth, probs) if tune else np.full(probs.shape[1], 0.5)
    metrics = {f"val_{k}": v for k, v in scores(truth, probs).items()}
    if tune:
        metrics["val_f1_tuned"] = scores(truth, probs, thresholds)["f1"]
    return thresholds, metrics


def always_label1_f1(truth: np.ndarray) -> float:
    """The baseline every model must beat: predict label 1 (person) for every row."""
    pred = np.zeros_like(truth, dtype=bool)
    pred[:, 0] = True
    return samples_f1(truth, pred)


def most_frequent_label_f1(truth: np.ndarray, train: np.ndarray) -> float:
    """What a model that learned nothing but the label frequencies scores: the training rows'
    most frequent label predicted for every row (label 1, person, on COCO)."""
    pred = np.zeros_like(truth, dtype=bool)
    pred[:, int(np.asarray(train).sum(axis=0).argmax())] = True
    return samples_f1(truth, pred)

