"""One schedule for many sweeps: the coordinators of ``sweep run`` (one per sweep, each with its
own study, MLflow experiment, parent run and charts), sharing one pool of worker slots.

A slot goes first to an upstream job (one at a time: the sweeps of one upstream key share the
cached networks, so after the first the others only load them), then to the first sweep in the
plan's order that has a cell to claim. A worker claims cells of its sweep until none is left and
exits, and its slot goes to the next sweep at once: no worker idles at one sweep's end while
another still has cells. A sweep whose cells run elsewhere (another machine) is waited for, and
the trials of processes that die there are taken over, as ``sweep run`` does.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from pathlib import Path

from mmsearch._disk import disk_full_error, on_disk_full
from mmsearch.errors import MmsearchError, first_line
from mmsearch.search import SweepContext, SweepInterrupted, SweepSummary, summarize
from mmsearch.search._coordinator import PROGRESS_LOG_EVERY_S, Coordinator, _WorkerDiskFull
from mmsearch.tracking import Tracker

log = logging.getLogger("mmsearch.reproduce")


class Schedule:
    def __init__(self, contexts: list[SweepContext], tracker: Tracker, workers: int, gpus: list[str],
                 places: dict[str, Path], progress: Callable[[Schedule, float], str] | None = None) -> None:
        self.coordinators = [Coordinator(ctx, tracker, gpus, places) for ctx in contexts]
        self.workers = workers
        self.progress = progress
        self.failed: dict[str, str] = {}  # sweep -> why it stopped (its upstream job failed)
        self.summaries: dict[str, SweepSummary] = {}
        self._stop = threading.Event()

    def run(self, started: float) -> dict[str, SweepSummary]:
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
            if on_disk_full(exc) or isinstance(exc, _WorkerDiskFull):
                for c in opened:
                    if c.ctx.spec.name not in self.summaries:
                        c.stop_all("disk full")
                raise disk_full_error(opened[0].places if opened else {},
                                      str(exc) if isinstance(exc, _WorkerDiskFull) else first_line(exc)) from None
            for c in opened:
                if c.ctx.spec.name not in self.summaries:
                    c.stop_all("failed")
            raise
        finally:
            self._stop.set()
            for c in opened:
                c.close()
        return self.summaries

    def _active(self) -> list[Coordinator]:
        return [c for c in self.coordinators if c.ctx.spec.name not in self.summaries
                and c.ctx.spec.name not in self.failed]

    def _loop(self, started: float) -> None:
        while active := self._active():
            for c in active:
                try:
                    c.reap()
                except MmsearchError as exc:  # its upstream job failed: the other sweeps go on
                    log.error("%s", exc)
                    self.failed[c.ctx.spec.name] = str(exc)
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
                    log.error("%s: workers kept dying; %d trial(s) left unclaimed", c.ctx.spec.name, pending)
                    idle.append(c)
            for c in idle:
                self._finish_or_wait(c, started)
            procs = [p for c in self.coordinators for p in c.procs]
            if procs:
                wait([p.sentinel for p in procs], timeout=2.0)
            elif self._active():
                time.sleep(1.0)  # cells running on other machines

    def _finish_or_wait(self, c: Coordinator, started: float) -> None:
        """A sweep with nothing to claim here: ended when no trial of it runs anywhere; while some
        run elsewhere, the dead among them are repaired (their cells come back to claim)."""
        keeper = c.keeper
        with keeper.lock():
            keeper.repair()
            running = keeper.trials("RUNNING")
            if keeper.claimable():
                return
        if running or c.top_up():  # a round over, and repeats added until decided: not finished
            return
        self.summaries[c.ctx.spec.name] = c.finish(started)
        self._say(started)  # a sweep's end is news even between the periodic lines

    def _progress(self, started: float) -> None:
        every = 5.0 if sys.stderr.isatty() else PROGRESS_LOG_EVERY_S
        while not self._stop.wait(every):
            self._say(started)

    def _say(self, started: float) -> None:
        if self.progress is None or self._stop.is_set():
            return
        try:
            line = self.progress(self, started)
        except Exception:  # progress must never break the schedule
            return
        if line:
            print(line if sys.stderr.isatty() else f"{time.strftime('%H:%M:%S')} {line}", file=sys.stderr, flush=True)

    def _interrupted(self, opened: list[Coordinator]) -> SweepInterrupted:
        failed = 0
        for c in opened:
            if c.ctx.spec.name in self.summaries:
                continue
            summary = c.stop_all("interrupted")
            failed += summary.mine.get("FAIL", 0) if summary is not None else 0
        return SweepInterrupted(
            f"interrupted: this run's unfinished trials are FAIL 'interrupted' ({failed} failed in this run) and their "
            "MLflow runs KILLED; rerun the same `mmsearch reproduce` command to resume with only the missing cells")


def cells_done(coordinators: list[Coordinator]) -> tuple[int, int, list[tuple[str, str, float]], dict[str, list[str]]]:
    """Cells COMPLETE and in all; this run's finished cells as (sweep, level, seconds); and the
    levels of each sweep's cells still waiting."""
    done = total = 0
    mine, waiting = [], {}
    for c in coordinators:
        trials = c.keeper.trials()
        s = summarize(c.ctx.spec, c.ctx.study_name, trials, looks=c.looks)
        done, total = done + s.done, total + s.total
        waiting[c.ctx.spec.name] = [str(t.params.get("level", t.user_attrs.get("level", ""))) for t in trials
                                    if t.state.name in ("WAITING", "RUNNING")]
        for t in trials:
            if t.state.name == "COMPLETE" and t.user_attrs.get("coordinator") == c.token and t.duration is not None:
                mine.append((c.ctx.spec.name, str(t.params.get("level", "")), t.duration.total_seconds()))
    return done, total, mine, waiting
