"""How long a process waits for a lock another process holds, one policy for every lock a run
needs (the study journal's, the study locks, the MLflow SQLite store's): an interrupt held off
by ``deferred()`` ends a wait at once (nothing is written before a lock is taken), a stall is
reported after STALL_REPORT_S and then every REPORT_EVERY_S, a wait past its give-up raises the
lock's :class:`~mmsearch.errors.LockStuck`, and a process that is stopping (interrupted, or one
of its waits gave up) gets STOPPING_WAIT_S for all its waits together."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from mmsearch._interrupts import raise_if_held, stopping
from mmsearch.errors import LockStuck

STALL_REPORT_S = 10.0  # the first word about a held lock; then every REPORT_EVERY_S
REPORT_EVERY_S = 60.0
STOPPING_WAIT_S = 3.0  # what a process that is stopping spends waiting for one store's locks, in all


def report_due(waited: float, reported: float) -> bool:
    """Whether a wait of ``waited`` s, last reported at ``reported`` (0: never), says so now."""
    return waited >= STALL_REPORT_S and waited - reported >= (REPORT_EVERY_S if reported else 0)


class WaitBudget:
    """How long the waits for one store's locks may still take. Once this process is stopping
    (interrupted) or one of those waits gave up, all of them together get STOPPING_WAIT_S: a
    clean-up that cannot write leaves the repair to the next run."""

    def __init__(self, error: type[LockStuck]) -> None:
        self.error = error
        self.deadline: float | None = None

    @property
    def short(self) -> bool:
        """Whether the waits are down to what a stopping process gets."""
        return self.deadline is not None or stopping()

    def give_up(self) -> None:
        """From now on the waits get STOPPING_WAIT_S in all (a run that stops for a lock must not
        wait for it again in its clean-up)."""
        self.deadline = min(self.deadline or math.inf, time.monotonic() + STOPPING_WAIT_S)

    def check(self, started: float, give_up_s: float, what: Callable[[], str]) -> float:
        """One turn of a wait that began at ``started`` (monotonic): an interrupt held off by
        ``deferred()`` is raised now; past ``give_up_s`` or the deadline it raises ``error``
        saying it gave up waiting for ``what()``. Returns the time waited."""
        raise_if_held()
        now = time.monotonic()
        if self.deadline is None and stopping():
            self.deadline = now + STOPPING_WAIT_S
        waited = now - started
        if waited >= give_up_s or (self.deadline is not None and now >= self.deadline):
            self.give_up()
            after = f"after {waited:.0f} s" if waited >= give_up_s else "while this process stops"
            raise self.error(f"gave up {after} waiting for {what()}")
        return waited
