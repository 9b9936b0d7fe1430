"""Learning-rate schedules by name: each builds a torch scheduler from an optimizer and the
stage's optim settings (the engine steps a plateau schedule on the validation loss)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmsearch._lazy import lazy_module
from mmsearch._registry import Registry

torch = lazy_module("torch")

SCHEDULERS: Registry[Callable[..., Any]] = Registry("scheduler")
SCHEDULERS.register("none", lambda opt, cfg: None)
# open: the paper's StepLR gives gamma 0.95 but no step size; one epoch is assumed.
SCHEDULERS.register("step", lambda opt, cfg: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=cfg.step_gamma))
SCHEDULERS.register("plateau", lambda opt, cfg: torch.optim.lr_scheduler.ReduceLROnPlateau(
    opt, mode="min", patience=cfg.plateau_patience, factor=cfg.plateau_factor))
