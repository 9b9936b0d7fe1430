"""The coordinator of one sweep in one run: one run completes every cell, whatever dies.

It opens the study and the sweep's MLflow parent run, enqueues exactly the missing cells under
the study lock, and offers the steps ``search.Runner`` (the one supervisor, of one sweep for
``sweep run`` or many for ``reproduce``) takes: start the upstream job that prepares shared
caches, start worker processes that claim trials (one worker is a process too: a trial that
crashes never takes the coordinator with it), reap them. It is each worker's parent, so a
worker's death is known at once: its trial is failed, its MLflow run ended and its cell
enqueued again. Several coordinators share one study and one parent run; the last to finish
logs the report and ends the parent run. ``stop_all`` fails the trials this run holds (Ctrl-C:
"interrupted") and ends every run it started KILLED.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmsearch._disk import (
    reserve_used,
)
from mmsearch._paths import cache_root
from mmsearch._processes import ProcessIdentity, process_state
from mmsearch.config import STAGE_INPUTS, dump_yaml, flatten, stage_needs_images, to_dict, with_overrides
from mmsearch.errors import ConfigError, MmsearchError, Problem, StudyLockStuck, TrackingStoreLocked, first_line
from mmsearch.runtime import visible_gpus
from mmsearch.search._context import (
    SweepContext,
    SweepRequest,
)
from mmsearch.search._journal import lock_holder
from mmsearch.search._liveness import Heartbeat
from mmsearch.search._storage import default_storage
from mmsearch.search._study import (
    COORDINATOR_PREFIX,
    MAX_RETRIES,
    PARENT_ATTR,
    SEQUENTIAL_ATTR,
    SweepStudy,
    cells_of,
    looks_of,
)
from mmsearch.search._summary import (
    SweepSummary,
    describe_sweep,
    log_report,
    power_statement,
    progress_line,
    summarize,
)
from mmsearch.search._trial import log_dataset
from mmsearch.search._worker import (
    WorkerArgs,
    WorkerExit,
    load_study,
    read_upstream_progress,
    spawn,
)
from mmsearch.stats import Looks, next_round
from mmsearch.tracking import DEFAULT_DIR, Tracker

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    import optuna

log = logging.getLogger("mmsearch.sweep")
SHUTDOWN_WAIT_S = 30.0  # how long a stopping coordinator waits for its workers' clean-up
INTERRUPT_AGAIN_S = 1.0  # when it interrupts again the workers that may have missed its first SIGINT
PROGRESS_LOG_EVERY_S = 30.0  # without a terminal: a progress line at least this far apart unless something changed
# What always moves in a progress line (the clock, the ETA, the upstream job's epoch): not news by itself.
_PROGRESS_CLOCK = re.compile(r"; ETA \d+s| \[\d+s\]$|: epoch \d+(/\d+)?(, about \d+s left at most)?")
WAIT_REPORT_S, WAIT_REPORT_EVERY_S = 30.0, 300.0  # when a coordinator with nothing to claim says what it waits for
OUTBOX_WAIT_S = 120.0  # how long the end of a sweep waits for a tracking server that is away


def local_places(request: SweepRequest) -> dict[str, Path]:
    """The folders on this machine a sweep writes, by what it keeps there (none are created here)."""
    places = {"cache": cache_root()}
    storage = request.storage or default_storage()
    if "://" not in storage:
        places["study journal"] = Path(storage).expanduser().absolute().parent
    uri = request.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri is None:
        places["MLflow store"] = Path.cwd() / DEFAULT_DIR
    elif uri.startswith("sqlite:///"):
        places["MLflow store"] = Path(uri[len("sqlite:///"):]).parent
    return places


def warn_oversubscribed(workers: int, cells: int) -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if workers > cores:
        log.warning("--workers %d on %d CPU core(s): workers share the cores (one thread each), so each trial runs "
                    "slower and the sweep is no faster than with --workers %d", workers, cores, cores)
    if workers > cells:
        log.warning("--workers %d for %d cell(s): at most %d work at once", workers, cells, cells)


def sweep_gpus(ctx: SweepContext) -> list[str]:
    """The GPUs this sweep's workers share: ``--gpus``, else every visible GPU, when the base
    config lets a worker choose (run.device auto or cuda); none for cpu, mps or a pinned cuda:N."""
    device, asked, wanted = ctx.base.run.device, ctx.request.gpus, ctx.request.gpu_list
    if device not in ("auto", "cuda"):
        if wanted:
            raise ConfigError("invalid sweep options", [Problem(
                "--gpus", f"{asked}: run.device is {device!r}, which places every worker itself; use run.device=auto "
                          f"or cuda to spread workers over GPUs")])
        return []
    return visible_gpus() if wanted is None else wanted


class Coordinator:
    def __init__(self, ctx: SweepContext, tracker: Tracker, gpus: list[str] | None = None,
                 places: dict[str, Path] | None = None) -> None:
        self.ctx = ctx
        self.places = places or {}
        self.request = ctx.request
        self.token = uuid.uuid4().hex[:12]
        self.tracker = tracker
        self.gpus = gpus or []
        self.procs: list[Any] = []
        self.placed: dict[int, str | None] = {}  # live worker pid -> its GPU
        self.spawned = 0  # worker processes this run started
        self.upstream_job: BaseProcess | None = None  # the upstream job started by ``start_upstream``, while it runs
        self.upstream_ready = not STAGE_INPUTS[ctx.spec.stage]
        self.looks = Looks()  # analyses the study plans (``_plan_looks``, when it is opened)
        self.max_repeats = ctx.spec.max_repeats if ctx.spec.until_decided else int(ctx.spec.repeats)
        self._stop_progress = threading.Event()
        self.study_unwritten = False  # a stop whose clean-up could not write the study (its lock is held)

    # -- the steps the runner takes (see ``_runner.Runner``) -------------------------------------
    @property
    def name(self) -> str:
        return self.ctx.spec.name

    def open(self, started: float) -> None:
        """Join the study: its attributes, this run's coordinator record and heartbeat, the MLflow
        experiment and parent run, repairs of what dead processes left, the missing cells enqueued."""
        ctx, spec = self.ctx, self.ctx.spec
        with ctx.storage.lock(ctx.study_name):
            study = load_study(ctx)
            with warnings.catch_warnings():  # experimental in Optuna 5; names the objective in optuna-dashboard
                warnings.simplefilter("ignore")
                study.set_metric_names([spec.metric])
            if "sweep" not in study.user_attrs:
                for key, value in self._study_attrs().items():
                    study.set_user_attr(key, value)
            self._plan_looks(study)
            self.keeper = keeper = SweepStudy(ctx, study, self.tracker)
            self.record = {"owner": ProcessIdentity.current().attr(), "state": "running", "started": time.time(),
                           "beat": time.time()}
            study.set_user_attr(COORDINATOR_PREFIX + self.token, dict(self.record))
            self.experiment_id = self.tracker.experiment(f"sweep/{spec.name}", describe_sweep(ctx))
            self.parent = self._open_parent()
            keeper.repair()
            keeper.end_stray_runs(self.parent)
            if spec.mode == "ablation":
                self._enqueue_missing()
                power = power_statement(spec, self.summary().levels, self.looks)
                log.log(logging.INFO if power.enough else logging.WARNING, "%s", power)
        self.heartbeat = Heartbeat(ctx.storage.optuna, keeper.study_id, self.request.heartbeat_s,
                                   COORDINATOR_PREFIX + self.token, self.record)
        self.heartbeat.start()
        if self.request.progress:
            threading.Thread(target=self._progress, args=(started,), daemon=True, name="mmsearch-progress").start()

    def _plan_looks(self, study: optuna.Study) -> None:
        """A run until decided records its plan once (first round, cap): every later analysis, by
        any command, holds the error rate over the same rounds. A later run may raise the cap."""
        spec = self.ctx.spec
        plan = study.user_attrs.get(SEQUENTIAL_ATTR)
        if spec.until_decided and spec.mode == "ablation":
            wanted = {"repeats": int(plan["repeats"]) if plan else int(spec.repeats),
                      "max_repeats": max(spec.max_repeats, int(plan["max_repeats"]) if plan else 0)}
            if wanted != plan:
                study.set_user_attr(SEQUENTIAL_ATTR, wanted)
            plan = wanted
        self.looks = looks_of({SEQUENTIAL_ATTR: plan} if plan else {})
        self.max_repeats = int(plan["max_repeats"]) if plan and spec.until_decided else int(spec.repeats)

    def top_up(self) -> int:
        """Repeats until decided: when a round is over (nothing waiting or running), one more
        repeat (a new seed, an ordinary cell) for each level whose comparison with the base is
        still inconclusive, and for the base (the new repeat pairs with it), up to the cap.
        Under the study lock, so coordinators sharing the study enqueue each cell once. Returns
        the cells enqueued now or already waiting."""
        spec, keeper = self.ctx.spec, self.keeper
        if not spec.until_decided or spec.mode != "ablation" or spec.base is None:
            return 0
        with keeper.lock():
            if keeper.trials("RUNNING"):
                return 0
            if waiting := keeper.claimable():
                return waiting
            s = self.summary()
            plan = next_round(s.levels, self.max_repeats)
            if plan is None:
                return 0
            next_repeat, levels = plan
            taken = cells_of(keeper.trials("COMPLETE", "RUNNING", "WAITING"))
            added = [lv for lv in levels if (lv, next_repeat) not in taken]
            for level in added:
                keeper.study.enqueue_trial({"level": level}, user_attrs={"level": level, "repeat": next_repeat})
            if added:
                log.warning("%s: %d comparison(s) undecided after %d repeat(s); repeat %d added to %s",
                            spec.name, len(levels) - 1, next_repeat, next_repeat, ", ".join(added))
            return len(added)

    def close(self) -> None:
        """Stop this run's progress line and coordinator heartbeat (the record says how it ended)."""
        self._stop_progress.set()
        self.heartbeat.stop()

    def summary(self) -> SweepSummary:
        s = summarize(self.ctx.spec, self.ctx.study_name, self.keeper.trials(), self.token, self.request.trials,
                      looks=self.looks)
        s.parent_run_id, s.experiment_id, s.data = self.parent, self.experiment_id, str(self.ctx.dataset.root)
        return s

    def _study_attrs(self) -> dict[str, Any]:
        """What selects this study on a command line (``sweep status`` lists it)."""
        overrides = {k: v for k, v in self.request.overrides.items() if k != "data.path"}
        data = str(Path(self.request.data).expanduser().resolve()) if self.request.data else None  # from any folder
        return {"sweep": self.ctx.spec.name, "experiment": self.ctx.spec.experiment, "data": data, "set": overrides,
                "metric": self.ctx.spec.metric}

    def _open_parent(self) -> str:
        """The study's MLflow parent run: created once; a run left RUNNING by a coordinator that
        died is ended KILLED first; then (re)opened RUNNING for this run."""
        spec, tracker, study = self.ctx.spec, self.tracker, self.keeper.study
        parent = study.user_attrs.get(PARENT_ATTR)
        if parent is None:
            parent = tracker.create_run(self.experiment_id, self.ctx.study_name, tags={
                "sweep": spec.name, "study": self.ctx.study_name, "mode": spec.mode, "paper": spec.paper,
                "experiment": spec.experiment})
            study.set_user_attr(PARENT_ATTR, parent)
            # The same parameter names as the child runs, plus what the sweep itself is.
            tracker.log_params(parent, {"sweep.stage": spec.stage, "sweep.mode": spec.mode, "sweep.factor": spec.factor,
                                        "sweep.size": spec.size, "sweep.metric": spec.metric,
                                        **flatten(to_dict(self.ctx.base))})
            log_dataset(tracker, parent, self.ctx.dataset)
            tracker.log_text(parent, dump_yaml(self.ctx.base), "base_config.yaml")
            tracker.log_text(parent, spec.path.read_text(), "sweep.yaml")
            return parent
        self.keeper.close_stale_parent(parent, exclude=self.token)
        if tracker.status(parent) != "RUNNING":
            tracker.reopen(parent)
        return parent

    def _progress(self, started: float) -> None:
        """On a terminal, a line every 2 s; in a log (no terminal), a timestamped line when
        something changes (a trial starts or ends) and otherwise at most every 30 s."""
        terminal = sys.stderr.isatty()
        quiet_s = 2.0 if terminal else PROGRESS_LOG_EVERY_S
        last, last_at = "", 0.0
        while not self._stop_progress.wait(2.0):
            try:
                line = progress_line(self.summary(), self.request.workers, started, time.time(), self.upstream_note())
            except Exception:  # progress must never break a sweep
                continue
            state = _PROGRESS_CLOCK.sub("", line)  # without the elapsed time and the ETA, which always move
            now = time.monotonic()
            if (state != last or now - last_at >= quiet_s) and not self._stop_progress.is_set():
                print(line if terminal else f"{time.strftime('%H:%M:%S')} {line}", file=sys.stderr, flush=True)
                last, last_at = state, now

    def _enqueue_missing(self) -> int:
        """Enqueue each cell x repeat that has no COMPLETE, RUNNING or WAITING trial (a failed
        one is tried again by each new run), at most ``--trials`` waiting at once."""
        spec, keeper = self.ctx.spec, self.keeper
        taken = cells_of(keeper.trials("COMPLETE", "RUNNING", "WAITING"))
        added = sorted(cells_of(keeper.trials()) - set(spec.cells()), key=str)  # repeats added until decided
        missing = [c for c in [*spec.cells(), *added] if c not in taken and c[1] is not None]
        if self.request.trials is not None:
            missing = missing[: max(0, self.request.trials - len(keeper.trials("WAITING")))]
        for level, repeat in missing:
            keeper.study.enqueue_trial({"level": level}, user_attrs={"level": level, "repeat": repeat})
        log.info("enqueued %d missing cell(s) of %d", len(missing), len(spec.cells()))
        return len(missing)

    # -- supervising workers ------------------------------------------------------------------
    def _args(self, index: int, gpu: str | None = None) -> WorkerArgs:
        progress = str(self.upstream_progress) if index < 0 else None  # the upstream job's epochs
        return WorkerArgs(self.request, self.ctx.study_name, self.experiment_id, self.parent, self.token, index, gpu,
                          progress)

    @property
    def upstream_progress(self) -> Path:
        return cache_root() / "progress" / f"upstream-{self.token}.json"

    def upstream_note(self) -> str:
        """While the upstream job runs: which stage it trains, its epoch and what is left."""
        if self.upstream_ready:
            return ""
        return "preparing upstream features" + (f" ({note})" if (note := read_upstream_progress(
            str(self.upstream_progress))) else "")

    def _next_gpu(self) -> str | None:
        """The GPU with the fewest live workers (one each first, then shared round-robin); ""
        (no GPU at all) after ``--gpus none``; None (the environment as it is) without GPUs."""
        if not self.gpus:
            return "" if self.request.gpu_list == [] else None
        load = {g: 0 for g in self.gpus}
        for gpu in self.placed.values():
            if gpu in load:
                load[gpu] += 1
        return min(self.gpus, key=lambda g: (load[g], self.gpus.index(g)))

    def _spawn(self, index: int, job: str = "trials") -> Any:
        gpu = self._next_gpu()
        process = spawn(self._args(index, gpu), job)
        self.procs.append(process)
        self.placed[process.pid] = gpu
        return process

    @property
    def spawn_budget(self) -> int:
        """Worker processes this run may start: bounded even if workers keep dying."""
        spec = self.ctx.spec
        cells = len(spec.labels) * self.max_repeats if spec.mode == "ablation" else spec.size
        return self.request.workers + MAX_RETRIES * cells

    def reap(self) -> None:
        """Join the worker processes that ended: a death is repaired at once (its trial failed,
        its run ended, its cell enqueued again); a full disk stops the sweep; the upstream job's
        end marks the upstream features ready (or raises its failure)."""
        keeper = self.keeper
        for p in [p for p in self.procs if not p.is_alive()]:
            self.procs.remove(p)
            self.placed.pop(p.pid, None)
            p.join()
            if p.exitcode == WorkerExit.DISK_FULL:
                raise WorkerDiskFull(f"worker process {p.pid} stopped at a full disk")
            if p.exitcode == WorkerExit.LOCK_STUCK:
                raise StudyLockStuck(f"worker process {p.pid} gave up after --grace {self.request.grace_s:.0f} s "
                                     f"waiting for the study's lock, {lock_holder(self.ctx.storage)}")
            if p.exitcode == WorkerExit.STORE_LOCKED:
                self.tracker.give_up_waiting()  # the stop's own writes to the store must not wait for it again
                raise TrackingStoreLocked(f"worker process {p.pid} gave up after --grace {self.request.grace_s:.0f} s "
                                          f"waiting for the MLflow store, {self.tracker.store_lock_holder()}")
            if p is self.upstream_job:
                self.upstream_job = None
                self.upstream_progress.unlink(missing_ok=True)
                if p.exitcode != 0:
                    raise UpstreamFailed(f"preparing the upstream features of {self.ctx.spec.name} failed (worker exit "
                                         f"code {p.exitcode}; its message is above); no trial ran")
                self.upstream_ready = True
                continue
            if p.exitcode == WorkerExit.CUDA_ERROR:
                log.warning("worker process %d left after a CUDA error; a fresh one takes its place", p.pid)
            elif p.exitcode != 0:  # its parent knows at once: repair now, not after a grace
                why = f"signal {signal.Signals(-p.exitcode).name}" if p.exitcode < 0 else f"exit code {p.exitcode}"
                log.warning("worker process %d died (%s)", p.pid, why)
            with keeper.lock():
                keeper.repair()
                if p.exitcode != 0:
                    keeper.end_stray_runs(self.parent)
        if reserve_used():
            raise WorkerDiskFull("a process of this sweep met a full disk")

    def pending(self) -> int:
        """Trials a new worker could claim now."""
        with self.keeper.lock():
            return self.keeper.claimable()

    def spawn_worker(self) -> None:
        self._spawn(self.spawned)
        self.spawned += 1

    def start_upstream(self) -> None:
        """Start the upstream job: the upstream features built once, in a worker process on a GPU of
        the sweep's (see ``_worker.prepare_upstream``), before any trial is claimed; ``reap`` says
        when it is done."""
        self.upstream_job = self._spawn(-1, "upstream")

    def abandon(self, exc: BaseException) -> None:
        """A failure outside any trial (upstream preparation, a storage that went away): the
        coordinator record and, when no other coordinator is running, the parent run end FAILED
        with the reason, so nothing stays RUNNING."""
        try:
            with self.keeper.lock():
                self._end_record("failed")
                if not self.keeper.live_coordinators(exclude=self.token):
                    self.tracker.end(self.parent, "FAILED", "failed", f"{type(exc).__name__}: {exc}"[:4000])
        except Exception as cleanup:  # report the first error, never a second traceback
            log.error("clean-up after the failure failed: %s", cleanup)

    # -- ending ------------------------------------------------------------------------------
    def _end_record(self, state: str) -> None:
        self.record["state"] = state
        self.keeper.study.set_user_attr(COORDINATOR_PREFIX + self.token, dict(self.record))

    def finish(self, started: float) -> SweepSummary:
        """The sweep is over here: what workers queued for MLflow is sent, this run's record
        ended, and the last coordinator out logs the report and ends the parent run."""
        keeper = self.keeper
        self.tracker.close(wait_s=OUTBOX_WAIT_S)  # what the workers queued while the tracker was away goes first
        with keeper.lock():
            self._end_record("ended")
            summary = self.summary()
            if not keeper.live_coordinators(exclude=self.token):  # the last one out reports, once
                log_report(self.ctx, keeper.study, self.tracker, self.parent, summary)
                self.tracker.end(self.parent, "FINISHED", "finished")
        self.tracker.close()  # the report, if the server went away again: left queued for the next command
        summary.seconds = time.time() - started
        return summary

    def stop_all(self, reason: str) -> SweepSummary | None:
        """Interrupt this run's workers, fail the trials it still holds with ``reason``, end its
        runs and (when no other coordinator runs) the parent run KILLED."""
        self._stop_progress.set()
        live = [p for p in self.procs if p.is_alive()]
        _interrupt(live)  # they may have had the terminal's SIGINT already: a second one is ignored
        # A worker forked a moment ago ignores SIGINT until its handler is in (see mmsearch._fork_server):
        # once more to those still running, which the others ignore.
        again = time.time() + INTERRUPT_AGAIN_S
        for p in live:
            p.join(max(0.0, again - time.time()))
        _interrupt([p for p in live if p.is_alive()])
        deadline = time.time() + SHUTDOWN_WAIT_S
        for p in live:
            p.join(max(0.1, deadline - time.time()))
            if p.is_alive():
                p.kill()
                p.join()
        keeper, summary = self.keeper, None
        try:
            with keeper.lock():
                for t in keeper.trials("RUNNING"):
                    # Ours, or a claim cut short (no owner: dead, as claims are made under this lock).
                    if t.user_attrs.get("coordinator") == self.token or not t.user_attrs.get("owner"):
                        keeper.fail(t, reason, False, reason)
                keeper.end_stray_runs(self.parent)  # of workers killed above in their clean-up
                self._end_record(reason)
                summary = self.summary()
                if not keeper.live_coordinators(exclude=self.token):
                    self.tracker.end(self.parent, "KILLED", reason)
        except StudyLockStuck as exc:
            self.study_unwritten = True
            # The study cannot be written (nor who else runs be known): its trials are repaired by
            # the next run; the parent run is ended here so nothing stays RUNNING (a later run reopens it).
            log.error("clean-up (%s) could not write the study (%s); the next `sweep run` or `sweep status` "
                      "repairs its trials", reason, first_line(exc))
            with contextlib.suppress(Exception):
                self.tracker.end(self.parent, "KILLED", reason)
        except Exception as exc:  # report what could not be cleaned, never a traceback
            log.error("clean-up after the %s stop failed: %s", reason, exc)
        return summary


def warn_missing_assets(ctx: SweepContext) -> None:
    """Before anything trains: the levels whose ImageNet weights or word vectors are neither cached
    nor downloadable (offline), each asset once with its levels and how to get it. Their cells still
    run and fail with that message (the others run), and the sweep exits 3 naming them."""
    from mmsearch.pipeline import missing_assets

    spec = ctx.spec
    labels: list[str | None] = list(spec.labels) if spec.mode == "ablation" else [None]
    needed: dict[Any, list[str]] = {}
    for label in labels:
        cfg = ctx.base if label is None else with_overrides(ctx.base, spec.level(label).set, where=f"{spec.path} {label}")
        for asset in missing_assets(cfg, stage_needs_images(spec.stage)):
            needed.setdefault(asset, []).append(label or "every trial")
    kinds: dict[str, list[Any]] = {}
    for asset in needed:
        kinds.setdefault(asset.kind, []).append(asset)
    for kind, assets in kinds.items():  # one line per kind of asset, however many levels lack it
        which = [label for a in assets for label in needed[a]]
        levels = "every level" if len(which) == len(labels) else f"level(s) {', '.join(which)}"
        names = ", ".join(f"{a.name} ({a.where})" for a in assets)
        log.warning("%s: %s need %s that this machine does not have and cannot download (offline): %s. Their cells "
                    "will fail; to run them, %s", spec.name, levels, kind, names,
                    assets[0].fix if len(assets) == 1 else assets[0].fix.replace(Path(assets[0].where).name, "each file"))


def waiting_on(running: list[Any]) -> list[str]:
    """What a coordinator with nothing left to claim waits for, trial by trial, and how to end
    the wait: a live process keeps its trial (a stopped one too: it may continue)."""
    lines = []
    for t in running:
        owner = ProcessIdentity.from_attr(t.user_attrs.get("owner") or {})
        if owner is None:
            lines.append(f"trial {t.number} is being claimed")
            continue
        where = f"process {owner.pid} on {owner.host}"
        if owner.local():
            state = process_state(owner.pid)
            hint = (f"it is stopped: `kill -CONT {owner.pid}` lets it finish, or `kill {owner.pid}` and this run "
                    f"reruns its cell" if state.startswith("stopped") else "it is alive; this run ends when it does "
                    "(Ctrl-C leaves it running, and a later `sweep run` resumes the rest)")
            lines.append(f"trial {t.number} is running in {where} ({state}): {hint}")
        else:
            lines.append(f"trial {t.number} is running in {where}: judged dead only after "
                         "its heartbeat is silent for the grace (--grace)")
    return lines


class WorkerDiskFull(Exception):
    """A worker (or the upstream job) exited because the disk is full."""


class UpstreamFailed(MmsearchError):
    """The upstream job of a sweep failed (its message is above): none of its trials can run."""


def _interrupt(procs: list[Any]) -> None:
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGINT)
