"""Losses and learning-rate schedules, by registered name."""

from mmsearch.optim._losses import LOSSES, class_weight_vector
from mmsearch.optim._schedules import SCHEDULERS

__all__ = ["LOSSES", "SCHEDULERS", "class_weight_vector"]
