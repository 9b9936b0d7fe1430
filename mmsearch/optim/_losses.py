"""Losses by name: the engine builds one from ``optim.loss`` and ``optim.class_weights``."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mmsearch._lazy import lazy_module
from mmsearch._registry import Registry
from mmsearch.data import LABEL_INDEX, NUM_LABELS

if TYPE_CHECKING:
    import torch

torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")

LossFn = Callable[[Any, Any], Any]
LOSSES: Registry[Callable[[Any], LossFn]] = Registry("loss")


@LOSSES.register("bce")
def _bce(weights: Any) -> LossFn:
    """Binary cross-entropy with a weight per class on every element (the paper's weighted BCE)."""
    return functools.partial(F.binary_cross_entropy_with_logits, weight=weights)


@LOSSES.register("bce_pos")
def _bce_pos(weights: Any) -> LossFn:
    """BCE with the weights on positive examples only (pos_weight)."""
    return functools.partial(F.binary_cross_entropy_with_logits, pos_weight=weights)


@LOSSES.register("focal")
def _focal(weights: Any, gamma: float = 2.0) -> LossFn:
    def loss(logits: Any, targets: Any) -> Any:
        bce = F.binary_cross_entropy_with_logits(logits, targets, weight=weights, reduction="none")
        p = torch.sigmoid(logits)
        pt = targets * p + (1 - targets) * (1 - p)
        return ((1 - pt) ** gamma * bce).mean()

    return loss


def class_weight_vector(spec: str | Sequence[float] | Mapping[str, float] | None, targets: np.ndarray
                        ) -> torch.Tensor | None:
    """Resolve ``class_weights`` (None, 'auto', list of 18, {label: w}) to a tensor."""
    if spec is None:
        return None
    if spec == "auto":
        freq = targets.mean(axis=0).clip(1e-3, None)
        w = 1.0 / freq
        return torch.as_tensor((w / w.mean()).clip(0.1, 10.0), dtype=torch.float32)
    if isinstance(spec, dict):
        w = np.ones(NUM_LABELS, dtype=np.float32)
        for label, value in spec.items():
            w[LABEL_INDEX[int(label)]] = float(value)
        return torch.as_tensor(w)
    return torch.as_tensor(np.asarray(spec, dtype=np.float32))
