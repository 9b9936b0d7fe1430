"""What the engine records each epoch, the state it shares with callbacks, and the callback
hooks. Torch-free: sweep files are validated against the metric names, and a sweep coordinator
writes callbacks, without loading torch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class EpochLog:
    epoch: int  # 1-based
    train_loss: float
    train_f1: float  # samples-F1 of the epoch's own training batches, in training mode (dropout on)
    val_loss: float
    val_f1: float
    val_f1_micro: float
    val_f1_macro: float
    lr: float
    seconds: float

    def metrics(self) -> dict[str, float]:
        return {k: v for k, v in self.__dict__.items() if k != "epoch"}


def history_columns(history: Sequence[EpochLog]) -> dict[str, list[float]]:
    """Each value the engine records per epoch, as a list by epoch (what charts draw and trials keep)."""
    return {f.name: [getattr(e, f.name) for e in history] for f in fields(EpochLog)}


# Per-epoch metrics a sweep may optimise or prune on, and which way is better for each.
EPOCH_METRICS: dict[str, str] = {
    f.name: ("minimize" if f.name.endswith("loss") else "maximize")
    for f in fields(EpochLog) if f.name not in ("epoch", "lr", "seconds")
}
# Computed once, on the final model, when run.tune_thresholds is on (no per-epoch value to prune on).
FINAL_ONLY_METRICS = {"val_f1_tuned": "maximize"}


@dataclass
class FitState:
    model: Any  # the torch module being trained
    history: list[EpochLog] = field(default_factory=list)
    should_stop: bool = False
    best_epoch: int = 0  # the epoch with the best validation F1 so far (the engine keeps this)
    best_f1: float = -1.0


class Callback:
    """Hooks of the engine; subclasses override what they need."""

    def on_fit_start(self, state: FitState) -> None:
        pass

    def on_epoch_end(self, state: FitState, epoch: EpochLog) -> None:
        pass

    def on_fit_end(self, state: FitState) -> None:
        pass
