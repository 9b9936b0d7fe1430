"""One trial: the thin Optuna objective (suggest -> config -> engine), recorded in Optuna and
in its own MLflow child run, however it ends."""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmsearch._disk import on_disk_full, reserve_used
from mmsearch._interrupts import Interrupted, deferred, stopping
from mmsearch._processes import ProcessIdentity
from mmsearch.config import (
    ExperimentConfig,
    dump_yaml,
    flatten,
    to_dict,
    with_overrides,
)
from mmsearch.errors import StudyLockStuck, TrackingStoreLocked, first_line
from mmsearch.search._context import SweepContext
from mmsearch.search._liveness import Heartbeat
from mmsearch.search._study import cell_key, requeue
from mmsearch.tracking import DEFAULT_END_STATES, MlflowEpochLogger, Tracker
from mmsearch.training import Callback, EpochLog, FitState, history_columns, most_frequent_label_f1

if TYPE_CHECKING:
    import optuna

    from mmsearch.data import Dataset
    from mmsearch.pipeline import Workspace

log = logging.getLogger("mmsearch.sweep")


class TrialResourceError(Exception):
    """A trial that ran out of memory or hit a CUDA error, with a message that says where and
    which setting to lower. ``cuda``: this process's CUDA context is no longer trusted."""

    def __init__(self, message: str, kind: str, cuda: bool) -> None:
        super().__init__(message)
        self.kind, self.cuda = kind, cuda


def _placed_error(exc: Exception, ws: Workspace, stage: str) -> Exception:
    """``exc`` as a :class:`TrialResourceError` when it is an OOM or a CUDA error, else itself."""
    from mmsearch.runtime import is_cuda_error, is_out_of_memory

    runtime, cfg = ws.runtime, ws.cfg
    oom, cuda = is_out_of_memory(exc), runtime.is_cuda and is_cuda_error(exc)
    if not (oom or cuda):
        return exc
    first = first_line(exc)
    if not oom:
        return TrialResourceError(f"CUDA error on {runtime.describe()} training the {stage} stage: "
                                  f"{first}", "cuda error", True)
    batch = getattr(cfg, stage).optim.batch_size
    key = f"{stage}.optim.batch_size"
    hint = runtime.out_of_memory_advice(f"lower {key} (e.g. --set {key}={max(1, batch // 2)})")
    return TrialResourceError(f"out of memory on {runtime.memory_report()} training the {stage} stage with "
                              f"{key}={batch} ({runtime.precision}): {hint}. {first}",
                              "out of memory", runtime.is_cuda)


def retry_once(setup: TrialSetup, trial: optuna.Trial, kind: str) -> bool:
    """Enqueue a failed trial's cell again unless this run already saw it fail the same way:
    an OOM next to a busy neighbour may pass on a second try; the same OOM twice is the
    configuration's, and stays FAIL with its reason (never an endless loop)."""
    ctx = setup.ctx
    with ctx.storage.lock(ctx.study_name), deferred():
        same = [t for t in setup.study.get_trials(deepcopy=False)
                if t.state.name == "FAIL" and t.user_attrs.get("failure") == kind
                and t.user_attrs.get("coordinator") == setup.coordinator and cell_key(ctx, t) == cell_key(ctx, trial)]
        if len(same) >= 2:
            log.warning("trial %d: its cell failed the same way twice in this run (%s); not retried", trial.number, kind)
            return False
        requeue(ctx, setup.study, trial)
    return True


class TrialRevoked(Exception):
    """Another coordinator judged this trial dead (it was silent longer than the grace) and
    failed it; its cell may already be running elsewhere, so this result is discarded."""


class TrialOutcome(enum.Enum):
    """How a trial a worker ran ended; ``_worker.work`` maps it, once, to what the worker does."""

    COMPLETE = "complete"
    PRUNED = "pruned"
    FAIL = "fail"  # the configuration's failure: recorded, the sweep goes on
    REVOKED = "revoked"  # failed by another coordinator meanwhile (this process was judged dead)
    CUDA_ERROR = "cuda error"  # failed; this process may be poisoned: the worker leaves for a fresh one
    DISK_FULL = "disk full"  # failed, not by its own fault: the sweep stops
    STORE_LOCKED = "tracking store locked"  # failed, not by its own fault: the sweep stops (exit 3)


@dataclass
class TrialSetup:
    """What every trial of one worker shares."""

    ctx: SweepContext
    base: ExperimentConfig  # the sweep's base config with this worker's share of threads
    study: optuna.Study
    tracker: Tracker
    experiment_id: str
    parent_run_id: str
    heartbeat: Heartbeat
    coordinator: str  # token of the coordinator whose run this is


class _TrialReporter(Callback):
    """Reports the sweep's metric each epoch (curves, pruning); stops a revoked trial."""

    def __init__(self, trial: optuna.Trial, metric: str, prune: bool, revoked: threading.Event) -> None:
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


def claim_owner(setup: TrialSetup, trial: optuna.Trial) -> int:
    """Mark a just-claimed trial as ours (coordinator, owner, first heartbeat): the storage's trial id.
    The owner is written last: a RUNNING trial without one was never fully claimed."""
    trial.set_user_attr("coordinator", setup.coordinator)
    trial.set_user_attr("owner", ProcessIdentity.current().attr())
    trial.set_user_attr("heartbeat", time.time())
    storage = setup.ctx.storage.optuna
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(setup.ctx.study_name),
                                                           trial.number)


def run_trial(setup: TrialSetup, trial: optuna.Trial, trial_id: int) -> TrialOutcome:
    """Run one claimed trial; returns how it ended.
    KeyboardInterrupt fails the trial as "interrupted", ends its run KILLED and propagates."""
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError

    ctx, spec, study, tracker = setup.ctx, setup.ctx.spec, setup.study, setup.tracker
    revoked = setup.heartbeat.watch(trial_id)
    end_states = {**DEFAULT_END_STATES, optuna.TrialPruned: ("KILLED", "pruned"), TrialRevoked: ("KILLED", "superseded"),
                  UpdateFinishedTrialError: ("KILLED", "superseded"),
                  StudyLockStuck: ("KILLED", "stopped: the study's lock is held"),
                  TrackingStoreLocked: ("KILLED", "stopped: the MLflow store is locked")}

    def tell(*args: Any, **kwargs: Any) -> None:
        setup.heartbeat.unwatch(trial_id)
        try:
            study.tell(trial, *args, **kwargs)
        except (UpdateFinishedTrialError, ValueError) as exc:  # finished by someone else meanwhile
            raise TrialRevoked(str(exc)) from None

    try:
        overrides, level, repeat = spec.suggest(trial)
        # The level first: the MLflow runs table cuts names short, and the level is what a row is about.
        name = (f"{(spec.factor or 'level').rsplit('.', 1)[-1]}={level} · r{repeat} · trial {trial.number}"
                if level is not None else f"trial {trial.number}")
        tags = {"trial": str(trial.number), "study": ctx.study_name, "sweep": spec.name}
        if level is not None:
            tags |= {"level": level, "repeat": str(repeat), spec.factor or "level": level}
        with contextlib.ExitStack() as ending, tracker.run(
                setup.experiment_id, name, parent_run_id=setup.parent_run_id, tags=tags, end_states=end_states,
                on_open=lambda run_id: trial.set_user_attr("mlflow_run_id", run_id)) as run_id:
            cfg = with_overrides(setup.base, overrides, where=f"{spec.path} trial {trial.number}")
            tracker.log_params(run_id, flatten(to_dict(cfg)))
            log_dataset(tracker, run_id, ctx.dataset)
            tracker.log_text(run_id, dump_yaml(cfg), "config.yaml")
            callbacks = [MlflowEpochLogger(tracker, run_id, prefix="epoch/", headline=spec.metric),
                         _TrialReporter(trial, spec.metric, spec.mode == "search", revoked)]
            from mmsearch.pipeline import Workspace, run_stage  # torch: only a process that trains loads it

            ws = Workspace(cfg, ctx.dataset)
            ws.runtime.reset_peak_memory()
            try:
                result = run_stage(ws, spec.stage, callbacks)
            except optuna.TrialPruned:
                tell(state=optuna.trial.TrialState.PRUNED)
                raise
            except Exception as exc:
                raise _placed_error(exc, ws, spec.stage) from exc
            # What this trial's bookkeeping cost inside the engine (our callbacks, not the engine's own).
            bookkeeping = sum(v for k, v in result.fit.callback_seconds.items() if k not in ("EarlyStopping", "RestoreBest"))
            peak = peak_rss_mb()
            gpu_peak = ws.runtime.peak_memory_mb()
            # What learning nothing but the label frequencies scores here (samples-F1): a trial no better is flagged.
            baseline = (most_frequent_label_f1(ws.targets[ws.split.val], ws.targets[ws.split.train])
                        if spec.metric in ("val_f1", "val_f1_tuned") else None)
            # Sections in the MLflow UI, in this order: "curve/" (the sweep's metric per epoch, what a run's
            # page opens on), "epoch/" (every curve), "final/" (the model the trial ended with), "trial/" (its cost).
            tracker.log_metrics(run_id, {**{f"final/{k}": v for k, v in result.metrics.items()},
                                         "trial/params": result.params, "trial/size_mb": result.size_mb,
                                         "trial/fit_seconds": result.fit.seconds, "trial/callback_seconds": bookkeeping,
                                         "trial/worker_peak_rss_mb": peak, "trial/gpu_peak_mb": gpu_peak})
            finals = {f"final_{k}": v for k, v in result.metrics.items()}
            history = {k: [round(v, 6) for v in values] for k, values in history_columns(result.fit.history).items()
                       if k not in ("epoch", "seconds")}
            attrs = {"params": result.params, "size_mb": result.size_mb, "fit_seconds": result.fit.seconds,
                     "worker_peak_rss_mb": peak, "worker_pid": os.getpid(), "gpu_peak_mb": gpu_peak,
                     "device": ws.runtime.describe(), "precision": ws.runtime.precision,
                     "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
                     "callback_seconds": bookkeeping, "history": history, "baseline_f1": baseline, **finals,
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
        return TrialOutcome.COMPLETE
    except optuna.TrialPruned:
        return TrialOutcome.PRUNED
    except (TrialRevoked, UpdateFinishedTrialError) as exc:  # writing to a trial someone else finished
        log.warning("trial %d: result discarded: %s", trial.number, exc)
        return TrialOutcome.REVOKED
    except TrialResourceError as exc:
        # Out of memory, or a CUDA error: not the configuration's fault alone, so the cell gets
        # one more try in this run, in a fresh process where CUDA is concerned.
        fail_claimed(setup, trial, str(exc), failure=exc.kind)
        log.warning("trial %d failed: %s", trial.number, exc)
        retry_once(setup, trial, exc.kind)
        return TrialOutcome.CUDA_ERROR if exc.cuda else TrialOutcome.FAIL
    except StudyLockStuck:  # nothing can be written, its failure included: the worker stops
        raise
    except TrackingStoreLocked as exc:  # not this configuration's fault: the sweep stops, the cell reruns later
        fail_claimed(setup, trial, f"tracking store locked: {first_line(exc)}", failure="tracking store locked")
        log.error("trial %d stopped: %s", trial.number, exc)
        return TrialOutcome.STORE_LOCKED
    except Exception as exc:
        if stopping():  # a Ctrl-C that a library turned into its own error: still this process's stop
            fail_claimed(setup, trial, *interrupt_reason())
            raise Interrupted from exc
        if on_disk_full(exc):  # not this configuration's fault: the sweep stops, the cell reruns later
            fail_claimed(setup, trial, f"disk full: {first_line(exc)}", failure="disk full")
            log.error("trial %d failed: the disk is full (%s)", trial.number, first_line(exc))
            return TrialOutcome.DISK_FULL
        # A failed trial is recorded with its reason; the sweep goes on.
        message = f"{type(exc).__name__}: {exc}"
        fail_claimed(setup, trial, message)
        log.warning("trial %d failed: %s", trial.number, message)
        log.debug("%s", traceback.format_exc())
        return TrialOutcome.FAIL
    except BaseException:
        fail_claimed(setup, trial, *interrupt_reason())
        raise
    finally:
        setup.heartbeat.unwatch(trial_id)


def log_dataset(tracker: Tracker, run_id: str, dataset: Dataset) -> None:
    """The run's dataset in MLflow's Dataset column: the data folder, its content digest, its size."""
    tracker.log_dataset(run_id, dataset.root.name, dataset.fingerprint, str(dataset.root),
                        {"train_rows": dataset.n_train, "test_rows": dataset.n_test, "images": dataset.has_images})


def interrupt_reason() -> tuple[str, str | None]:
    """Why this process was stopped (the error and the kind of failure of the trial it held): a
    sweep that meets a full disk stops every process of it with SIGINT, as Ctrl-C does; the
    freed reserve tells the two apart, whichever process met the disk first."""
    if reserve_used():
        return "disk full: the sweep stopped when one of its processes met a full disk", "disk full"
    return "interrupted", None


def peak_rss_mb() -> float:
    """The largest resident memory this process has had so far (VmHWM; 0 where /proc is absent)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def fail_claimed(setup: TrialSetup, trial: optuna.Trial, reason: str, failure: str | None = None) -> None:
    """Fail a trial this process holds, with its reason (and the kind of failure, for the
    retry rule); a no-op when someone else finished it."""
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError

    try:
        if failure:
            trial.set_user_attr("failure", failure)
        trial.set_user_attr("error", reason[:4000])
        setup.study.tell(trial, state=optuna.trial.TrialState.FAIL)
    except (UpdateFinishedTrialError, ValueError):
        pass  # already finished by whoever judged it dead
