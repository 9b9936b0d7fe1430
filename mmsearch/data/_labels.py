"""The fixed COMP5329 label space: COCO category ids 1..19 without 12, always in this order,
and the one rule that turns probabilities into label sets (training, export and serving)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

LABELS: tuple[int, ...] = tuple(i for i in range(1, 20) if i != 12)
NUM_LABELS = len(LABELS)
LABEL_INDEX: dict[int, int] = {label: i for i, label in enumerate(LABELS)}
LABEL_NAMES: dict[int, str] = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train",
    8: "truck", 9: "boat", 10: "traffic light", 11: "fire hydrant", 13: "stop sign",
    14: "parking meter", 15: "bench", 16: "bird", 17: "cat", 18: "dog", 19: "horse",
}


def encode(label_lists: Iterable[Sequence[int]]) -> np.ndarray:
    """Multi-hot matrix (rows x 18, float32) in the fixed label order."""
    rows = list(label_lists)
    out = np.zeros((len(rows), NUM_LABELS), dtype=np.float32)
    for r, labels in enumerate(rows):
        for label in labels:
            out[r, LABEL_INDEX[label]] = 1.0
    return out


def decode(multi_hot: np.ndarray) -> list[list[int]]:
    return [[LABELS[j] for j in np.flatnonzero(row)] for row in np.asarray(multi_hot)]


def binarize(probs: np.ndarray, thresholds: np.ndarray | float = 0.5, ensure_one: bool = True) -> np.ndarray:
    """Predicted label sets. ``ensure_one`` gives every row its most likely label when none
    passes the threshold, as a submission must list at least one label per image."""
    pred = probs >= thresholds
    if ensure_one:
        empty = ~pred.any(axis=1)
        if empty.any():
            pred[np.flatnonzero(empty), probs[empty].argmax(axis=1)] = True
    return pred
