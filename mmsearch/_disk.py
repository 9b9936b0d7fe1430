"""A full disk ends a sweep cleanly instead of tearing its records.

Before a sweep starts, each folder it writes (the study journal's, the MLflow store's, the
cache's) must have ``MIN_FREE_MB`` free, else one message and nothing is written. While it runs,
a reserve file of ``RESERVE_MB`` of its own sits on each of those disks (named after its
coordinator: sweeps sharing a cache folder each hold one). The first of its processes that meets
a full disk deletes the sweep's reserves: the space they free is what the bookkeeping needs to
fail the trials "disk full" and end their MLflow runs, which a disk with 0 bytes left could not
record, and their absence tells the sweep's other processes to stop; another sweep's reserves
are not its business. The next ``sweep run`` makes its reserves again once space is freed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
from pathlib import Path

from mmsearch.errors import MmsearchError, Problem, ValidationError

log = logging.getLogger("mmsearch.disk")
MIN_FREE_MB = 64.0
RESERVE_MB = 8
RESERVE_NAME = ".mmsearch-reserve"
RESERVE_ENV = "MMSEARCH_DISK_RESERVES"  # the reserve files, for the worker processes


class DiskFullError(MmsearchError):
    """A folder a sweep writes has too little space, before the start or after the disk filled."""

    @classmethod
    def of(cls, problems: list[Problem]) -> DiskFullError:
        return cls(str(ValidationError("not enough disk space", problems)))


def free_mb(path: Path) -> float:
    return shutil.disk_usage(_existing(path)).free / 2**20


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_free_space(places: dict[str, Path], need_mb: float = MIN_FREE_MB, needs: str = "a sweep needs") -> None:
    """Every problem at once: each folder (what it holds -> where) with less than ``need_mb`` free,
    counting the reserve of ours it already holds as free."""
    problems = []
    for what, folder in places.items():
        if shutil.disk_usage(_existing(folder)).total == 0:
            continue  # /proc, /sys: no disk at all; opening the store there says what is wrong
        free = free_mb(folder) + _reserve_mb(folder)
        if free < need_mb:
            problems.append(Problem(str(folder), f"{what}: {free:.1f} MB free; {needs} at least {need_mb:.0f} MB "
                                                 "there: free some space (`mmsearch cache prune`, old runs) and rerun"))
    if problems:
        raise DiskFullError.of(problems)


def _reserve_mb(folder: Path) -> float:
    """What this sweep's own reserve on ``folder``'s disk holds (it is free space to this sweep)."""
    here = _existing(folder)
    return sum(Path(n).stat().st_size / 2**20 for n in _own_reserves()
               if os.path.exists(n) and Path(n).parent == here)


def _own_reserves() -> list[str]:
    return [n for n in os.environ.get(RESERVE_ENV, "").split(os.pathsep) if n]


def _owner_alive(reserve: Path) -> bool:
    """Whether the coordinator that made a reserve still runs: it holds a lock on the reserve's
    ``.lock`` file for its life (a lock, not its PID: a coordinator in another PID namespace or on
    another machine sharing the folder has a PID this process cannot see; and a lock on the
    reserve itself would keep its space taken after a full disk deletes it)."""
    try:
        fd = os.open(_lock_of(reserve), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True  # held
    finally:
        os.close(fd)  # closing releases the lock we may have taken
    return False


def _lock_of(reserve: Path) -> Path:
    return reserve.with_name(reserve.name + ".lock")


# This process's sweep(s): each reserve's held lock file descriptor ("alive", to other sweeps).
_HELD: dict[str, int] = {}


def make_reserves(folders: list[Path]) -> list[Path]:
    """One reserve file per disk among ``folders``, this sweep's own (named after its coordinator,
    which holds a lock beside it while it runs): sweeps sharing a folder (the cache) each hold
    theirs, so the reserve one of them frees on its full disk never reads as a full disk to
    another. Reserves no process holds (their coordinator died: kill -9) are removed. Their paths
    go to the environment, so worker processes can free them too."""
    made, devices = [], set()
    token = f"{os.getpid()}-{os.urandom(3).hex()}"
    for folder in folders:
        folder = _existing(folder)
        device = folder.stat().st_dev
        if device in devices:
            continue
        devices.add(device)
        _remove_stale(folder)
        path = folder / f"{RESERVE_NAME}-{token}"
        try:
            _HELD[str(path)] = _held_lock(_lock_of(path))
            with open(path, "wb") as f:
                os.posix_fallocate(f.fileno(), 0, RESERVE_MB * 2**20)
        except OSError as exc:
            drop_reserves([*made, path])
            raise DiskFullError.of([Problem(str(folder), f"cannot keep {RESERVE_MB} MB in reserve there "
                                                     f"({exc.strerror}); free some space and rerun")]) from None
        made.append(path)
    os.environ[RESERVE_ENV] = os.pathsep.join(str(p) for p in made)
    return made


def _held_lock(path: Path) -> int:
    """A lock file created and locked by this process. Another sweep's clean-up may delete a lock
    file in the instant between its creation and its lock: then the locked inode is not the one
    at the path, and a new one is made."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _remove_stale(folder: Path) -> None:
    """Reserves (and their locks) no running coordinator holds; the one shared reserve of
    mmsearch before 0.3 (``.mmsearch-reserve``), which no one holds either."""
    for item in [*folder.glob(f"{RESERVE_NAME}-*"), folder / RESERVE_NAME]:
        reserve = item.with_name(item.name.removesuffix(".lock"))
        if item.is_file() and not _owner_alive(reserve):
            with contextlib.suppress(OSError):
                item.unlink()


def drop_reserves(made: list[Path]) -> None:
    """The end of a sweep: its reserves and their locks go (each run makes its own)."""
    for path in made:
        for item in (path, _lock_of(path)):
            with contextlib.suppress(OSError):
                item.unlink()
        fd = _HELD.pop(str(path), None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def release_reserves() -> bool:
    """Delete the reserve files (any process of the sweep may); True when this call freed one.
    All of them: an error says a disk is full, not always which one (a write may fail with a
    few MB still free), and a freed reserve is also how every process learns to stop."""
    freed = False
    for name in [n for n in _own_reserves() if os.path.exists(n)]:
        try:
            before = free_mb(Path(name).parent)
            os.unlink(name)
            freed = True
            log.error("a disk is full (%s had %.1f MB free): freed mmsearch's %d MB reserve there so the sweep "
                      "can record its trials' ends; stopping", os.path.dirname(name), before, RESERVE_MB)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.error("cannot free the disk reserve %s: %s", name, exc)
    return freed


def reserve_used() -> bool:
    """True once any process of the sweep freed one of its reserves: the disk filled; stop."""
    return any(not os.path.exists(n) for n in _own_reserves())


def is_disk_full(exc: BaseException | None) -> bool:
    """An error (or one it was raised from) saying the disk or the quota is full."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(exc)
        if "database or disk is full" in text or "No space left on device" in text:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def on_disk_full(exc: BaseException) -> bool:
    """Free the reserves when ``exc`` says the disk is full; True when it does."""
    if is_disk_full(exc):
        release_reserves()
        return True
    return False


def disk_full_error(places: dict[str, Path], detail: str) -> MmsearchError:
    low = {what: folder for what, folder in places.items() if free_mb(folder) < MIN_FREE_MB} or places
    where = "; ".join(f"{what} {folder}: {free_mb(folder):.1f} MB free" for what, folder in low.items())
    return DiskFullError(f"the disk filled up ({detail}). {where}. Free at least {MIN_FREE_MB:.0f} MB there and rerun "
                         "the same command: the trials it stopped are FAIL 'disk full' and only the missing cells run")
