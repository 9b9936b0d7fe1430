"""Running a sweep: one Optuna study, one MLflow parent run, one child run per trial.

The coordinator validates everything, enqueues exactly the missing grid cells under a study
lock, prepares shared upstream caches, then runs workers (processes, not threads: the work is
CPU-bound). A worker claims WAITING trials through the storage's atomic state change, so every
cell x repeat runs once even with several workers; Optuna's GridSampler alone would duplicate.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mmsearch._cache import stable_hash
from mmsearch.charts import (
    TrialRecord, ablation_bars_data, ablation_figure, best_level, bubble_data, bubble_figure, curves_data,
    curves_figure, length_data, length_figure, oov_data, oov_figure, report_html,
)
from mmsearch.config import ExperimentConfig, dump_yaml, flatten, to_dict, with_overrides
from mmsearch.data import Dataset, demo_dataset
from mmsearch.search._spec import PRUNERS, SAMPLERS, SweepSpec, load_sweep
from mmsearch.search._storage import open_storage, study_lock
from mmsearch.pipeline import Workspace, run_stage, stage_features
from mmsearch.tracking import DEFAULT_END_STATES, MlflowEpochLogger, Tracker
from mmsearch.training import Callback, EpochLog, FitState

log = logging.getLogger("mmsearch.sweep")
HEARTBEAT_S = 20.0
STALE_AFTER_S = 120.0


@dataclass
class SweepRequest:
    """Everything ``mmsearch sweep run`` was asked; picklable, so workers rebuild from it."""

    sweep: str
    experiment: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    data: str | None = None
    storage: str | None = None
    tracking_uri: str | None = None
    workers: int = 1
    trials: int | None = None
    study_name: str | None = None
    progress: bool = True


@dataclass
class SweepContext:
    request: SweepRequest
    spec: SweepSpec
    base: ExperimentConfig
    dataset: Dataset
    study_name: str


@dataclass
class SweepSummary:
    study_name: str
    parent_run_id: str
    experiment_id: str
    counts: dict[str, int]
    best_value: float | None
    best_params: dict[str, Any]
    best_level: str | None
    seconds: float
    ran_trials: int


def resolve(request: SweepRequest) -> SweepContext:
    """Validate the sweep, its base experiment and the dataset; name the study."""
    overrides = dict(request.overrides)
    if request.data:
        overrides["data.path"] = str(Path(request.data).resolve())
    spec, base = load_sweep(request.sweep, request.experiment, overrides)
    root = Path(base.data.path) if base.data.path else demo_dataset()
    dataset = Dataset.open(root, require_images=True if spec.stage in ("image", "fusion") else None)
    base.data.path = str(root)
    identity = {"base": to_dict(base), "data": dataset.fingerprint, "stage": spec.stage, "mode": spec.mode,
                "metric": spec.metric}
    name = request.study_name or f"{spec.name}@{spec.experiment}-{stable_hash(identity, 6)}"
    return SweepContext(request, spec, base, dataset, name)


def _optuna() -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _load_study(ctx: SweepContext, storage: Any, seed_offset: int = 0) -> Any:
    optuna = _optuna()
    spec = ctx.spec
    return optuna.create_study(
        study_name=ctx.study_name, storage=storage, direction=spec.direction, load_if_exists=True,
        sampler=SAMPLERS.get(spec.sampler)(spec.seed + seed_offset), pruner=PRUNERS.get(spec.pruner)(),
    )


def _cell(trial: Any) -> tuple[str, int] | None:
    params = trial.params or trial.system_attrs.get("fixed_params", {})
    if "level" in params and "repeat" in params:
        return str(params["level"]), int(params["repeat"])
    return None


# -- coordinator ------------------------------------------------------------------------------------
def run_sweep(request: SweepRequest) -> SweepSummary:
    started = time.perf_counter()
    if request.workers > 1:
        warm_workers()
    ctx = resolve(request)
    optuna = _optuna()
    storage = open_storage(request.storage)
    study = _load_study(ctx, storage)
    tracker = Tracker(request.tracking_uri)
    experiment_id = tracker.experiment(f"sweep/{ctx.spec.name}")
    parent = study.user_attrs.get("mlflow_parent_run_id")
    if parent is None:
        parent = tracker.create_run(experiment_id, ctx.study_name, tags={
            "sweep": ctx.spec.name, "study": ctx.study_name, "mode": ctx.spec.mode, "paper": ctx.spec.paper,
            "experiment": ctx.spec.experiment})
        study.set_user_attr("mlflow_parent_run_id", parent)
        tracker.log_params(parent, {"sweep.stage": ctx.spec.stage, "sweep.mode": ctx.spec.mode,
                                    "sweep.factor": ctx.spec.factor, "sweep.size": ctx.spec.size,
                                    **{f"base.{k}": v for k, v in flatten(to_dict(ctx.base)).items()}})
        tracker.log_text(parent, dump_yaml(ctx.base), "base_config.yaml")
        tracker.log_text(parent, ctx.spec.path.read_text(), "sweep.yaml")
    ran_before = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                               optuna.trial.TrialState.PRUNED,
                                                               optuna.trial.TrialState.FAIL)))
    with tracker.run(experiment_id, ctx.study_name, run_id=parent):
        with study_lock(request.storage, ctx.study_name):
            _fail_stale(study, tracker, experiment_id, parent)
            if ctx.spec.mode == "ablation":
                _enqueue_missing(study, ctx.spec, request.trials)
        if ctx.spec.stage == "fusion":
            _prepare_upstream(ctx, tracker, parent)
        worker_ctx = WorkerArgs(request, ctx.study_name, experiment_id, parent)
        reporter = _Progress(ctx, storage) if request.progress else None
        if reporter:
            reporter.start()
        try:
            if request.workers <= 1:
                work(worker_ctx, 0, ctx, tracker)
            else:
                _spawn(worker_ctx, request.workers)
        finally:
            if reporter:
                reporter.stop()
        summary = _finish(ctx, study, tracker, experiment_id, parent, started)
    summary.ran_trials = summary.counts.get("COMPLETE", 0) + summary.counts.get("PRUNED", 0) + \
        summary.counts.get("FAIL", 0) - ran_before
    return summary


def _fail_stale(study: Any, tracker: Tracker, experiment_id: str, parent: str) -> None:
    """Trials left RUNNING by a killed worker (no heartbeat for a while) become FAIL, so their
    cells count as missing; their MLflow runs are ended too."""
    optuna = _optuna()
    now = time.time()
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        beat = t.user_attrs.get("heartbeat", t.datetime_start.timestamp() if t.datetime_start else 0)
        if now - beat > STALE_AFTER_S:
            study._storage.set_trial_user_attr(t._trial_id, "error", "worker stopped without ending the trial")
            study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
    for r in tracker.children(experiment_id, parent):
        if r.info.status == "RUNNING" and now * 1000 - r.info.start_time > STALE_AFTER_S * 1000:
            tracker.end(r.info.run_id, "KILLED", "stale")


def _enqueue_missing(study: Any, spec: SweepSpec, limit: int | None) -> int:
    """Enqueue each grid cell x repeat that has no COMPLETE, RUNNING or WAITING trial."""
    optuna = _optuna()
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    taken = {_cell(t) for t in study.get_trials(deepcopy=False, states=states)}
    missing = [c for c in spec.cells() if c not in taken]
    waiting = sum(1 for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
    if limit is not None:
        missing = missing[: max(0, limit - waiting)]
    for level, repeat in missing:
        study.enqueue_trial({"level": level, "repeat": repeat})
    log.info("enqueued %d missing cell(s) of %d", len(missing), len(spec.cells()))
    return len(missing)


def _prepare_upstream(ctx: SweepContext, tracker: Tracker, parent: str) -> None:
    """Train/extract the base configuration's image and text features once, before workers
    start, so no fusion trial trains an upstream network (and parallel workers don't race)."""
    ws = Workspace(ctx.base, ctx.dataset)
    t0 = time.perf_counter()
    for stage in ("image", "text"):
        feats, _ = stage_features(ws, stage)
        tracker.set_tags(parent, {f"upstream.{stage}.features": f"{feats.shape[0]}x{feats.shape[1]}"})
    tracker.log_metrics(parent, {"upstream_seconds": time.perf_counter() - t0})


# -- workers ------------------------------------------------------------------------------------------
@dataclass
class WorkerArgs:
    request: SweepRequest
    study_name: str
    experiment_id: str
    parent_run_id: str


# Workers fork from a server process that imported these once. Spawning each worker instead
# re-imports mlflow, its SQL store and torch: about 6 s per worker on 2 cores, longer than a demo
# trial. The server itself never runs torch code, so forking from it is safe (a fork of a process
# whose OpenMP pool is running is not).
_PRELOAD = ["mmsearch.search._runner", "mlflow.store.tracking.sqlalchemy_store",
            "mlflow.store.model_registry.sqlalchemy_store"]


def _worker_context() -> Any:
    mpctx = mp.get_context("forkserver")
    mpctx.set_forkserver_preload(_PRELOAD)
    return mpctx


def warm_workers() -> None:
    """Start the fork server now, so its imports overlap with the coordinator's own setup."""
    from multiprocessing import forkserver

    _worker_context()
    forkserver.ensure_running()


def _spawn(args: WorkerArgs, workers: int) -> None:
    mpctx = _worker_context()
    procs = [mpctx.Process(target=_worker_main, args=(args, i, dict(os.environ)), name=f"mmsearch-worker-{i}")
             for i in range(workers)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except BaseException:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(30)
        raise
    bad = [p.exitcode for p in procs if p.exitcode not in (0, None)]
    if bad:
        log.warning("%d worker(s) exited with codes %s", len(bad), bad)


def _worker_main(args: WorkerArgs, index: int, environ: dict[str, str]) -> None:
    # The fork server was started with the environment of its time; use the coordinator's now.
    os.environ.clear()
    os.environ.update(environ)

    def _terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # runs the finally blocks that end the trial and its MLflow run

    signal.signal(signal.SIGTERM, _terminate)
    logging.basicConfig(level=logging.WARNING, format=f"[worker {index}] %(levelname)s %(name)s: %(message)s")
    work(args, index)


def work(args: WorkerArgs, index: int, ctx: SweepContext | None = None, tracker: Tracker | None = None) -> int:
    """Claim and run trials until the study has none left for this sweep. Returns the count.
    A worker process resolves the sweep itself; the in-process worker reuses the coordinator's."""
    optuna = _optuna()
    request = replace(args.request, study_name=args.study_name)
    ctx = ctx or resolve(request)
    total_threads = ctx.base.run.threads or os.cpu_count() or 1
    threads = max(1, total_threads // max(1, request.workers))
    base = with_overrides(ctx.base, {"run.threads": threads})
    storage = open_storage(request.storage)
    study = _load_study(ctx, storage, seed_offset=index)
    tracker = tracker or Tracker(request.tracking_uri)
    done = 0
    while True:
        if ctx.spec.mode == "ablation":
            trial_id = _claim_waiting(study)
            if trial_id is None:
                break
            trial = optuna.trial.Trial(study, trial_id)
        else:
            with study_lock(request.storage, ctx.study_name):
                target = request.trials if request.trials is not None else ctx.spec.n_trials
                if len(study.get_trials(deepcopy=False)) >= target:
                    break
                trial = study.ask()
        execute_trial(ctx, base, study, trial, tracker, args.experiment_id, args.parent_run_id)
        done += 1
    return done


def _claim_waiting(study: Any) -> int | None:
    """Atomically move one WAITING trial to RUNNING; only one worker can win each."""
    optuna = _optuna()
    storage = study._storage
    for t in storage.get_all_trials(study._study_id, deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
        try:
            if storage.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.RUNNING):
                return t._trial_id
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


class _TrialReporter(Callback):
    """Reports the metric each epoch (curves, pruning) and beats the heartbeat."""

    def __init__(self, trial: Any, metric: str, prune: bool) -> None:
        self.trial, self.metric, self.prune = trial, metric, prune
        self.last_beat = 0.0

    def on_epoch_end(self, state: FitState, epoch: EpochLog) -> None:
        optuna = _optuna()
        value = getattr(epoch, self.metric, epoch.val_f1)
        self.trial.report(float(value), epoch.epoch)
        now = time.time()
        if now - self.last_beat > HEARTBEAT_S:
            self.trial.set_user_attr("heartbeat", now)
            self.last_beat = now
        if self.prune and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch.epoch} ({self.metric} {value:.4f})")


def execute_trial(ctx: SweepContext, base: ExperimentConfig, study: Any, trial: Any, tracker: Tracker,
                  experiment_id: str, parent_run_id: str) -> None:
    """The thin objective: suggest -> config -> engine; record it in Optuna and MLflow."""
    optuna = _optuna()
    spec = ctx.spec
    trial.set_user_attr("heartbeat", time.time())
    try:
        overrides, level, repeat = spec.suggest(trial, base.run.seed)
        name = f"trial-{trial.number}" + (f" {spec.factor}={level} r{repeat}" if level is not None else "")
        tags = {"trial": str(trial.number), "study": ctx.study_name, "sweep": spec.name}
        if level is not None:
            tags |= {"level": level, "repeat": str(repeat)}
        end_states = {**DEFAULT_END_STATES, optuna.TrialPruned: ("KILLED", "pruned")}
        with tracker.run(experiment_id, name, parent_run_id=parent_run_id, tags=tags, end_states=end_states) as run_id:
            trial.set_user_attr("mlflow_run_id", run_id)
            tracker.log_params(run_id, {**{f"override.{k}": v for k, v in overrides.items()}, "trial": trial.number})
            cfg = with_overrides(base, overrides, where=f"{spec.path} trial {trial.number}")
            tracker.log_params(run_id, flatten(to_dict(cfg)))
            tracker.log_text(run_id, dump_yaml(cfg), "config.yaml")
            ws = Workspace(cfg, ctx.dataset)
            callbacks = [MlflowEpochLogger(tracker, run_id), _TrialReporter(trial, spec.metric, spec.mode == "search")]
            result = run_stage(ws, spec.stage, callbacks)
            # "final_" = the restored best epoch; the bare names hold the per-epoch curves.
            # What this trial's bookkeeping cost inside the engine (our callbacks, not early stopping).
            bookkeeping = sum(v for k, v in result.fit.callback_seconds.items() if k != "EarlyStopping")
            tracker.log_metrics(run_id, {**{f"final_{k}": v for k, v in result.metrics.items()},
                                         "params": result.params, "size_mb": result.size_mb,
                                         "fit_seconds": result.fit.seconds, "callback_seconds": bookkeeping})
            trial.set_user_attr("params", result.params)
            trial.set_user_attr("size_mb", result.size_mb)
            trial.set_user_attr("fit_seconds", result.fit.seconds)
            trial.set_user_attr("callback_seconds", bookkeeping)
            for k, v in result.info.items():
                if isinstance(v, (int, float, str, bool)):
                    trial.set_user_attr(k, v)
            value = float(result.metrics[spec.metric])
        study.tell(trial, value)
        log.info("trial %d: %s = %.4f", trial.number, spec.metric, value)
    except optuna.TrialPruned:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    except Exception as exc:
        # A failed trial is recorded with its reason; the sweep goes on.
        message = f"{type(exc).__name__}: {exc}"
        trial.set_user_attr("error", message[:4000])
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        log.warning("trial %d failed: %s", trial.number, message)
        log.debug("%s", traceback.format_exc())
    except BaseException:
        trial.set_user_attr("error", "interrupted")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise


# -- progress, results, charts ---------------------------------------------------------------
class _Progress(threading.Thread):
    def __init__(self, ctx: SweepContext, storage: Any, every: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.ctx, self.storage, self.every = ctx, storage, every
        self._stop_event = threading.Event()
        self.total = ctx.spec.size if ctx.request.trials is None or ctx.spec.mode == "search" else None
        self.started = time.time()
        self.last = ""

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)
        self._print()

    def run(self) -> None:
        while not self._stop_event.wait(self.every):
            self._print()

    def _print(self) -> None:
        try:
            line = progress_line(self.ctx, self.storage, self.started, self.ctx.request.trials)
        except Exception:  # progress must never break a sweep
            return
        if line != self.last:
            print(line, file=sys.stderr, flush=True)
            self.last = line


def progress_line(ctx: SweepContext, storage: Any, started: float, limit: int | None) -> str:
    optuna = _optuna()
    study = optuna.load_study(study_name=ctx.study_name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    counts = {s: 0 for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    finished = counts["COMPLETE"] + counts["PRUNED"] + counts["FAIL"]
    total = ctx.spec.size if ctx.spec.mode == "ablation" else (limit or ctx.spec.n_trials)
    remaining = counts["RUNNING"] + counts["WAITING"] if ctx.spec.mode == "ablation" else max(0, total - finished)
    complete = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None]
    best = (max if ctx.spec.direction == "maximize" else min)((t.value for t in complete), default=None)
    durations = [t.duration.total_seconds() for t in trials if t.duration is not None]
    eta = np.mean(durations) * remaining / max(1, ctx.request.workers) if durations else None
    line = (f"[{ctx.spec.name}] {finished}/{total} done ({counts['COMPLETE']} complete, {counts['PRUNED']} pruned, "
            f"{counts['FAIL']} failed, {counts['RUNNING']} running)")
    if best is not None:
        line += f" best {ctx.spec.metric} {best:.4f}"
    if eta is not None and remaining:
        line += f" ETA {int(eta)}s"
    return line


def trial_records(study: Any) -> list[TrialRecord]:
    out = []
    for t in study.get_trials(deepcopy=False):
        cell = _cell(t)
        out.append(TrialRecord(
            number=t.number, state=t.state.name, value=t.value if t.state.name == "COMPLETE" else None,
            level=cell[0] if cell else None, repeat=cell[1] if cell else None, params=dict(t.params),
            curve={int(k): float(v) for k, v in t.intermediate_values.items()}, attrs=dict(t.user_attrs)))
    return out


def _finish(ctx: SweepContext, study: Any, tracker: Tracker, experiment_id: str, parent: str, started: float
            ) -> SweepSummary:
    records = trial_records(study)
    counts: dict[str, int] = {}
    for r in records:
        counts[r.state] = counts.get(r.state, 0) + 1
    figures, data = sweep_charts(ctx, study, records)
    tracker.log_html(parent, report_html(f"{ctx.spec.name}: {ctx.spec.description}", figures), "charts/report.html")
    tracker.log_text(parent, json.dumps(data, indent=1, default=str), "charts/data.json")
    best_value, best_params, best_lv = None, {}, None
    complete = [r for r in records if r.state == "COMPLETE"]
    if ctx.spec.mode == "ablation":
        bars = data.get("ablation") or ablation_bars_data(records, [lv.label for lv in ctx.spec.levels], ctx.spec.base)
        best_lv = best_level(bars, ctx.spec.direction == "maximize")
        if best_lv is not None:
            best_value = next(b["mean"] for b in bars if b["level"] == best_lv)
            best_params = dict(ctx.spec.level(best_lv).overrides)
    elif complete:
        best = study.best_trial
        best_value, best_params = best.value, dict(best.params)
    metrics = {f"trials_{k.lower()}": v for k, v in counts.items()}
    if best_value is not None:
        metrics[f"best_{ctx.spec.metric}"] = best_value
    tracker.log_metrics(parent, metrics)
    tracker.set_tags(parent, {"best_level": best_lv or "", "best_params": json.dumps(best_params, default=str)})
    return SweepSummary(ctx.study_name, parent, experiment_id, counts, best_value, best_params, best_lv,
                        time.perf_counter() - started, 0)


def sweep_charts(ctx: SweepContext, study: Any, records: list[TrialRecord]) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    """The paper's charts for this sweep, and the data behind each."""
    spec = ctx.spec
    figures: list[tuple[str, Any]] = []
    data: dict[str, Any] = {}
    wanted = set(spec.charts) | {"curves"} | ({"ablation"} if spec.mode == "ablation" else set())
    labels = [lv.label for lv in spec.levels]
    if "curves" in wanted:
        data["curves"] = curves_data(records)
        figures.append(("Validation F1 curves", curves_figure(data["curves"])))
    if "ablation" in wanted and spec.mode == "ablation":
        data["ablation"] = ablation_bars_data(records, labels, spec.base)
        figures.append(("Ablation", ablation_figure(data["ablation"], spec.factor or "level")))
    if "bubble" in wanted:
        data["bubble"] = bubble_data(records, labels)
        figures.append(("Size vs F1", bubble_figure(data["bubble"])))
    if "lengths" in wanted or "oov" in wanted:
        ws = Workspace(ctx.base, ctx.dataset)
        if "lengths" in wanted:
            data["lengths"] = length_data([len(t) for t in ws.tokens[: ctx.dataset.n_train]])
            figures.append(("Caption lengths", length_figure(data["lengths"])))
        if "oov" in wanted:
            from mmsearch.text import oov_report

            reports = []
            for lv in spec.levels:
                corpus = lv.overrides.get("text.corpus", ctx.base.text.corpus)
                dim = lv.overrides.get("text.embedding_dim", ctx.base.text.embedding_dim)
                reports.append(oov_report(corpus, ws.tokens, dim=dim, seed=ctx.base.run.seed,
                                          sentences_key=ws.sentences_key()))
            data["oov"] = oov_data(reports)
            figures.append(("Words without embeddings", oov_figure(data["oov"])))
    if spec.mode == "search" and sum(r.state == "COMPLETE" for r in records) >= 2:
        from optuna import visualization

        for chart, fn in (("importance", visualization.plot_param_importances),
                          ("parallel", visualization.plot_parallel_coordinate)):
            try:
                figures.append((chart, fn(study)))
            except Exception as exc:  # importance needs variance among trials
                log.info("chart %s skipped: %s", chart, exc)
    return figures, data


def sweep_status(request: SweepRequest) -> dict[str, Any]:
    ctx = resolve(request)
    optuna = _optuna()
    storage = open_storage(request.storage)
    try:
        study = optuna.load_study(study_name=ctx.study_name, storage=storage)
    except KeyError:
        return {"study": ctx.study_name, "exists": False}
    records = trial_records(study)
    counts: dict[str, int] = {}
    for r in records:
        counts[r.state] = counts.get(r.state, 0) + 1
    out: dict[str, Any] = {"study": ctx.study_name, "exists": True, "counts": counts, "size": ctx.spec.size}
    if ctx.spec.mode == "ablation":
        out["levels"] = ablation_bars_data(records, [lv.label for lv in ctx.spec.levels], ctx.spec.base)
        out["best_level"] = best_level(out["levels"], ctx.spec.direction == "maximize")
    complete = [r for r in records if r.state == "COMPLETE"]
    if complete:
        best = (max if ctx.spec.direction == "maximize" else min)(complete, key=lambda r: r.value or 0)
        out["best_trial"] = {"number": best.number, "value": best.value, "params": best.params}
    out["errors"] = {r.number: r.attrs.get("error") for r in records if r.state == "FAIL"}
    return out


