"""What the engine records each epoch, the state it shares with callbacks, and the callback
hooks. Torch-free: sweep files are validated against the metric names, and a sweep coordinator
writes callbacks, without loading torch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


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
    model: nn.Module  # the torch module being trained
    history: list[EpochLog] = field(default_factory=list)
    should_stop: bool = False
    best_epoch: int = 0  # the epoch with the best validation F1 so far (the engine keeps this)
    best_f1: float = -1.0
    replayed: bool = False  # a cached stage's recorded fit, replayed to the callbacks: nothing trains


class Callback:
    """Hooks of the engine; subclasses override what they need."""

    def on_fit_start(self, state: FitState) -> None:
        pass

    def on_epoch_end(self, state: FitState, epoch: EpochLog) -> None:
        pass

    def on_fit_end(self, state: FitState) -> None:
        pass


class EpochProgress(Callback):
    """One line per epoch on a terminal; in a log (no terminal), a timestamped line at most every
    ``log_every_s`` seconds and at the last epoch, the cadence of a sweep's progress line. For
    what trains in the foreground (``export``, ``train``); a sweep's coordinator reports its trials."""

    def __init__(self, what: str, epochs: int, log_every_s: float = 30.0) -> None:
        import sys

        self.what, self.epochs = what, epochs
        self.terminal = sys.stderr.isatty()
        self.every = 0.0 if self.terminal else log_every_s
        self.last = float("-inf")

    def on_epoch_end(self, state: FitState, epoch: EpochLog) -> None:
        import sys
        import time

        now = time.monotonic()
        if now - self.last < self.every and epoch.epoch < self.epochs and not state.should_stop:
            return
        self.last = now
        line = (f"{self.what}: epoch {epoch.epoch}/{self.epochs}, val_f1 {epoch.val_f1:.4f} (best {state.best_f1:.4f} "
                f"at epoch {state.best_epoch}), train_loss {epoch.train_loss:.4f}, {epoch.seconds:.1f} s/epoch"
                + (" (cached: trained earlier with the same settings)" if state.replayed else ""))
        print(line if self.terminal else f"{time.strftime('%H:%M:%S')} {line}", file=sys.stderr, flush=True)
