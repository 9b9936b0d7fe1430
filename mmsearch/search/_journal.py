"""The journal file under a sweep's study, made to survive what Optuna's own backend does not:

* **No torn lines.** A write cut short (a full disk, a quota) is undone at once: the file is
  truncated back to where the write began, so the journal always ends at a complete line. A
  tail torn by a process killed mid-write is set aside (``<journal>.torn``) before the next
  write, never appended to. A journal already broken that way (a torn line with later lines
  joined onto it, as Optuna leaves it) is repaired when read: the complete operation joined
  onto the torn one is kept, the torn bytes are set aside with a message, the rest is read.
* **A lock that is never taken away.** Optuna's symlink lock is forcibly released after 30 s,
  so a holder that was only stopped (SIGSTOP, a swapped-out laptop) resumes writing without it
  and fails (``did not possess lock``). Here the lock is ``flock`` on ``<journal>.flock`` (not
  Optuna's ``.lock``, which Optuna's own lock would delete): the kernel frees it when its holder
  dies, never while it lives. A stall is reported after 10 s, naming the holding process (its
  state, or that it runs where this machine cannot see) and how to end it; after the grace the
  waiter gives up (:class:`StudyLockStuck`, exit 3) rather than wait for ever, and Ctrl-C ends
  the wait at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import threading
import time
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal._file import BaseJournalFileLock

from mmsearch._disk import on_disk_full
from mmsearch._processes import ProcessIdentity, describe_holder, holder_advice
from mmsearch._waits import WaitBudget, report_due
from mmsearch.errors import StudyLockStuck
from mmsearch.search._liveness import DEFAULT_GRACE_S

if TYPE_CHECKING:
    from mmsearch.search._storage import StudyStorage

log = logging.getLogger("mmsearch.storage")
_OP = b'{"op_code"'


class FlockLock(BaseJournalFileLock):
    """An exclusive ``flock`` on ``path``, shared by the threads of a process one at a time.

    The wait for it ends three ways besides getting it: Ctrl-C (at once, even inside a block
    that holds interrupts off: nothing is written before the lock is taken), a holder that keeps
    it longer than ``give_up_s`` (:class:`StudyLockStuck`), and, in a process already stopping,
    after ``STOPPING_WAIT_S``: a clean-up that cannot write leaves its repair to the next run."""

    def __init__(self, path: str, give_up_s: float = DEFAULT_GRACE_S, budget: WaitBudget | None = None) -> None:
        self.path = path
        self.give_up_s = give_up_s
        self.budget = budget or WaitBudget(StudyLockStuck)
        self._thread_lock = threading.Lock()
        self._fd: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "give_up_s": self.give_up_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state.get("give_up_s", DEFAULT_GRACE_S))  # type: ignore[misc]

    def acquire(self) -> bool:
        started, reported = time.monotonic(), 0.0
        fd: int | None = None
        # Another thread of this process (the heartbeat) may be the one waiting on the holder:
        # wait for it the same bounded, interruptible way.
        while not self._thread_lock.acquire(timeout=0.1):
            reported = self._waited(started, reported, None)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    reported = self._waited(started, reported, fd)
                    time.sleep(0.01 if time.monotonic() - started < 1 else 0.1)
            if reported:
                log.warning("got the journal lock %s after %.0f s", self.path, time.monotonic() - started)
            with contextlib.suppress(OSError):  # who holds it, for whoever waits (a full disk: nobody is told)
                os.ftruncate(fd, 0)
                os.pwrite(fd, _holder_record(os.getpid()), 0)
            self._fd = fd
            return True
        except BaseException:
            if fd is not None:
                os.close(fd)
            self._thread_lock.release()
            raise

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        self._thread_lock.release()

    def _waited(self, started: float, reported: float, fd: int | None) -> float:
        """One turn of the wait: raise what ends it, report a stall now and then; returns when
        the stall was last reported."""
        waited = self.budget.check(started, self.give_up_s, lambda: (
            f"the study journal's lock {self.path}, held by {self._holder(fd)}. Nothing is lost: "
            f"{holder_advice(self._holder_identity(fd))}, then rerun the same command to resume"))
        if report_due(waited, reported):
            log.warning("waiting %.0f s for the study journal's lock %s, held by %s: %s; this process gives up after "
                        "%.0f s (--grace)", waited, self.path, self._holder(fd), holder_advice(self._holder_identity(fd)),
                        self.give_up_s)
            return waited
        return reported

    def _holder_identity(self, fd: int | None) -> ProcessIdentity | int | None:
        return _read_holder(self.path, fd)

    def _holder(self, fd: int | None) -> str:
        return describe_holder(self._holder_identity(fd))


def lock_holder(storage: StudyStorage) -> str:
    """Who holds the study journal's lock and how to free it ("held by ...: ..."), for a
    process that did not wait itself; where the storage is not a journal file, what to do."""
    if storage.kind != "journal":
        return "held by a process that does not let go. Nothing is lost: rerun the same command once it has"
    holder = _read_holder(storage.url + ".flock")
    return (f"held by {describe_holder(holder)}. Nothing is lost: {holder_advice(holder)}, then rerun the same command to "
            "resume")


@functools.cache
def _holder_record(pid: int) -> bytes:
    """What this process writes into the lock file it takes (once per process: every storage
    write takes the lock, and the identity reads /proc)."""
    return json.dumps(ProcessIdentity.current(pid).attr()).encode()


def _read_holder(path: str, fd: int | None = None) -> ProcessIdentity | int | None:
    """Who wrote the lock file last (its holder, while it is held)."""
    try:
        if fd is None:
            with open(path, "rb") as handle:
                text = handle.read(1024)
        else:
            text = os.pread(fd, 1024, 0)
    except OSError:
        return None
    return _parse_holder(text)


def _parse_holder(text: bytes) -> ProcessIdentity | int | None:
    """The holder's identity (this version writes it), a bare PID (earlier ones did), or None."""
    try:
        value = json.loads(text.decode() or "null")
    except (UnicodeDecodeError, ValueError):
        return None
    if isinstance(value, int) and value > 0:
        return value
    return ProcessIdentity.from_attr(value) if isinstance(value, dict) else None


class SafeJournalFile(JournalFileBackend):
    """Optuna's journal file backend with whole-line writes, torn-line repair and :class:`FlockLock`."""

    def __init__(self, path: str, give_up_s: float = DEFAULT_GRACE_S, budget: WaitBudget | None = None) -> None:
        super().__init__(path, lock_obj=FlockLock(path + ".flock", give_up_s, budget))
        self.torn_path = path + ".torn"
        with self._locked():
            self._set_aside_torn_tail()

    @contextlib.contextmanager
    def _locked(self) -> Generator[None, None, None]:
        self._lock.acquire()
        try:
            yield
        finally:
            self._lock.release()

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = ("\n".join(json.dumps(entry, separators=(",", ":")) for entry in logs) + "\n").encode()
        with self._locked():
            self._set_aside_torn_tail()
            fd = os.open(self._file_path, os.O_WRONLY | os.O_APPEND)
            try:
                start = os.fstat(fd).st_size
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                except OSError as exc:
                    # Undo the partial line: the journal ends at a complete line, whatever happens next.
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, start)
                    on_disk_full(exc)  # the space the clean-up after this error needs
                    raise
            finally:
                os.close(fd)

    def read_logs(self, log_number_from: int) -> Generator[dict[str, Any], None, None]:
        number = log_number_from
        for _ in range(100):  # each pass repairs one broken line
            try:
                for entry in super().read_logs(number):
                    yield entry
                    number += 1
                return
            except ValueError:  # json.JSONDecodeError included: a line that is not one operation
                with self._locked():
                    if not self._repair():
                        raise
                self._log_number_offset = {0: 0}
        raise RuntimeError(f"{self._file_path}: too many broken lines to repair")

    # -- repairs (under the lock) ---------------------------------------------------------------
    def _set_aside_torn_tail(self) -> None:
        with open(self._file_path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            # Find the start of the unterminated last line.
            block, end = 65536, size
            while True:
                start = max(0, end - block)
                f.seek(start)
                chunk = f.read(end - start)
                cut = chunk.rfind(b"\n")
                if cut >= 0 or start == 0:
                    line_start = start + cut + 1 if cut >= 0 else 0
                    break
                end = start
            f.seek(line_start)
            torn = f.read()
        self._keep_aside(torn, "an unterminated last line (a write cut short)")
        os.truncate(self._file_path, line_start)

    def _repair(self) -> bool:
        """Replace each line that is not one JSON operation by the complete operation joined
        onto its end (when there is one); set the torn bytes aside. True when anything changed."""
        raw = Path(self._file_path).read_bytes()
        lines = raw.split(b"\n")
        tail = lines.pop()  # b"" when the file ends with a newline
        kept, torn, changed = [], [], False
        for line in lines:
            if _parses(line):
                kept.append(line)
                continue
            changed = True
            suffix = _joined_operation(line)
            if suffix is not None:
                kept.append(line[len(line) - len(suffix):])
                torn.append(line[: len(line) - len(suffix)])
            else:
                torn.append(line)
        if not changed:
            return False
        self._keep_aside(b"\n".join(torn), f"{len(torn)} torn line(s) in the middle")
        tmp = self._file_path + ".repair"
        with open(tmp, "wb") as f:
            f.write(b"".join(line + b"\n" for line in kept) + tail)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._file_path)
        return True

    def _keep_aside(self, data: bytes, what: str) -> None:
        try:
            with open(self.torn_path, "ab") as f:
                f.write(data + b"\n")
            where = f"set aside in {self.torn_path}"
        except OSError as exc:  # a full disk: the torn bytes were never a complete operation anyway
            where = f"dropped ({exc.strerror})"
        log.warning("study journal %s: %s, %d byte(s), %s; the rest of the journal is read", self._file_path, what,
                    len(data), where)


def _parses(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _joined_operation(line: bytes) -> bytes | None:
    """The longest complete operation at the end of a torn line (a later write appended onto it)."""
    at = line.find(_OP, 1)
    while at > 0:
        if _parses(line[at:]):
            return line[at:]
        at = line.find(_OP, at + 1)
    return None
