"""Engine callback that streams per-epoch metrics into an MLflow run."""

from __future__ import annotations

import time

from mmsearch.tracking._tracker import Tracker
from mmsearch.training._history import Callback, EpochLog, FitState


class MlflowEpochLogger(Callback):
    """Per-epoch metrics with their step. Epochs are written in batches at most every
    ``flush_every`` seconds (and when training ends, however it ends): one store write per
    epoch costs ~15 ms on SQLite, 5% of a 10 s trial of 40 short epochs."""

    def __init__(self, tracker: Tracker, run_id: str, prefix: str = "", flush_every: float = 2.0) -> None:
        self.tracker, self.run_id, self.prefix, self.flush_every = tracker, run_id, prefix, flush_every
        self.pending: list[tuple[int, dict[str, float]]] = []
        self.last_flush = time.monotonic()

    def on_epoch_end(self, state: FitState, epoch: EpochLog) -> None:
        self.pending.append((epoch.epoch, {f"{self.prefix}{k}": v for k, v in epoch.metrics().items()}))
        if time.monotonic() - self.last_flush >= self.flush_every:
            self.flush()

    def on_fit_end(self, state: FitState) -> None:
        self.flush()

    def flush(self) -> None:
        if self.pending:
            self.tracker.log_metric_steps(self.run_id, self.pending)
            self.pending = []
        self.last_flush = time.monotonic()
