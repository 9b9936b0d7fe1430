"""Who a process is, wherever it runs: its identity (machine, boot, PID namespace, PID, start
time), whether it is still alive here, the state /proc gives it, and how a RUNNING record with an
owner and a heartbeat is judged, and who holds a lock on a file (/proc/locks) and how to free
it. The one home of /proc reading for liveness; a low floor that search (trials, coordinators,
the study's lock), tracking (the SQLite store's lock) and export all build on."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (which may hold spaces and ')'), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_state(pid: int) -> str:
    """``running``, ``stopped`` ... as /proc tells it, or ``gone``."""
    fields = _stat_fields(pid)
    if not fields:
        return "gone"
    return {"R": "running", "S": "sleeping", "D": "waiting on the disk", "T": "stopped", "t": "stopped (traced)",
            "Z": "a zombie"}.get(fields[0], fields[0])


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
    fields = _stat_fields(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None  # field 22, counted after the command name


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


def judge(owner: Mapping[str, Any] | None, heartbeat: float | None, now: float, grace_s: float) -> str | None:
    """Why a RUNNING trial (or coordinator) with this owner and last heartbeat is dead, or None
    when it is alive."""
    identity = ProcessIdentity.from_attr(owner) if owner else None
    if identity is not None and identity.local():
        return None if identity.alive() else f"{identity} is gone"
    if heartbeat is not None and now - heartbeat > grace_s:
        who = str(identity) if identity is not None else "its process"
        return f"no heartbeat from {who} for {now - heartbeat:.0f} s (grace {grace_s:.0f} s)"
    return None


def lock_holders(path: str | os.PathLike[str]) -> list[int]:
    """The other processes holding a lock on the file at ``path`` (``flock`` or POSIX record locks,
    SQLite's kind), as ``/proc/locks`` lists them; empty where none is visible from here (a
    holder in another PID namespace shows as 0, which is left out)."""
    try:
        inode = os.stat(path).st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    holders: list[int] = []
    for line in lines:
        # "1: POSIX  ADVISORY  WRITE 6437 fe:00:2154837 0 EOF"; a waiter's line has "->" after the number.
        fields = line.split()
        if len(fields) < 6 or "->" in fields:
            continue
        try:
            pid, node = int(fields[4]), int(fields[5].rsplit(":", 1)[1])
        except (ValueError, IndexError):
            continue
        if node == inode and pid > 0 and pid != os.getpid() and pid not in holders:
            holders.append(pid)
    return holders


def describe_holder(holder: ProcessIdentity | int | None) -> str:
    """Who holds a lock, as a waiter tells it: ``process 42 (stopped)``, or where it runs when
    this machine cannot see it."""
    if holder is None:
        return "another process"
    if isinstance(holder, int):
        return f"process {holder} ({process_state(holder)})"
    if holder.local():
        return f"process {holder.pid} ({process_state(holder.pid)})"
    where = "in another PID namespace (a container?)" if holder.same_boot() else "on another machine"
    return f"process {holder.pid} on {holder.host} {where}, which this machine cannot see"


def holder_advice(holder: ProcessIdentity | int | None) -> str:
    """What frees the lock ``holder`` keeps: `kill -CONT` for a stopped one, said where to run it."""
    if holder is None:
        return "it frees the lock when its write ends or it exits"
    local = isinstance(holder, int) or holder.local()
    pid = holder if isinstance(holder, int) else holder.pid
    if local:
        if process_state(pid).startswith("stopped"):
            return f"it continues after `kill -CONT {pid}`, or frees the lock when it exits"
        return "it frees the lock when its write ends or it exits"
    where = ("from inside its PID namespace (for a container: `docker exec CONTAINER kill -CONT "
             f"{pid}`)" if holder.same_boot() else f"on {holder.host}")
    return f"if it is stopped, resume it with `kill -CONT {pid}` {where}, or end it there (its lock goes with it)"
