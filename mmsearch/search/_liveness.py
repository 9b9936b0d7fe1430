"""Who is alive: processes identify themselves, beat a heartbeat, and dead trials are judged.

Every trial records its ``owner`` (the process running it) and a ``heartbeat`` time that a
thread of that process refreshes every few seconds, whatever the trial is doing: a ResNet epoch
of minutes keeps its trial alive. A RUNNING trial is judged dead when

* its owner ran on this machine (same boot and PID namespace) and that process is gone: known
  at once, whatever the grace; or
* its heartbeat is older than the grace (another machine, or a process that stopped answering).

Coordinators keep the same kind of record in the study, so a new ``sweep run`` knows whether the
sweep's MLflow parent run is still someone's or was left RUNNING by a coordinator that died.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mmsearch.errors import StudyLockStuck

log = logging.getLogger("mmsearch.liveness")
DEFAULT_HEARTBEAT_S = 10.0
DEFAULT_GRACE_S = 600.0  # longer than a paper ResNet epoch (about 400 s), so no stall is mistaken for death


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return socket.gethostname()


def _pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def _start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks since boot): a PID reused later has another value."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22, counted after the command name


@dataclass(frozen=True)
class ProcessIdentity:
    host: str
    boot: str
    pidns: int
    pid: int
    start: int | None

    @classmethod
    def current(cls, pid: int | None = None) -> ProcessIdentity:
        pid = pid or os.getpid()
        return cls(socket.gethostname(), _boot_id(), _pid_namespace(), pid, _start_ticks(pid))

    @classmethod
    def from_attr(cls, value: Any) -> ProcessIdentity | None:
        try:
            return cls(**value)
        except TypeError:
            return None

    def attr(self) -> dict[str, Any]:
        return asdict(self)

    def local(self) -> bool:
        """Whether this process's PID means something here (same boot, same PID namespace)."""
        return self.boot == _boot_id() and self.pidns == _pid_namespace()

    def same_boot(self) -> bool:
        """Whether it runs on this machine (a PID namespace of its own or not)."""
        return self.boot == _boot_id()

    def alive(self) -> bool:
        """Only for a local identity: the process exists and is the same one (not a reused PID)."""
        return _start_ticks(self.pid) == self.start

    def __str__(self) -> str:
        return f"process {self.pid} on {self.host}"


def judge(owner: Any, heartbeat: float | None, now: float, grace_s: float) -> str | None:
    """Why a RUNNING trial (or coordinator) with this owner and last heartbeat is dead, or None
    when it is alive."""
    identity = ProcessIdentity.from_attr(owner) if owner else None
    if identity is not None and identity.local():
        return None if identity.alive() else f"{identity} is gone"
    if heartbeat is not None and now - heartbeat > grace_s:
        who = str(identity) if identity is not None else "its process"
        return f"no heartbeat from {who} for {now - heartbeat:.0f} s (grace {grace_s:.0f} s)"
    return None


class Heartbeat(threading.Thread):
    """Refreshes the heartbeat of the trials this process runs (and of its coordinator record)
    from a thread, independent of epochs; tells a trial's runner when someone else failed it."""

    def __init__(self, storage: Any, study_id: int, every_s: float, coordinator_key: str | None = None,
                 coordinator_record: dict[str, Any] | None = None) -> None:
        super().__init__(daemon=True, name="mmsearch-heartbeat")
        self.storage, self.study_id, self.every_s = storage, study_id, every_s
        self.coordinator_key, self.coordinator_record = coordinator_key, coordinator_record
        self._trials: dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def watch(self, trial_id: int) -> threading.Event:
        """Beat for this trial from now on; the event is set when the trial turns out finished by
        someone else (judged dead elsewhere): its result must then be discarded."""
        revoked = threading.Event()
        with self._lock:
            self._trials[trial_id] = revoked
        self._beat_trial(trial_id, revoked)
        return revoked

    def unwatch(self, trial_id: int) -> None:
        with self._lock:
            self._trials.pop(trial_id, None)

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.beat()

    def beat(self) -> None:
        with self._lock:
            watched = list(self._trials.items())
        for trial_id, revoked in watched:
            self._beat_trial(trial_id, revoked)
        if self.coordinator_key is not None and self.coordinator_record is not None:
            self.coordinator_record["beat"] = time.time()
            try:
                self.storage.set_study_user_attr(self.study_id, self.coordinator_key, dict(self.coordinator_record))
            except StudyLockStuck:  # the wait for the lock says it, and the main flow stops
                pass
            except Exception as exc:  # a missed beat is retried next time; the grace covers it
                log.warning("coordinator heartbeat failed: %s", exc)

    def _beat_trial(self, trial_id: int, revoked: threading.Event) -> None:
        from optuna.exceptions import UpdateFinishedTrialError

        try:
            self.storage.set_trial_user_attr(trial_id, "heartbeat", time.time())
        except UpdateFinishedTrialError:
            revoked.set()
            self.unwatch(trial_id)
        except StudyLockStuck:  # the wait for the lock says it, and the main flow stops
            pass
        except Exception as exc:  # a missed beat is retried next time; the grace covers it
            log.warning("trial heartbeat failed: %s", exc)
