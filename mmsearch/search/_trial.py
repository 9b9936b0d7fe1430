"""One trial: the thin Optuna objective (suggest -> config -> engine), recorded in Optuna and
in its own MLflow child run, however it ends."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmsearch._interrupts import deferred
from mmsearch.config import (
    ExperimentConfig,
    dump_yaml,
    flatten,
    to_dict,
    with_overrides,
)
from mmsearch.search._context import SweepContext
from mmsearch.search._liveness import Heartbeat, ProcessIdentity
from mmsearch.tracking import DEFAULT_END_STATES, MlflowEpochLogger, Tracker
from mmsearch.training import Callback, EpochLog, FitState, history_columns

log = logging.getLogger("mmsearch.sweep")


class TrialRevoked(Exception):
    """Another coordinator judged this trial dead (it was silent longer than the grace) and
    failed it; its cell may already be running elsewhere, so this result is discarded."""


@dataclass
class TrialSetup:
    """What every trial of one worker shares."""

    ctx: SweepContext
    base: ExperimentConfig  # the sweep's base config with this worker's share of threads
    study: Any
    tracker: Tracker
    experiment_id: str
    parent_run_id: str
    heartbeat: Heartbeat
    coordinator: str  # token of the coordinator whose run this is


class _TrialReporter(Callback):
    """Reports the sweep's metric each epoch (curves, pruning); stops a revoked trial."""

    def __init__(self, trial: Any, metric: str, prune: bool, revoked: threading.Event) -> None:
        self.trial, self.metric, self.prune, self.revoked = trial, metric, prune, revoked

    def on_epoch_end(self, state: FitState, epoch: EpochLog) -> None:
        import optuna

        if self.revoked.is_set():
            raise TrialRevoked(f"trial {self.trial.number} was failed by another coordinator")
        value = getattr(epoch, self.metric, None)
        if value is None:  # a final-only metric (val_f1_tuned) has no per-epoch value
            return
        with deferred():
            self.trial.report(float(value), epoch.epoch)
            prune = self.prune and self.trial.should_prune()
        if prune:
            raise optuna.TrialPruned(f"pruned at epoch {epoch.epoch} ({self.metric} {value:.4f})")


def claim_owner(setup: TrialSetup, trial: Any) -> int:
    """Mark a just-claimed trial as ours (coordinator, owner, first heartbeat): the storage's trial id.
    The owner is written last: a RUNNING trial without one was never fully claimed."""
    trial.set_user_attr("coordinator", setup.coordinator)
    trial.set_user_attr("owner", ProcessIdentity.current().attr())
    trial.set_user_attr("heartbeat", time.time())
    storage = setup.ctx.storage.optuna
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(setup.ctx.study_name),
                                                           trial.number)


def run_trial(setup: TrialSetup, trial: Any, trial_id: int) -> str:
    """Run one claimed trial; returns its final state (COMPLETE, PRUNED, FAIL or REVOKED).
    KeyboardInterrupt fails the trial as "interrupted", ends its run KILLED and propagates."""
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError

    ctx, spec, study, tracker = setup.ctx, setup.ctx.spec, setup.study, setup.tracker
    revoked = setup.heartbeat.watch(trial_id)
    end_states = {**DEFAULT_END_STATES, optuna.TrialPruned: ("KILLED", "pruned"), TrialRevoked: ("KILLED", "superseded"),
                  UpdateFinishedTrialError: ("KILLED", "superseded")}

    def tell(*args: Any, **kwargs: Any) -> None:
        setup.heartbeat.unwatch(trial_id)
        try:
            study.tell(trial, *args, **kwargs)
        except (UpdateFinishedTrialError, ValueError) as exc:  # finished by someone else meanwhile
            raise TrialRevoked(str(exc)) from None

    try:
        overrides, level, repeat = spec.suggest(trial)
        name = f"trial-{trial.number}" + (f" {spec.factor}={level} r{repeat}" if level is not None else "")
        tags = {"trial": str(trial.number), "study": ctx.study_name, "sweep": spec.name}
        if level is not None:
            tags |= {"level": level, "repeat": str(repeat), spec.factor or "level": level}
        with contextlib.ExitStack() as ending, tracker.run(
                setup.experiment_id, name, parent_run_id=setup.parent_run_id, tags=tags, end_states=end_states,
                on_open=lambda run_id: trial.set_user_attr("mlflow_run_id", run_id)) as run_id:
            cfg = with_overrides(setup.base, overrides, where=f"{spec.path} trial {trial.number}")
            tracker.log_params(run_id, flatten(to_dict(cfg)))
            tracker.log_text(run_id, dump_yaml(cfg), "config.yaml")
            callbacks = [MlflowEpochLogger(tracker, run_id, prefix="epoch/"),
                         _TrialReporter(trial, spec.metric, spec.mode == "search", revoked)]
            from mmsearch.pipeline import Workspace, run_stage  # torch: only a process that trains loads it

            try:
                result = run_stage(Workspace(cfg, ctx.dataset), spec.stage, callbacks)
            except optuna.TrialPruned:
                tell(state=optuna.trial.TrialState.PRUNED)
                raise
            # What this trial's bookkeeping cost inside the engine (our callbacks, not the engine's own).
            bookkeeping = sum(v for k, v in result.fit.callback_seconds.items() if k not in ("EarlyStopping", "RestoreBest"))
            peak = peak_rss_mb()
            # Sections in the MLflow UI, in this order: "epoch/" (the curves, what a run's page opens on),
            # "final/" (the model the trial ended with), "trial/" (what the trial cost).
            tracker.log_metrics(run_id, {**{f"final/{k}": v for k, v in result.metrics.items()},
                                         "trial/params": result.params, "trial/size_mb": result.size_mb,
                                         "trial/fit_seconds": result.fit.seconds, "trial/callback_seconds": bookkeeping,
                                         "trial/worker_peak_rss_mb": peak})
            finals = {f"final_{k}": v for k, v in result.metrics.items()}
            history = {k: [round(v, 6) for v in values] for k, values in history_columns(result.fit.history).items()
                       if k not in ("epoch", "seconds")}
            attrs = {"params": result.params, "size_mb": result.size_mb, "fit_seconds": result.fit.seconds,
                     "worker_peak_rss_mb": peak, "worker_pid": os.getpid(),
                     "callback_seconds": bookkeeping, "history": history, **finals,
                     **{k: v for k, v in result.info.items() if isinstance(v, (int, float, str, bool))}}
            # From here until its run has ended, an interrupt waits: the trial and its run end as one.
            ending.enter_context(deferred())
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
            value = float(result.metrics[spec.metric])
            if revoked.is_set():
                raise TrialRevoked(f"trial {trial.number} was failed by another coordinator")
            tell(value)
        log.info("trial %d: %s = %.4f", trial.number, spec.metric, value)
        return "COMPLETE"
    except optuna.TrialPruned:
        return "PRUNED"
    except (TrialRevoked, UpdateFinishedTrialError) as exc:  # writing to a trial someone else finished
        log.warning("trial %d: result discarded: %s", trial.number, exc)
        return "REVOKED"
    except Exception as exc:
        # A failed trial is recorded with its reason; the sweep goes on.
        message = f"{type(exc).__name__}: {exc}"
        fail_claimed(setup, trial, message)
        log.warning("trial %d failed: %s", trial.number, message)
        log.debug("%s", traceback.format_exc())
        return "FAIL"
    except BaseException:
        fail_claimed(setup, trial, "interrupted")
        raise
    finally:
        setup.heartbeat.unwatch(trial_id)


def peak_rss_mb() -> float:
    """The largest resident memory this process has had so far (VmHWM; 0 where /proc is absent)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def fail_claimed(setup: TrialSetup, trial: Any, reason: str) -> None:
    """Fail a trial this process holds, with its reason; a no-op when someone else finished it."""
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError

    try:
        trial.set_user_attr("error", reason[:4000])
        setup.study.tell(trial, state=optuna.trial.TrialState.FAIL)
    except (UpdateFinishedTrialError, ValueError):
        pass  # already finished by whoever judged it dead
