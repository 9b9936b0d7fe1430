"""Loss and scheduler registries used by the engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mmsearch._registry import Registry
from mmsearch.data._labels import LABEL_INDEX, NUM_LABELS

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES: Registry[Callable[[torch.Tensor | None], LossFn]] = Registry("loss")
SCHEDULERS: Registry[Callable[..., Any]] = Registry("scheduler")


@LOSSES.register("bce")
def _bce(weights: torch.Tensor | None) -> LossFn:
    """Binary cross-entropy with a weight per class on every element (the paper's weighted BCE)."""

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, targets, weight=weights)

    return loss


@LOSSES.register("bce_pos")
def _bce_pos(weights: torch.Tensor | None) -> LossFn:
    """BCE with the weights on positive examples only (pos_weight)."""

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=weights)

    return loss


@LOSSES.register("focal")
def _focal(weights: torch.Tensor | None, gamma: float = 2.0) -> LossFn:
    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        bce = F.binary_cross_entropy_with_logits(logits, targets, weight=weights, reduction="none")
        p = torch.sigmoid(logits)
        pt = targets * p + (1 - targets) * (1 - p)
        return ((1 - pt) ** gamma * bce).mean()

    return loss


def class_weight_vector(spec: Any, targets: np.ndarray) -> torch.Tensor | None:
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


SCHEDULERS.register("none", lambda opt, cfg: None)
SCHEDULERS.register("step", lambda opt, cfg: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=cfg.step_gamma))
SCHEDULERS.register("plateau", lambda opt, cfg: torch.optim.lr_scheduler.ReduceLROnPlateau(
    opt, mode="min", patience=cfg.plateau_patience, factor=cfg.plateau_factor))

__all__ = ["LOSSES", "SCHEDULERS", "class_weight_vector"]
