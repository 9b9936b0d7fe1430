"""MLflow tracking with explicit run ids."""

from mmsearch.tracking._callbacks import MlflowEpochLogger
from mmsearch.tracking._train import ALL_STAGES, TrainOutcome, train_tracked
from mmsearch.tracking._tracker import PARENT_TAG, Tracker, default_tracking_uri, resolve_tracking_uri

__all__ = ["ALL_STAGES", "TrainOutcome", "train_tracked", "MlflowEpochLogger", "PARENT_TAG", "Tracker", "default_tracking_uri", "resolve_tracking_uri"]
