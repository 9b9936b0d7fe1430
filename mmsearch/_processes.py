"""Who a process is, wherever it runs: its identity (machine, boot, PID namespace, PID, start
time), whether it is still alive here, the state /proc gives it, and how a RUNNING record with an
owner and a heartbeat is judged. The one home of /proc reading for liveness; a low floor that
search (trials, coordinators, the study's lock), tracking and export all build on."""

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
