"""The one training engine every stage uses.

Models define ``forward`` only. ``fit`` owns the loop: mini-batches, Adam with weight decay,
the schedule, gradient clipping, the weighted loss, evaluation each epoch and callbacks.
Stopping early, restoring the best weights, pruning and tracking are callbacks, so an ablation
never compares two copies of a loop that drifted apart. The engine knows its settings only by
the fields it reads (``epochs``, ``lr``, ...), not by the config classes above it.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import nn

from mmsearch.data import NUM_LABELS
from mmsearch.optim import LOSSES, SCHEDULERS, class_weight_vector
from mmsearch.runtime import Runtime
from mmsearch.training._history import Callback, EpochLog, FitState
from mmsearch.training._metrics import scores, validation_scores

if TYPE_CHECKING:
    from mmsearch.config import OptimConfig

log = logging.getLogger("mmsearch.engine")
Batch = tuple[tuple[torch.Tensor, ...], torch.Tensor]


class Batches(Protocol):
    def __iter__(self) -> Iterator[Batch]: ...
    def __len__(self) -> int: ...


class TensorBatches:
    """Mini-batches over in-memory tensors (features, token ids): no DataLoader overhead."""

    def __init__(self, inputs: Sequence[torch.Tensor], targets: torch.Tensor, batch_size: int,
                 shuffle: bool = False, seed: int = 0) -> None:
        self.inputs = tuple(inputs)
        self.targets = targets
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.targets) / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.targets)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield tuple(t[idx] for t in self.inputs), self.targets[idx]


class LoaderBatches:
    """Adapter from a DataLoader yielding (inputs..., target) tuples."""

    def __init__(self, loader: torch.utils.data.DataLoader) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        for *inputs, target in self.loader:
            yield tuple(inputs), target


class EarlyStopping(Callback):
    """Stop after ``patience`` epochs without a better validation F1. Stops only: which weights
    the model ends with is :class:`RestoreBest`'s job."""

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def on_epoch_end(self, state: FitState, epoch: EpochLog) -> None:
        if epoch.epoch - state.best_epoch >= self.patience:
            state.should_stop = True


class RestoreBest(Callback):
    """Keep a copy of the weights of the best validation epoch and load them when training ends
    (Lightning's ModelCheckpoint with restore, in memory)."""

    def __init__(self) -> None:
        self.best_state: dict[str, torch.Tensor] | None = None

    def on_epoch_end(self, state: FitState, epoch: EpochLog) -> None:
        if state.best_epoch == epoch.epoch:
            self.best_state = copy.deepcopy(state.model.state_dict())

    def on_fit_end(self, state: FitState) -> None:
        if self.best_state is not None:
            state.model.load_state_dict(self.best_state)


@dataclass
class FitResult:
    history: list[EpochLog]
    best_epoch: int
    restored: bool  # the model holds the best epoch's weights (else the last epoch's)
    metrics: dict[str, float]  # of the final model on the validation split
    thresholds: np.ndarray
    val_probs: np.ndarray
    seconds: float
    # Wall time inside each callback class's hooks, included in ``seconds``: what bookkeeping
    # (logging, pruning reports) costs a trial.
    callback_seconds: dict[str, float] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _cpu_runtime() -> Runtime:
    return Runtime(torch.device("cpu"), "fp32")


@torch.inference_mode()
def predict(model: nn.Module, batches: Batches, runtime: Runtime | None = None, loss_fn: Any = None
            ) -> tuple[np.ndarray, float]:
    """Sigmoid probabilities for every row, and the mean loss when ``loss_fn`` is given. Both
    stay on the device until the last batch: one copy to the host, not one per batch."""
    runtime = runtime or _cpu_runtime()
    model.eval()
    probs: list[torch.Tensor] = []
    total, count = torch.zeros((), device=runtime.device), 0
    for inputs, targets in batches:
        with runtime.autocast():
            logits = model(*(runtime.to_device(t) for t in inputs))
        logits = logits.float()
        if loss_fn is not None:
            total += loss_fn(logits, runtime.to_device(targets)) * len(targets)
            count += len(targets)
        probs.append(torch.sigmoid(logits))
    if not probs:
        return np.zeros((0, NUM_LABELS), np.float32), 0.0
    return torch.cat(probs).cpu().numpy(), float(total) / max(count, 1)


def _samples_f1_sum(targets: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The sum over rows of samples-F1 at 0.5, every row given its most likely label when none
    passes (``binarize`` and ``samples_f1_rows`` on the device, so the step loop never waits)."""
    probs = torch.sigmoid(logits)
    pred = probs >= 0.5
    top = torch.zeros_like(pred).scatter_(1, probs.argmax(1, keepdim=True), True)
    pred = torch.where(pred.any(1, keepdim=True), pred, top)
    truth = targets.bool()
    tp = (truth & pred).sum(1)
    denom = truth.sum(1) + pred.sum(1)
    return torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.ones_like(tp, dtype=torch.float32)).sum()


def fit(model: nn.Module, train: Batches, val: Batches, cfg: OptimConfig, *, train_targets: np.ndarray,
        val_targets: np.ndarray, callbacks: Sequence[Callback] = (), runtime: Runtime | None = None,
        tune: bool = False) -> FitResult:
    """Train ``model`` for ``cfg.epochs`` epochs (fewer when ``cfg.early_stopping`` stops it) and
    return its history and the validation metrics of the model it ends with (the best epoch's
    weights when ``cfg.restore_best``, else the last epoch's). Where and in what precision it
    runs is ``runtime``'s (default: cpu, fp32)."""
    runtime = runtime or _cpu_runtime()
    device = runtime.device
    runtime.prepare(model)
    weights = class_weight_vector(cfg.class_weights, train_targets)
    loss_fn = LOSSES.get(cfg.loss)(weights.to(device) if weights is not None else None)
    step = runtime.stepper()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = SCHEDULERS.get(cfg.scheduler)(optimizer, cfg)
    restorer = RestoreBest() if cfg.restore_best else None
    own = [c for c in (EarlyStopping(cfg.early_stopping) if cfg.early_stopping else None, restorer) if c is not None]
    all_callbacks = [*own, *callbacks]
    state = FitState(model)
    started = time.perf_counter()
    hook_seconds: dict[str, float] = {}

    def run_hooks(hook: str, *args: Any) -> None:
        for cb in all_callbacks:
            t = time.perf_counter()
            getattr(cb, hook)(state, *args)
            name = type(cb).__name__
            hook_seconds[name] = hook_seconds.get(name, 0.0) + time.perf_counter() - t

    run_hooks("on_fit_start")
    try:
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            model.train()
            # Summed on the device and read once per epoch: no host sync inside the step loop.
            total = torch.zeros((), device=device)
            train_f1 = torch.zeros((), device=device)
            count = 0
            for inputs, targets in train:
                targets = runtime.to_device(targets)
                optimizer.zero_grad(set_to_none=True)
                with runtime.autocast():
                    logits = model(*(runtime.to_device(t) for t in inputs))
                logits = logits.float()  # the loss and the metric in float32, whatever the forward ran in
                loss = loss_fn(logits, targets)
                step(loss, optimizer, params, cfg.grad_clip)
                with torch.no_grad():
                    total += loss.detach() * len(targets)
                    train_f1 += _samples_f1_sum(targets, logits.detach())
                count += len(targets)
            probs, val_loss = predict(model, val, runtime, loss_fn)
            s = scores(val_targets, probs)
            entry = EpochLog(epoch, float(total) / max(count, 1), float(train_f1) / max(count, 1), val_loss, s["f1"],
                             s["f1_micro"],
                             s["f1_macro"], optimizer.param_groups[0]["lr"], time.perf_counter() - t0)
            state.history.append(entry)
            if entry.val_f1 > state.best_f1:
                state.best_f1, state.best_epoch = entry.val_f1, epoch
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(val_loss)
            elif scheduler is not None:
                scheduler.step()
            log.debug("epoch %d: %s", epoch, entry)
            run_hooks("on_epoch_end", entry)
            if state.should_stop:
                break
    finally:
        run_hooks("on_fit_end")
    probs, val_loss = predict(model, val, runtime, loss_fn)
    thresholds, found = validation_scores(val_targets, probs, tune)
    metrics = {"val_loss": val_loss, **found}
    restored = restorer is not None and restorer.best_state is not None
    if state.history:  # the training loss of the epoch whose weights the model holds
        kept = state.history[state.best_epoch - 1] if restored else state.history[-1]
        metrics["train_loss"], metrics["train_f1"] = kept.train_loss, kept.train_f1
    metrics["best_epoch"] = float(state.best_epoch)
    metrics["epochs_run"] = float(len(state.history))
    return FitResult(state.history, state.best_epoch, restored, metrics, thresholds, probs,
                     time.perf_counter() - started, hook_seconds)
