"""A sweep's study as its coordinators keep it (lock, trials, coordinator records, repairs of
what dead processes left) and ``sweep status``, which needs no torch."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from mmsearch._interrupts import deferred
from mmsearch._processes import judge
from mmsearch.search._context import SweepContext, SweepRequest, open_study, resolve
from mmsearch.search._summary import SweepSummary, summarize
from mmsearch.stats import Looks
from mmsearch.tracking import Tracker, end_abandoned_exports

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

log = logging.getLogger("mmsearch.sweep")
PARENT_ATTR = "mlflow_parent_run_id"
SEQUENTIAL_ATTR = "sequential"  # {"repeats": first round, "max_repeats": cap} of a study run until decided
# How to end a run left RUNNING by a finished trial, by the trial's state (or a failed one's error).
STRAY_RUN_ENDS = {"COMPLETE": ("FINISHED", "finished"), "PRUNED": ("KILLED", "pruned"),
                  "interrupted": ("KILLED", "interrupted")}
COORDINATOR_PREFIX = "coordinator:"
MAX_RETRIES = 3  # times one cell is re-run after its worker died, per coordinator


def claimable(ctx: SweepContext, study: optuna.Study) -> int:
    """How many trials a worker could claim now: WAITING cells (ablation), or what is left of the
    trial budget (search: finished, running and waiting trials count, trials that died don't)."""
    import optuna

    waiting = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
    if ctx.spec.mode == "ablation":
        return waiting
    budget = ctx.request.trials or ctx.spec.n_trials
    used = sum(1 for t in study.get_trials(deepcopy=False)
               if not (t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get("retryable")))
    return max(0, budget - used) + waiting


class SweepStudy:
    """A sweep's study as coordinators keep it: its lock, its trials, the coordinators' records,
    and repairs of what dead processes left behind."""

    def __init__(self, ctx: SweepContext, study: optuna.Study, tracker: Tracker) -> None:
        self.ctx, self.request, self.study, self.tracker, self.storage = ctx, ctx.request, study, tracker, ctx.storage
        self.study_id = self.storage.optuna.get_study_id_from_name(ctx.study_name)
        self.retries: dict[Any, int] = {}

    @contextmanager
    def lock(self) -> Iterator[None]:
        """The study lock; an interrupt waits for the end of what is done under it."""
        with self.storage.lock(self.ctx.study_name), deferred():
            yield

    def trials(self, *states: str) -> list[Any]:
        import optuna

        wanted = tuple(getattr(optuna.trial.TrialState, s) for s in states) or None
        return self.study.get_trials(deepcopy=False, states=wanted)

    def claimable(self) -> int:
        return claimable(self.ctx, self.study)

    def live_coordinators(self, exclude: str | None = None) -> list[str]:
        now, out = time.time(), []
        for key, record in self.study.user_attrs.items():
            if not key.startswith(COORDINATOR_PREFIX) or key == COORDINATOR_PREFIX + (exclude or ""):
                continue
            if isinstance(record, dict) and record.get("state") == "running" and \
                    judge(record.get("owner"), record.get("beat"), now, self.request.grace_s) is None:
                out.append(key[len(COORDINATOR_PREFIX):])
        return out

    def close_stale_parent(self, parent: str, exclude: str | None = None) -> bool:
        """End a parent run left RUNNING by coordinators that all died (KILLED, with the reason)."""
        if self.tracker.status(parent) != "RUNNING" or self.live_coordinators(exclude=exclude):
            return False
        self.tracker.end(parent, "KILLED", "stale", "its coordinator stopped without ending the run")
        return True

    def fail(self, t: FrozenTrial, reason: str, retryable: bool, run_state: str) -> bool:
        """Fail a RUNNING trial someone else may hold and end its MLflow run KILLED; False when it
        finished meanwhile."""
        import optuna
        from optuna.exceptions import UpdateFinishedTrialError

        storage = self.storage.optuna
        trial_id = storage.get_trial_id_from_study_id_trial_number(self.study_id, t.number)
        try:
            storage.set_trial_user_attr(trial_id, "error", reason)
            if retryable:
                storage.set_trial_user_attr(trial_id, "retryable", True)
            storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
        except UpdateFinishedTrialError:
            return False
        run_id = t.user_attrs.get("mlflow_run_id")
        if run_id and self.tracker.status(run_id) == "RUNNING":
            self.tracker.end(run_id, "KILLED", run_state, reason)
        return True

    def repair(self, enqueue: bool = True) -> int:
        """Fail every RUNNING trial whose process is dead (see ``judge``) or that was never fully
        claimed (no owner), end its MLflow run, and
        put its cell (or a search trial's parameters) back in the queue. Call under the lock."""
        now, repaired = time.time(), 0
        for t in self.trials("RUNNING"):
            beat = t.user_attrs.get("heartbeat", t.datetime_start.timestamp() if t.datetime_start else now)
            owner = t.user_attrs.get("owner")
            # Claims are made under the lock we hold: a trial that got no owner never will.
            reason = judge(owner, beat, now, self.request.grace_s) if owner else "its claim was cut short"
            if reason is None or not self.fail(t, f"worker died: {reason}", True, "worker died"):
                continue
            repaired += 1
            log.warning("trial %d failed: worker died (%s)", t.number, reason)
            if enqueue:
                self._retry(t)
        return repaired

    def end_stray_runs(self, parent: str) -> int:
        """End the MLflow runs of finished trials whose process died before it ended them (one
        cut off in its clean-up, after it had told Optuna). ``repair`` ends the runs of the
        RUNNING trials it fails; these it never sees."""
        trials = {str(t.number): t for t in self.trials()}
        now, ended = time.time(), 0
        for run in self.tracker.running_children(parent):
            t = trials.get(run.data.tags.get("trial", ""))
            if t is None or t.state.name in ("RUNNING", "WAITING"):
                continue
            why = judge(t.user_attrs.get("owner"), t.user_attrs.get("heartbeat"), now, self.request.grace_s)
            if why is None:
                continue  # its process is ending the run now
            status, state = STRAY_RUN_ENDS.get(t.user_attrs.get("error") if t.state.name == "FAIL" else t.state.name,
                                               ("KILLED", "worker died"))
            self.tracker.end(run.info.run_id, status, state, f"trial {t.number} was {t.state.name}; {why}")
            log.warning("ended MLflow run %s of trial %d: its process died (%s)", run.info.run_id, t.number, why)
            ended += 1
        return ended

    def _retry(self, t: FrozenTrial) -> None:
        key = cell_key(self.ctx, t)
        self.retries[key] = self.retries.get(key, 0) + 1
        if self.retries[key] > MAX_RETRIES:
            log.warning("trial %d's cell %s died %d times in this run; not retried again", t.number, key, MAX_RETRIES)
            return
        requeue(self.ctx, self.study, t)


def cells_of(trials: list[Any]) -> set[tuple[Any, Any]]:
    return {(t.params.get("level", t.user_attrs.get("level")), t.user_attrs.get("repeat")) for t in trials}


def looks_of(attrs: dict[str, Any]) -> Looks:
    """The analyses a study planned: one for fixed repeats; a study run until decided records its
    first round and cap (``SEQUENTIAL_ATTR``), and its error rate is held over every round."""
    plan = attrs.get(SEQUENTIAL_ATTR) or {}
    try:
        first, cap = int(plan["repeats"]), int(plan["max_repeats"])
    except (KeyError, TypeError, ValueError):
        return Looks()
    return Looks(max(1, cap - first + 1), first)


def cell_key(ctx: SweepContext, t: FrozenTrial) -> tuple[Any, ...]:
    """What a trial measures: its (level, repeat) cell in an ablation, its parameters in a search."""
    if ctx.spec.mode == "ablation":
        return next(iter(cells_of([t])))
    return tuple(sorted(t.params.items()))


def requeue(ctx: SweepContext, study: optuna.Study, t: FrozenTrial) -> None:
    """Put a failed trial's cell (or a search trial's parameters) back in the queue; an ablation
    cell only when no trial holds it already. Call under the study lock."""
    import optuna

    if ctx.spec.mode == "ablation":
        level, repeat = cell_key(ctx, t)
        held = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
        if (level, repeat) not in cells_of(study.get_trials(deepcopy=False, states=held)):
            study.enqueue_trial({"level": level}, user_attrs={"level": level, "repeat": repeat})
    elif t.params:
        study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number})


# -- status ------------------------------------------------------------------------------------
def sweep_status(request: SweepRequest, command: str) -> tuple[SweepSummary, dict[str, Any]]:
    """The study's summary, after repairing what dead processes left (their trials FAIL, their
    MLflow runs and a stale parent run ended). Also: parent run status, live coordinators, and a
    note when the study was found rather than named."""
    ran_with, study, storage, note = open_study(request, command)
    ctx = resolve(ran_with, storage)
    tracker = Tracker(request.tracking_uri, request.grace_s)
    keeper = SweepStudy(ctx, study, tracker)
    parent = study.user_attrs.get(PARENT_ATTR)
    with keeper.lock():
        repaired = keeper.repair(enqueue=False)
        strays = keeper.end_stray_runs(parent) if parent else 0
        closed = keeper.close_stale_parent(parent) if parent else False
        live = keeper.live_coordinators()
    exports = end_abandoned_exports(tracker)
    summary = summarize(ctx.spec, ctx.study_name, keeper.trials(), looks=looks_of(study.user_attrs))
    summary.parent_run_id = parent or ""
    info = {"note": note, "repaired": repaired, "stray_runs": strays, "closed_parent": closed, "abandoned_exports": exports, "coordinators_alive": len(live),
            "parent_status": tracker.status(parent) if parent else None, "storage": str(ctx.storage)}
    return summary, info
