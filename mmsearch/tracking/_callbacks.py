"""Engine callback that streams per-epoch metrics into an MLflow run."""

from __future__ import annotations

from mmsearch.tracking._tracker import Tracker
from mmsearch.training._engine import Callback, EpochLog, FitState


class MlflowEpochLogger(Callback):
    def __init__(self, tracker: Tracker, run_id: str, prefix: str = "") -> None:
        self.tracker, self.run_id, self.prefix = tracker, run_id, prefix

    def on_epoch_end(self, state: FitState, epoch: EpochLog) -> None:
        self.tracker.log_metrics(self.run_id, {f"{self.prefix}{k}": v for k, v in epoch.metrics().items()}, step=epoch.epoch)
