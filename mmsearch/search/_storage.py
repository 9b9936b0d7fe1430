"""The Optuna storages a sweep can use, each with a study lock that holds wherever its
processes run. One contract for all of them (``tests/test_storages.py`` runs it against each):

* ``PATH`` (default ``./optuna-journal.log``): an Optuna journal file; several processes on one
  machine; the lock is a file lock beside it;
* ``postgresql://...``: Optuna's RDB storage, many machines; the lock is a PostgreSQL advisory
  lock, and creating the schema on a fresh database is serialised the same way;
* ``redis://...``: an Optuna journal in Redis, many machines; the lock is a Redis lock with a
  time-out (a holder that dies releases it).

SQLite is refused: Optuna's RDB storage relies on row locks that SQLite ignores, so several
processes sharing it lose or duplicate trials. Every failure to open a storage is an error that
names the (password-masked) URL and what went wrong, within seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
import time
import urllib.parse
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmsearch._net import masked
from mmsearch._registry import Registry
from mmsearch.errors import MmsearchError, first_line
from mmsearch.search._liveness import DEFAULT_GRACE_S

log = logging.getLogger("mmsearch.storage")
DEFAULT_JOURNAL = "optuna-journal.log"
STORAGE_ENV = "MMSEARCH_STORAGE"
CONNECT_TIMEOUT_S = 5
# Advisory-lock key under which one process at a time creates Optuna's tables on a fresh database.
SCHEMA_LOCK_KEY = 0x6D6D736561726368  # "mmsearch"


class StorageError(MmsearchError):
    """A study storage cannot be opened or used."""


@dataclass
class StudyStorage:
    """An opened Optuna storage and the study lock that goes with it."""

    url: str
    kind: str
    optuna: Any  # optuna.storages.BaseStorage
    _lock: Callable[[str], contextlib.AbstractContextManager[Any]]

    def lock(self, study_name: str) -> contextlib.AbstractContextManager[Any]:
        """Serialise claiming and enqueueing trials of ``study_name`` across every process that
        can reach this storage (on one machine for a journal file, on all for the others)."""
        return self._lock(study_name)

    def __str__(self) -> str:
        return masked(self.url)


def default_storage() -> str:
    # Beside ./mlruns; SQLite is not safe with several worker processes, a journal file is.
    return os.environ.get(STORAGE_ENV) or str(Path.cwd() / DEFAULT_JOURNAL)


def _key(study_name: str) -> int:
    return int.from_bytes(hashlib.sha256(study_name.encode()).digest()[:8], "big", signed=True)


STORAGE_KINDS: Registry[Callable[[str, float], StudyStorage]] = Registry("storage")  # (url, lock wait) -> storage


def open_storage(url: str | None = None, lock_wait_s: float = DEFAULT_GRACE_S) -> StudyStorage:
    """The storage ``url`` names (the default journal file without one). A wait for a study's
    lock gives up after ``lock_wait_s`` (the sweep's grace): a holder that never lets go ends the
    run incomplete instead of freezing every process of the sweep."""
    url = url or default_storage()
    scheme = urllib.parse.urlsplit(url).scheme.split("+")[0] if "://" in url else "journal"
    if scheme not in STORAGE_KINDS:
        raise StorageError(f"--storage {masked(url)}: unsupported scheme {scheme!r}; use a journal file path, "
                           "postgresql://USER@HOST/DB or redis://HOST:PORT")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return STORAGE_KINDS.get(scheme)(url, lock_wait_s)


@STORAGE_KINDS.register("journal")
def _journal(url: str, lock_wait_s: float) -> StudyStorage:
    from filelock import FileLock
    from optuna.storages import JournalStorage

    from mmsearch._waits import WaitBudget
    from mmsearch.errors import StudyLockStuck
    from mmsearch.search._journal import SafeJournalFile

    path = Path(url).expanduser().absolute()
    if path.is_dir():
        raise StorageError(f"--storage {url}: is a folder; give a journal file path such as {path / DEFAULT_JOURNAL}")
    # A journal is appended to, synced and locked beside itself: only an ordinary file on an
    # ordinary disk can be (/dev/null takes no fsync, /dev/full no write, /proc no lock file).
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if path.is_symlink():  # writing through it would create a file wherever it points
            raise StorageError(f"--storage {url}: a symbolic link to nothing ({os.readlink(path)}); give a journal "
                               "file path on an ordinary writable disk") from None
        mode = None
    except OSError as exc:
        raise StorageError(f"--storage {url}: cannot use it ({exc.strerror}); give a journal file path on an "
                           "ordinary writable disk") from None
    pseudo = next((str(p) for p in (Path("/proc"), Path("/sys"), Path("/dev")) if path.is_relative_to(p)
                   and not path.is_relative_to("/dev/shm")), None)
    if (mode is not None and not stat.S_ISREG(mode)) or pseudo:
        what = f"under {pseudo}, a kernel filesystem" if pseudo else "not an ordinary file"
        raise StorageError(f"--storage {url}: {what}; give a journal file path on an ordinary writable disk "
                           f"such as {Path.cwd() / DEFAULT_JOURNAL}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"--storage {url}: cannot create folder {path.parent} ({exc.strerror})") from None
    writable = os.access(path, os.W_OK) if path.exists() else os.access(path.parent, os.W_OK)
    if not writable:
        raise StorageError(f"--storage {url}: {path if path.exists() else path.parent} is not writable (the study "
                           f"journal goes there; run from a writable folder or pass --storage)")
    if not path.exists():
        # os.access says yes to root everywhere, /proc included: only creating the file tells.
        try:
            path.touch()
        except OSError as exc:
            raise StorageError(f"--storage {url}: cannot create the journal file {path} ({exc.strerror}); "
                               "give a path on an ordinary writable disk") from None

    _looks_like_a_journal(path, url)

    # One lock file per study (studies in one journal do not wait for each other), all in one
    # hidden folder beside the journal rather than one more file in the user's folder per study.
    locks = path.with_name(f".{path.name}.locks")

    budget = WaitBudget(StudyLockStuck)  # shared by the journal's lock and the study locks: one clean-up deadline

    @contextlib.contextmanager
    def lock(study_name: str) -> Iterator[None]:
        locks.mkdir(exist_ok=True)
        file_lock = FileLock(str(locks / f"{hashlib.sha1(study_name.encode()).hexdigest()[:8]}.lock"))
        started = time.monotonic()
        while not _try(file_lock):
            budget.check(started, lock_wait_s, lambda: f"the study lock {file_lock.lock_file} (held by another process "
                                                     "of this sweep that does not let go; a stopped one continues after "
                                                     "`kill -CONT PID`). Nothing is lost: rerun the same command")
        try:
            yield
        finally:
            file_lock.release()

    return StudyStorage(str(path), "journal", JournalStorage(SafeJournalFile(str(path), lock_wait_s, budget)), lock)


def _try(file_lock: Any) -> bool:
    from filelock import Timeout

    try:
        file_lock.acquire(timeout=0.2)
    except Timeout:
        return False
    return True


def _looks_like_a_journal(path: Path, url: str) -> None:
    """An existing, non-empty file must begin as Optuna's journal does (a JSON object per line):
    anything else (another file given by mistake, junk, gigabytes of zeros) is refused before it
    is read whole, or "repaired" as a torn last line and written to."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head and not head.lstrip(b" \t").startswith(b'{"op_code"'):
        raise StorageError(f"--storage {url}: not an Optuna journal (it begins {head[:16]!r}, a journal begins "
                           '{"op_code"); give a new file name, or the journal a sweep wrote')


@STORAGE_KINDS.register("postgresql")
def _postgresql(url: str, lock_wait_s: float) -> StudyStorage:
    import optuna
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool,
                                          connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
    except (ImportError, sqlalchemy.exc.ArgumentError) as exc:  # postgresql+psycopg2:// without psycopg2
        driver = urllib.parse.urlsplit(url).scheme
        raise StorageError(f"--storage {masked(url)}: cannot use the driver of {driver}:// ({exc}); write "
                           "postgresql://USER@HOST/DB (psycopg 3, installed with mmsearch[postgres]) or install "
                           "that driver") from None
    try:
        # Three processes creating Optuna's tables at once on a fresh database race on
        # alembic_version; one at a time, the others find the tables made.
        with _session_lock(engine, SCHEMA_LOCK_KEY, reconnect=False):  # unreachable at the start: say so now
            storage = optuna.storages.RDBStorage(url, engine_kwargs={
                "pool_pre_ping": True, "connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}})
    except sqlalchemy.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise StorageError(f"--storage {masked(url)}: cannot use the PostgreSQL database ({reason})") from None
    from optuna.storages._cached_storage import _CachedStorage

    return StudyStorage(url, "postgresql", _optuna_storage_class()(_CachedStorage(storage), masked(url)),
                        lambda study_name: _session_lock(engine, _key(study_name), masked(url)))


# -- surviving a lost connection ------------------------------------------------------------------
RECONNECT_FOR_S = 600.0  # how long a storage call keeps retrying a database that went away
_CONNECTION_WORDS = ("terminating connection", "server closed the connection", "connection refused",
                     "could not connect", "connection is closed", "consuming input failed", "ssl syscall",
                     "connection timed out", "the database system is starting up", "the database system is shutting down",
                     "connection reset", "broken pipe", "no connection to the server", "connection failed")


def is_connection_error(exc: BaseException | None) -> bool:
    """An error (or one it was raised from) that says the connection to the database was lost or
    refused, not that a statement was wrong."""
    seen = 0
    while exc is not None and seen < 10:
        if getattr(exc, "connection_invalidated", False):
            return True
        text = str(exc).lower()
        if any(word in text for word in _CONNECTION_WORDS):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


class _Outage:
    """One warning when the connection is lost, one when it is back (per process and storage)."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.since: float | None = None

    def retry(self, call: Callable[[], Any], what: str) -> Any:
        delay = 0.25
        while True:
            try:
                result = call()
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                now = time.monotonic()
                if self.since is None:
                    self.since = now
                    log.warning("lost the connection to PostgreSQL %s (%s); reconnecting and retrying for up to "
                                "%.0f s", self.where, first_line(getattr(exc, "orig", None) or exc.__cause__ or exc, 200),
                                RECONNECT_FOR_S)
                elif now - self.since > RECONNECT_FOR_S:
                    raise StorageError(f"--storage {self.where}: lost the connection to PostgreSQL for "
                                       f"{now - self.since:.0f} s ({what}); rerun the command once it is back") from exc
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if self.since is not None:
                log.warning("reconnected to PostgreSQL %s after %.0f s", self.where, time.monotonic() - self.since)
                self.since = None
            return result


class Reconnecting:
    """An Optuna storage whose every call survives a lost database connection: it reconnects
    and retries with backoff (Optuna's own RDB storage fails the call, with a misleading
    ``StorageInternalError``, and the trial with it)."""

    def __init__(self, inner: Any, where: str) -> None:
        self._inner, self._outage = inner, _Outage(where)

    def __getattr__(self, name: str) -> Any:
        if name in ("_inner", "_outage"):  # not set yet (unpickling, copying): no recursion
            raise AttributeError(name)
        attr = getattr(self._inner, name)
        if name.startswith("_") or not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._outage.retry(lambda: attr(*args, **kwargs), name)

        return call


def _forward(name: str) -> Callable[..., Any]:
    def method(self: Reconnecting, *args: Any, **kwargs: Any) -> Any:
        return self.__getattr__(name)(*args, **kwargs)

    method.__name__ = name
    return method


def _optuna_storage_class() -> type:
    """``Reconnecting`` as an Optuna ``BaseStorage`` (Optuna checks the type), its abstract
    methods all forwarded through ``__getattr__``."""
    from optuna.storages import BaseStorage

    names = [n for n in dir(BaseStorage) if not n.startswith("_") and callable(getattr(BaseStorage, n))]
    body = {n: _forward(n) for n in names}
    cls = type("ReconnectingStorage", (Reconnecting, BaseStorage), body)
    cls.__abstractmethods__ = frozenset()
    return cls


@contextlib.contextmanager
def _session_lock(engine: Any, key: int, where: str = "", reconnect: bool = True) -> Iterator[None]:
    """A PostgreSQL advisory lock held by a session of its own: a holder that dies releases it.
    A connection lost while taking it is retried; one lost while holding it took the lock along
    (the server ends the session), so releasing it is then nothing to do."""
    import sqlalchemy

    outage = _Outage(where)

    def take() -> Any:
        conn = engine.connect()
        try:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
        except BaseException:
            conn.close()
            raise
        return conn

    conn = outage.retry(take, "taking the study lock") if reconnect else take()
    try:
        yield
    finally:
        try:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        except sqlalchemy.exc.SQLAlchemyError as exc:
            if not is_connection_error(exc):
                raise
        finally:
            conn.close()


@STORAGE_KINDS.register("redis")
@STORAGE_KINDS.register("rediss")
def _redis(url: str, lock_wait_s: float) -> StudyStorage:
    try:
        import redis
    except ImportError:
        raise StorageError(f"--storage {masked(url)}: the Redis client is not installed "
                           "(pip install 'mmsearch[redis]')") from None
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalRedisBackend

    client = redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S)
    try:
        client.ping()
        with warnings.catch_warnings():  # "experimental" in Optuna 5; the contract tests cover it here
            warnings.simplefilter("ignore")
            storage = JournalStorage(JournalRedisBackend(url))
    except redis.RedisError as exc:
        raise StorageError(f"--storage {masked(url)}: cannot use the Redis server ({exc})") from None

    def lock(study_name: str) -> Any:
        # The time-out frees the lock of a holder that died; the sections it guards take well
        # under a second, so a live holder never loses it.
        return client.lock(f"mmsearch:study-lock:{study_name}", timeout=60, blocking_timeout=None)

    return StudyStorage(url, "redis", storage, lock)


@STORAGE_KINDS.register("sqlite")
def _sqlite(url: str, lock_wait_s: float) -> StudyStorage:
    raise StorageError(f"--storage {url}: SQLite is not safe for a sweep's several processes (Optuna's RDB storage "
                       "relies on row locks SQLite ignores, so trials get lost or duplicated); use a journal file "
                       f"(--storage ./{DEFAULT_JOURNAL}) on one machine, or postgresql:// or redis:// across machines")
