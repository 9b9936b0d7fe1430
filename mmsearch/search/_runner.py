"""The one supervisor of coordinators: ``sweep run`` gives it one, ``reproduce`` many.

Each :class:`Coordinator` owns one sweep (its study, MLflow experiment, parent run, workers) and
offers non-blocking steps: ``reap`` (join what ended), ``pending`` (cells to claim now),
``start_upstream`` / ``spawn_worker``, ``top_up`` (repeats until decided), ``finish``. The runner
alone loops over them, sharing one pool of worker slots:

* a free slot goes first to an upstream job (one at a time: the sweeps of one upstream key share
  the cached networks, so after the first the others only load them), then to the first sweep in
  the given order that has a cell to claim; a worker claims cells of its sweep until none is left
  and exits, and its slot goes to the next sweep at once;
* a sweep with nothing to claim here is finished when no trial of it runs anywhere; while some run
  elsewhere (another run, another machine) it is waited for, saying on what, and the trials of
  processes that die there are taken over;
* a failure is handled once for all: Ctrl-C (exit 130, the trials this run held failed
  "interrupted", its runs KILLED), a full disk, a study lock that stays held, an upstream job that
  failed (that sweep stops, the others go on).

Which sweep gets a slot first is the only policy: the order of the coordinators given.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import wait
from pathlib import Path

from mmsearch._disk import check_free_space, disk_full_error, drop_reserves, make_reserves, on_disk_full
from mmsearch._interrupts import interrupt_once
from mmsearch.config import stage_needs_images
from mmsearch.data import check_room_for, image_cache, load_images
from mmsearch.errors import StudyLockStuck, TrackingStoreLocked, first_line
from mmsearch.search._context import SweepContext, SweepInterrupted, SweepRequest, resolve
from mmsearch.search._coordinator import (
    PROGRESS_LOG_EVERY_S,
    WAIT_REPORT_EVERY_S,
    WAIT_REPORT_S,
    Coordinator,
    UpstreamFailed,
    WorkerDiskFull,
    local_places,
    sweep_gpus,
    waiting_on,
    warn_missing_assets,
    warn_oversubscribed,
)
from mmsearch.search._summary import SweepSummary
from mmsearch.search._worker import warm_workers
from mmsearch.tracking import Tracker

log = logging.getLogger("mmsearch.sweep")


def run_sweep(request: SweepRequest) -> SweepSummary:
    """``mmsearch sweep run``: the preamble, then one coordinator under the runner."""
    started = time.time()
    request.check()
    places, tracker = begin_run(request)
    [ctx], gpus, workers = assign_workers([resolve(request, checked=True)], request.workers)
    decode_images([ctx])
    reserves = make_reserves(list(places.values()))
    runner = Runner([Coordinator(ctx, tracker, gpus, places)], workers,
                    resume=f"rerun `mmsearch sweep run {ctx.spec.name}` with the same options")
    summary = runner.run(started).get(ctx.spec.name)
    if summary is None:  # its upstream job failed: the error, as every command reports one
        raise runner.failed[ctx.spec.name]
    # Only after a clean end: a worker still stopping reads a vanished reserve as a full disk
    # (a reserve left by a crash is removed by the next sweep that makes one there).
    drop_reserves(reserves)
    return summary


def begin_run(request: SweepRequest) -> tuple[dict[str, Path], Tracker]:
    """What every run does before it opens a study (``sweep run`` and ``reproduce`` alike): the
    folders it writes checked for free space (a full disk: one message before anything is
    written), the workers' imports started (torch, overlapping the coordinator's own), the
    tracking store opened (an unusable one fails here). Returns the folders and the tracker."""
    places = local_places(request)
    check_free_space(places)
    warm_workers()
    return places, Tracker(request.tracking_uri, request.grace_s)


def assign_workers(contexts: list[SweepContext], asked: int | None) -> tuple[list[SweepContext], list[str], int]:
    """The worker processes and GPUs the sweeps share (``--workers``, else one per GPU given), each
    context's request saying so (new contexts: the resolved ones are not changed); the assets each
    sweep lacks said up front."""
    gpus = sweep_gpus(contexts[0])
    workers = asked or max(1, len(gpus))
    placed = [replace(ctx, request=replace(ctx.request, workers=workers)) for ctx in contexts]
    for ctx in placed:
        warn_missing_assets(ctx)
    if gpus:
        log.info("%d worker(s) sharing GPU(s) %s, the least loaded first", workers, ", ".join(gpus))
    else:
        warn_oversubscribed(workers, sum(ctx.spec.size for ctx in placed))
    return placed, gpus, workers


def decode_images(contexts: list[SweepContext]) -> None:
    """Every image size the sweeps train on, decoded once with every core before the first trial
    (not once per worker), after one check that the disk has room for all of them; a corrupt
    image is named now, not in the middle of one trial's MLflow run."""
    sized = [ctx for ctx in contexts if stage_needs_images(ctx.spec.stage)]
    if not sized:
        return
    sizes = sorted({ctx.base.data.image_size for ctx in sized})
    check_room_for([image_cache(sized[0].dataset, size) for size in sizes])
    for size in sizes:
        load_images(sized[0].dataset, size)


class Runner:
    """Runs ``coordinators`` to their end with ``workers`` worker processes in all.

    ``resume`` is what the interrupted message tells the user to run again; ``progress`` (given
    the runner and the start time) is a line printed now and then, beside each coordinator's own."""

    def __init__(self, coordinators: list[Coordinator], workers: int, resume: str,
                 progress: Callable[[Runner, float], str] | None = None) -> None:
        self.coordinators = coordinators
        self.workers = workers
        self.resume = resume
        self.progress = progress
        self.failed: dict[str, UpstreamFailed] = {}  # sweep -> why it stopped (its upstream job failed)
        self.summaries: dict[str, SweepSummary] = {}
        self._gave_up: set[str] = set()  # sweeps whose workers kept dying: finished with cells left
        self._waiting: dict[str, tuple[float, float]] = {}  # sweep -> (waiting since, last told)
        self._stop = threading.Event()

    # -- the run ------------------------------------------------------------------------------
    def run(self, started: float) -> dict[str, SweepSummary]:
        interrupt_once()
        opened: list[Coordinator] = []
        try:
            for c in self.coordinators:
                c.open(started)
                opened.append(c)
            if self.progress is not None:
                threading.Thread(target=self._progress, args=(started,), daemon=True, name="mmsearch-progress").start()
            self._loop(started)
        except KeyboardInterrupt:
            self._stop.set()
            raise self._interrupted(opened) from None
        except BaseException as exc:
            self._stop.set()
            self._stop_unfinished(opened, exc)
            if on_disk_full(exc) or isinstance(exc, WorkerDiskFull):
                raise disk_full_error(opened[0].places if opened else {},
                                      str(exc) if isinstance(exc, WorkerDiskFull) else first_line(exc)) from None
            raise
        finally:
            self._stop.set()
            for c in opened:
                c.close()
        return self.summaries

    def _stop_unfinished(self, opened: list[Coordinator], exc: BaseException) -> None:
        """Stop the sweeps not yet finished: their workers interrupted, the trials they held
        failed with the reason, their parent runs ended (FAILED with the error where it is not
        one of the sweep's own stops)."""
        full = on_disk_full(exc) or isinstance(exc, WorkerDiskFull)
        reason = ("disk full" if full else "study lock held" if isinstance(exc, StudyLockStuck)
                  else "tracking store locked" if isinstance(exc, TrackingStoreLocked) else "failed")
        for c in opened:
            if reason == "tracking store locked":
                c.tracker.give_up_waiting()  # ending its runs gets a few seconds, not the whole grace again
            if c.name in self.summaries:
                continue
            c.stop_all(reason)
            if reason == "failed":
                c.abandon(exc)

    def _active(self) -> list[Coordinator]:
        return [c for c in self.coordinators if c.name not in self.summaries and c.name not in self.failed]

    def _loop(self, started: float) -> None:
        while active := self._active():
            for c in active:
                try:
                    c.reap()
                except UpstreamFailed as exc:  # that sweep stops; the others go on
                    log.error("%s", exc)
                    self.failed[c.name] = exc
                    c.abandon(exc)
            active = self._active()
            free = self.workers - sum(len(c.procs) for c in self.coordinators)
            if free > 0 and not any(c.upstream_job is not None for c in active):
                waiting = next((c for c in active if not c.upstream_ready and c.spawned < c.spawn_budget
                                and c.pending()), None)
                if waiting is not None:
                    waiting.start_upstream()
                    free -= 1
            idle = []
            for c in active:
                if not c.upstream_ready:
                    if c.upstream_job is None and not c.pending():  # nothing of it left to run here
                        idle.append(c)
                    continue
                pending = c.pending() if free > 0 or not c.procs else 0
                spawn = max(0, min(free, pending, c.spawn_budget - c.spawned))
                for _ in range(spawn):
                    c.spawn_worker()
                free -= spawn
                if not c.procs and not pending:
                    idle.append(c)
                elif not c.procs and pending and c.spawned >= c.spawn_budget:
                    log.error("%s: workers kept dying; %d trial(s) left unclaimed", c.name, pending)
                    self._gave_up.add(c.name)
                    idle.append(c)
            for c in idle:
                self._finish_or_wait(c, started)
            procs = [p for c in self.coordinators for p in c.procs]
            tick = min([2.0, *(c.request.heartbeat_s for c in self._active())])
            if procs:
                wait([p.sentinel for p in procs], timeout=tick)
            elif self._active():
                time.sleep(tick)  # cells running elsewhere

    def _finish_or_wait(self, c: Coordinator, started: float) -> None:
        """A sweep with nothing to claim here: ended when no trial of it runs anywhere; while some
        run elsewhere, the dead among them are repaired (their cells come back to claim) and what
        it waits on is said now and then."""
        keeper = c.keeper
        with keeper.lock():
            keeper.repair()
            running = keeper.trials("RUNNING")
            if keeper.claimable() and c.name not in self._gave_up:
                self._waiting.pop(c.name, None)
                return
        if running and c.name not in self._gave_up:
            self._say_waiting(c, running)
            return
        if c.name not in self._gave_up and c.top_up():  # a round over, and repeats added until decided
            return
        self._waiting.pop(c.name, None)
        self.summaries[c.name] = c.finish(started)
        self._say(started)  # a sweep's end is news even between the periodic lines

    def _say_waiting(self, c: Coordinator, running: list) -> None:
        now = time.monotonic()
        since, told = self._waiting.setdefault(c.name, (now, 0.0))
        waited = now - since
        if waited >= WAIT_REPORT_S and waited - told >= (WAIT_REPORT_EVERY_S if told else 0):
            self._waiting[c.name] = (since, waited)
            for line in waiting_on(running):
                log.warning("waiting %.0f s: %s", waited, line)

    # -- what it says ---------------------------------------------------------------------------
    def _progress(self, started: float) -> None:
        every = 5.0 if sys.stderr.isatty() else PROGRESS_LOG_EVERY_S
        while not self._stop.wait(every):
            self._say(started)

    def _say(self, started: float) -> None:
        if self.progress is None or self._stop.is_set():
            return
        try:
            line = self.progress(self, started)
        except Exception:  # progress must never break the run
            return
        if line:
            print(line if sys.stderr.isatty() else f"{time.strftime('%H:%M:%S')} {line}", file=sys.stderr, flush=True)

    def _interrupted(self, opened: list[Coordinator]) -> SweepInterrupted:
        """Stop everything this run started; fail what it held; end its runs KILLED."""
        failed, unwritten, last = 0, False, None
        for c in opened:
            if c.name in self.summaries:
                continue
            last = summary = c.stop_all("interrupted")
            failed += summary.mine.get("FAIL", 0) if summary is not None else 0
            unwritten = unwritten or c.study_unwritten
        if unwritten:
            return SweepInterrupted(
                f"interrupted: this run's MLflow runs are KILLED; its unfinished trials stay RUNNING in the study, whose "
                f"lock is held (see above): {self.resume} once it is free, which repairs them and resumes", last)
        return SweepInterrupted(
            f"interrupted: this run's unfinished trials are FAIL 'interrupted' ({failed} failed in this run) and their "
            f"MLflow runs KILLED; {self.resume} to resume", last)
