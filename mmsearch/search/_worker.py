"""Workers: claim a trial under the study lock, run it, repeat until the sweep has none left.

A worker is a child process of the coordinator, forked from a preloaded fork server. A child watches its coordinator: if the coordinator dies, the child
fails its trial as interrupted, ends its run and exits within seconds. Ctrl-C or ``kill``
interrupts a child the same way, and a second signal cannot cut that clean-up short.
"""

from __future__ import annotations

import enum
import faulthandler
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
from dataclasses import dataclass, replace
from multiprocessing.connection import wait
from typing import Any

from mmsearch._disk import on_disk_full, reserve_used
from mmsearch._interrupts import deferred, interrupt_once, stopping
from mmsearch.config import ExperimentConfig, with_overrides
from mmsearch.errors import MmsearchError, StudyLockStuck, TrackingStoreLocked, first_line
from mmsearch.runtime import VISIBLE_ENV
from mmsearch.search._context import SweepContext, SweepRequest, resolve
from mmsearch.search._liveness import Heartbeat
from mmsearch.search._spec import PRUNERS, SAMPLERS
from mmsearch.search._study import claimable
from mmsearch.search._trial import TrialOutcome, TrialSetup, claim_owner, fail_claimed, interrupt_reason, run_trial
from mmsearch.tracking import Tracker
from mmsearch.training import Callback, EpochLog, FitState

log = logging.getLogger("mmsearch.sweep")
# A child whose coordinator died gets this long to clean up, then leaves anyway: what it could
# not end, the next `sweep run` or `sweep status` repairs (its trial, its MLflow run).
WORKER_EXIT_DEADLINE_S = 8.0
OUTBOX_WAIT_S = 20.0  # how long a worker that is done waits for a tracking server that is away


class WorkerExit(enum.IntEnum):
    """What a worker process exits with, read by its coordinator (``Coordinator.reap``); not the
    CLI's exit codes (``cli.ExitCode``), which say what a command's user gets."""

    DONE = 0  # nothing left to claim
    USER_ERROR = 2  # a user's error before any trial (its message is above)
    CUDA_ERROR = 3  # not a death: a request for a fresh process (a CUDA error can poison this one)
    DISK_FULL = 4  # the coordinator stops the sweep
    LOCK_STUCK = 5  # gave up waiting for the study's lock: the coordinator stops the sweep
    STORE_LOCKED = 6  # gave up waiting for the MLflow SQLite store's lock: the coordinator stops the sweep
    INTERRUPTED = 130  # Ctrl-C or its coordinator's stop: its trial failed "interrupted", its run KILLED


@dataclass
class WorkerArgs:
    """What a worker process needs to rebuild its setup (picklable)."""

    request: SweepRequest
    study_name: str
    experiment_id: str
    parent_run_id: str
    coordinator: str
    index: int
    gpu: str | None = None  # this worker's CUDA_VISIBLE_DEVICES, set before torch can touch CUDA
    progress_file: str | None = None  # upstream job: where it says which stage and epoch it is at


def load_study(ctx: SweepContext, seed_offset: int = 0) -> Any:
    import optuna

    spec = ctx.spec
    return optuna.create_study(study_name=ctx.study_name, storage=ctx.storage.optuna, direction=spec.direction,
                               load_if_exists=True, sampler=SAMPLERS.get(spec.sampler)(spec.seed + seed_offset),
                               pruner=PRUNERS.get(spec.pruner)())


def claim(setup: TrialSetup) -> tuple[Any, int] | None:
    """Claim the next trial under the study lock and mark it ours, as one step an interrupt
    cannot split (a claim that fails halfway leaves a RUNNING trial with no owner, which any
    holder of the lock knows to be dead: see ``SweepStudy.repair``)."""
    ctx = setup.ctx
    with ctx.storage.lock(ctx.study_name):
        if not claimable(ctx, setup.study):
            return None
        claimed = None
        try:
            with deferred():
                trial = setup.study.ask()  # pops a WAITING trial first: under the lock no one else pops it
                claimed = trial, claim_owner(setup, trial)
        except BaseException:
            if claimed is not None:  # interrupted while claiming: the claim is whole, fail it
                fail_claimed(setup, claimed[0], *interrupt_reason())
            raise
        return claimed


def work(setup: TrialSetup) -> int:
    """Claim and run trials until the sweep has none left to claim. Returns how many ran. Stops
    early when a trial of this worker was failed by another coordinator (judged dead while this
    process was silent): its cells may be running elsewhere now."""
    ran = 0
    while (claimed := claim(setup)) is not None:
        state = run_trial(setup, *claimed)
        ran += 1
        if state is TrialOutcome.REVOKED:
            log.warning("stopping this worker: another coordinator judged it dead")
            break
        if state is TrialOutcome.DISK_FULL or reserve_used():  # this or another process met a full disk
            sys.exit(WorkerExit.DISK_FULL)
        if state is TrialOutcome.STORE_LOCKED:
            sys.exit(WorkerExit.STORE_LOCKED)  # the coordinator stops the sweep, saying what holds the store
        if state is TrialOutcome.CUDA_ERROR:
            # A CUDA error can poison every later kernel of this process (and an OOM leaves its
            # allocator fragmented): leave, and the coordinator starts a fresh worker.
            log.warning("leaving after a CUDA error; the coordinator starts a fresh worker")
            sys.exit(WorkerExit.CUDA_ERROR)
    return ran


def worker_threads(base: ExperimentConfig, workers: int) -> int:
    """A worker's share of the base config's thread budget (``runtime.thread_budget``)."""
    from mmsearch.runtime import thread_budget

    return thread_budget(base.run.threads, share=workers)


def worker_setup(args: WorkerArgs) -> TrialSetup:
    """What every trial of this worker shares: the sweep resolved again here, its share of the
    CPU threads, the study (its sampler seeded per worker), MLflow and a heartbeat."""
    request = replace(args.request, study_name=args.study_name)
    ctx = resolve(request)
    base = with_overrides(ctx.base, {"run.threads": worker_threads(ctx.base, request.workers or 1)})
    study = load_study(ctx, seed_offset=args.index)
    heartbeat = Heartbeat(ctx.storage.optuna, ctx.storage.optuna.get_study_id_from_name(ctx.study_name),
                          request.heartbeat_s)
    heartbeat.start()
    return TrialSetup(ctx, base, study, Tracker(request.tracking_uri, request.grace_s), args.experiment_id, args.parent_run_id,
                      heartbeat, args.coordinator)


# -- worker processes --------------------------------------------------------------------------
# Workers fork from a server process that imported these once. Spawning each worker instead
# re-imports mlflow, its SQL store and torch: about 6 s per worker on 2 cores, longer than a demo
# trial. The server itself never runs torch code, so forking from it is safe (a fork of a process
# whose OpenMP pool is running is not).
_PRELOAD = ["mmsearch._fork_server", "mmsearch.search._worker", "mmsearch.pipeline._stages", "mlflow.store.tracking.sqlalchemy_store"]


def process_context() -> Any:
    """The multiprocessing context every worker (and the calibration) starts from: a fork server
    with the heavy imports done once, deaf to Ctrl-C from its first import on (see
    ``mmsearch._fork_server``)."""
    mpctx = mp.get_context("forkserver")
    mpctx.set_forkserver_preload(_PRELOAD)
    return mpctx


def warm_workers() -> None:
    """Start the fork server now, so its imports overlap with the coordinator's own setup."""
    from multiprocessing import forkserver

    process_context()
    forkserver.ensure_running()


_answered = False  # the fork server has forked a child for this process: its imports are done


def ready_context() -> Any:
    """``process_context()`` once its fork server answers. The first call starts a child that does
    nothing, and waits for it: a start that waits on the server's imports instead, cut short by
    Ctrl-C, leaves its caller without the pid of the child the server forks later (which nobody
    would then stop). Later starts take milliseconds."""
    global _answered
    mpctx = process_context()
    if not _answered:
        probe = mpctx.Process(target=_answer, name="mmsearch-fork-server-probe")
        probe.start()
        probe.join()
        _answered = True
    return mpctx


def _answer() -> None:
    """The fork server's first child: its start is the answer."""


def spawn(args: WorkerArgs, job: str = "trials") -> Any:
    """A worker process: ``trials`` claims and runs trials; ``upstream`` builds the base
    configuration's upstream features once and exits (the coordinator itself never runs torch,
    so it never holds a CUDA context)."""
    process = ready_context().Process(target=_worker_main, args=(args, dict(os.environ), job),
                                 name=f"mmsearch-{job}-{args.index}")
    process.start()
    return process


def prepare_upstream(args: WorkerArgs) -> None:
    """Train/extract the base configuration's upstream features once, before any trial, so no
    fusion trial trains an upstream network (and workers never race for it)."""
    import time

    from mmsearch.pipeline import STAGES, Workspace

    request = replace(args.request, study_name=args.study_name)
    ctx = resolve(request)
    tracker = Tracker(request.tracking_uri, request.grace_s)
    progress = UpstreamProgress(args.progress_file)
    ws = Workspace(ctx.base, ctx.dataset, observers=[progress])
    t0 = time.perf_counter()
    for name in STAGES.get(ctx.spec.stage).inputs:
        progress.stage, progress.epochs = name, getattr(ctx.base, name).optim.epochs
        feats, _ = STAGES.get(name).features(ws)
        tracker.set_tags(args.parent_run_id, {f"upstream.{name}.features": f"{feats.shape[0]}x{feats.shape[1]}"})
    STAGES.get(ctx.spec.stage).prepared_inputs(ws)  # standardised once per sweep, not per trial
    tracker.set_tags(args.parent_run_id, {"upstream.device": ws.runtime.describe()})
    tracker.log_metrics(args.parent_run_id, {"upstream_seconds": time.perf_counter() - t0})


class UpstreamProgress(Callback):
    """The upstream job's epochs, for its coordinator's progress line: the stage, the epoch, the
    seconds per epoch, written to a small file (replaced whole, so a reader never sees half)."""

    def __init__(self, path: str | None) -> None:
        self.path, self.stage, self.epochs = path, "", 0
        if path is not None:
            os.makedirs(os.path.dirname(path), exist_ok=True)

    def on_epoch_end(self, state: FitState, epoch: EpochLog) -> None:
        if self.path is None or state.replayed:
            return
        import json
        import time

        data = {"stage": self.stage, "epoch": epoch.epoch, "epochs": self.epochs, "seconds": epoch.seconds,
                "at": time.time()}
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(data, f)
            os.replace(tmp, self.path)
        except OSError:  # progress must never fail the job
            pass


def read_upstream_progress(path: str | None) -> str:
    """``text stage: epoch 5/30, about 40 s left`` from an upstream job's progress file ('' if none)."""
    import json

    if path is None:
        return ""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return ""
    line = f"{data['stage']} stage: epoch {data['epoch']}" + (f"/{data['epochs']}" if data.get("epochs") else "")
    if data.get("epochs"):
        line += f", about {max(0, data['epochs'] - data['epoch']) * data['seconds']:.0f}s left at most"
    return line


def _watch_coordinator() -> None:
    """Interrupt this worker when its coordinator dies (its pipe to us closes); if the clean-up
    hangs, leave anyway: the next coordinator repairs what is left."""
    parent = mp.parent_process()
    if parent is None:
        return
    wait([parent.sentinel])
    log.warning("the coordinator is gone: stopping this worker")
    os.kill(os.getpid(), signal.SIGINT)
    threading.Timer(WORKER_EXIT_DEADLINE_S, _leave_anyway).start()


def _leave_anyway() -> None:
    log.warning("clean-up unfinished after %.0f s; leaving it to the next `sweep run` or `sweep status`. "
                "Where this worker was:", WORKER_EXIT_DEADLINE_S)
    faulthandler.dump_traceback(all_threads=True)
    os._exit(1)


def _worker_main(args: WorkerArgs, environ: dict[str, str], job: str = "trials") -> None:
    # The fork server was started with the environment of its time; use the coordinator's now.
    os.environ.clear()
    os.environ.update(environ)
    if args.gpu is not None:  # read by CUDA when it initialises, which nothing here has done yet
        os.environ[VISIBLE_ENV] = args.gpu
    os.environ["MMSEARCH_PROGRESS"] = "0"  # the coordinator's progress line reports the trials
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` prints where a worker is, e.g. one that seems stuck
    logging.basicConfig(level=logging.WARNING, force=True,
                        format=f"%(asctime)s [{'upstream' if job == 'upstream' else f'worker {args.index}'}] %(levelname)s "
                               "%(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)  # we report its errors in one line
    setup = None
    try:
        # Ctrl-C was ignored until now, as in the fork server; a coordinator's stop sent meanwhile
        # is sent again (Coordinator.stop_all). Before the watchdog, whose stop is a SIGINT too.
        interrupt_once()
        parent = mp.parent_process()
        if parent is not None and not parent.is_alive():
            # Asked for by a coordinator stopped while the fork server was still importing, which
            # served the request afterwards: nothing to do, nobody to tell.
            sys.exit(WorkerExit.INTERRUPTED)
        threading.Thread(target=_watch_coordinator, daemon=True, name="mmsearch-watchdog").start()
        if job == "upstream":
            prepare_upstream(args)
            return
        setup = worker_setup(args)
        work(setup)
    except KeyboardInterrupt:
        sys.exit(WorkerExit.INTERRUPTED)
    except StudyLockStuck as exc:
        if stopping():  # its clean-up could not write the study: its run is ended, the next run repairs its trial
            log.warning("could not record its trial as stopped: %s", first_line(exc, 160))
            sys.exit(WorkerExit.INTERRUPTED)
        sys.exit(WorkerExit.LOCK_STUCK)  # the coordinator says what holds the lock, once for the sweep
    except TrackingStoreLocked as exc:
        log.error("%s", first_line(exc, 300))
        sys.exit(WorkerExit.STORE_LOCKED)
    except MmsearchError as exc:
        log.error("%s", exc)
        sys.exit(WorkerExit.USER_ERROR)
    except Exception as exc:
        from mmsearch.runtime import is_out_of_memory, out_of_memory_advice

        if stopping():  # a Ctrl-C that a library turned into its own error
            sys.exit(WorkerExit.INTERRUPTED)

        if on_disk_full(exc):
            log.error("the disk is full: %s", first_line(exc))
            sys.exit(WorkerExit.DISK_FULL)
        if not is_out_of_memory(exc):
            raise
        log.error("out of memory preparing the upstream features of %s: %s (%s)", args.study_name, first_line(exc),
                  out_of_memory_advice("lower the upstream stages' batch or network size with --set"))
        sys.exit(WorkerExit.USER_ERROR)
    finally:
        if setup is not None:
            setup.heartbeat.stop()
            setup.tracker.close(wait_s=OUTBOX_WAIT_S)

