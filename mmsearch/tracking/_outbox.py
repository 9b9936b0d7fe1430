"""MLflow writes that wait on disk while the tracking server is away.

MLflow's REST client retries a down server for about four minutes (one warning per retry), then
raises, and a trial that was only logging fails with it. Here, a write to an ``http(s)`` server
that cannot reach it goes to this process's outbox file instead (one JSON line per write, in
order), training goes on, and a background thread sends the queued writes, in order, once the
server answers again. The outage is one line when it starts and one when it ends. A process
that ends while the server is still away leaves its file; the next mmsearch command that opens
the same server sends it (its owner's ``flock`` tells a live file from a left one).

A run created during an outage gets a placeholder id (``queued…``) that the queued writes use;
sending the queue creates the run and maps the placeholder to the real id (the run carries it
as tag ``mmsearch.queued_as``, so a later process can map it too).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("mmsearch.tracking")
PROBE_EVERY_S = 5.0
QUEUED_PREFIX = "queued"
QUEUED_TAG = "mmsearch.queued_as"
_UNREACHABLE_WORDS = ("max retries exceeded", "connection refused", "failed to establish a new connection",
                      "connection aborted", "connection reset", "read timed out", "connecttimeout", "bad gateway",
                      "service unavailable", "gateway timeout", "remotedisconnected", "name or service not known",
                      "temporary failure in name resolution", "api request to endpoint")


def unreachable(exc: BaseException | None) -> bool:
    """The error says the server could not be reached or answered 502/503/504, not that the
    request was wrong."""
    seen = 0
    while exc is not None and seen < 10:
        try:
            import requests

            if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
                return True
        except ImportError:  # pragma: no cover - requests comes with MLflow
            pass
        text = str(exc).lower()
        if any(w in text for w in _UNREACHABLE_WORDS) and "resource_does_not_exist" not in text:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def queued_id() -> str:
    return QUEUED_PREFIX + uuid.uuid4().hex[: 32 - len(QUEUED_PREFIX)]


class Outbox:
    """This process's queue of writes to one tracking server, and the thread that sends it."""

    def __init__(self, uri: str, folder: Path, apply: Callable[[str, dict[str, Any]], Any],
                 probe: Callable[[], None]) -> None:
        self.uri, self.folder, self._apply, self._probe = uri, folder, apply, probe
        self.path = folder / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        self.lock = threading.RLock()
        self.ids: dict[str, str] = {}  # placeholder -> real run id
        self.since: float | None = None  # when this outage began (monotonic)
        self._fd: int | None = None
        self._queued = 0
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        return self.since is not None

    # -- queueing ----------------------------------------------------------------------------
    def begin(self, exc: BaseException) -> None:
        if self.since is None:
            self.since = time.monotonic()
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            log.warning("MLflow tracking server %s unreachable (%s): queueing this process's MLflow writes in %s and "
                        "going on; they are sent when it answers again", self.uri, first, self.path)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._probe_loop, daemon=True, name="mmsearch-outbox")
                self._thread.start()

    def keep(self, folder: Path) -> str:
        """A copy of ``folder`` beside the queue, for a queued write that uploads it."""
        kept = self.folder / "files" / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        shutil.copytree(folder, kept)
        return str(kept)

    def forget(self, kept: str) -> None:
        """Remove a copy made by ``keep`` once its write is sent (a folder of the caller's stays)."""
        path = Path(kept)
        if path.parent == self.folder / "files":
            shutil.rmtree(path, ignore_errors=True)

    def queue(self, op: str, args: Mapping[str, Any]) -> None:
        if self._fd is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)  # ours while this process lives
        os.write(self._fd, (json.dumps({"op": op, "args": args}) + "\n").encode())
        os.fsync(self._fd)
        self._queued += 1

    # -- sending -----------------------------------------------------------------------------
    def _probe_loop(self) -> None:
        while self.active:
            time.sleep(PROBE_EVERY_S)
            try:
                self._probe()
            except Exception:
                continue
            with contextlib.suppress(Exception):
                self.flush()

    def flush(self) -> bool:
        """Send what is queued, in order; True when nothing is left. Stops at the first write the
        server cannot take yet (the rest stays, in order)."""
        with self.lock:
            if self._fd is None:
                self.since = None
                return True
            lines = Path(self.path).read_text().splitlines()
            sent = self._replay(lines, "this process")
            if sent < len(lines):
                self._rewrite(lines[sent:])
                return False
            self._close(remove=True)
            if self.since is not None:
                log.warning("MLflow tracking server %s is back after %.0f s: sent the %d queued write(s)", self.uri,
                            time.monotonic() - self.since, self._queued)
            self.since, self._queued = None, 0
            return True

    def _replay(self, lines: list[str], source: str) -> int:
        """Send queued writes in order; how many went before the first the server could not take
        (a write it refused for another reason is logged and skipped). The tracker maps a queued
        run id to the real one as it applies each write."""
        for sent, line in enumerate(lines):
            entry = json.loads(line)
            try:
                result = self._apply(entry["op"], entry["args"])
            except Exception as exc:
                if unreachable(exc):
                    return sent
                log.error("a queued MLflow write (%s) from %s was refused: %s", entry["op"], source, exc)
                continue
            if entry["op"] == "create_run":
                self.ids[entry["args"]["queued_as"]] = result
        return len(lines)

    def _rewrite(self, lines: list[str]) -> None:
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, "".join(line + "\n" for line in lines).encode())
        os.fsync(self._fd)

    def _close(self, remove: bool) -> None:
        if self._fd is not None:
            if remove:
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
            os.close(self._fd)
            self._fd = None

    def left_behind(self) -> list[Path]:
        """Queue files of processes that ended (a live owner holds its file's ``flock``)."""
        out = []
        for path in sorted(self.folder.glob("*.jsonl")) if self.folder.is_dir() else []:
            if path == self.path:
                continue
            with contextlib.suppress(OSError):
                fd = os.open(path, os.O_RDONLY)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    out.append(path)
                except BlockingIOError:
                    pass
                finally:
                    os.close(fd)  # closing drops the probe's lock
        return out

    def close(self, wait_s: float = 0.0) -> None:
        """At the end of a process: send what this process and ended ones queued, waiting up to
        ``wait_s`` for the server while anything is queued; what cannot be sent stays on disk for
        the next command."""
        deadline = time.monotonic() + wait_s
        while self.active or self.left_behind():
            try:
                self._probe()
                if self.flush():
                    self.send_left_behind()
                    if not self.left_behind():
                        return
            except Exception:
                pass
            if time.monotonic() >= deadline:
                break
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        if self.active:
            log.warning("MLflow tracking server %s still unreachable: %d write(s) stay queued in %s; the next mmsearch "
                        "command that uses this server sends them", self.uri, self._queued, self.path)
            self._close(remove=False)

    def send_left_behind(self) -> int:
        """Send the outbox files of processes that ended while the server was away."""
        sent = 0
        for path in sorted(self.folder.glob("*.jsonl")) if self.folder.is_dir() else []:
            if path == self.path:
                continue
            fd = os.open(path, os.O_RDWR)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its process lives and sends it itself
                lines = path.read_text().splitlines()
                done = self._replay(lines, path.name)
                sent += done
                if done < len(lines):
                    os.ftruncate(fd, 0)
                    os.write(fd, "".join(x + "\n" for x in lines[done:]).encode())
                    return sent
                path.unlink()
            finally:
                os.close(fd)
        if sent:
            log.warning("sent %d MLflow write(s) that ended processes had queued while %s was away", sent, self.uri)
        return sent

    def _find_queued(self, placeholder: str) -> str:
        if placeholder in self.ids:
            return self.ids[placeholder]
        found = self._apply("find_queued", {"queued_as": placeholder})
        if found:
            self.ids[placeholder] = found
        return found or placeholder
