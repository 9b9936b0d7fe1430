"""Optuna storages: a journal file on one machine (safe for several processes), an RDB URL
(PostgreSQL) for many; and a study-wide lock so that enqueueing and asking are exact."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock

DEFAULT_JOURNAL = "optuna-journal.log"


def default_storage() -> str:
    # Beside ./mlruns; SQLite is not safe with several worker processes, a journal file is.
    return os.environ.get("MMSEARCH_STORAGE") or str(Path.cwd() / DEFAULT_JOURNAL)


def open_storage(url: str | None) -> Any:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    url = url or default_storage()
    if "://" not in url:
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(url))
    if url.startswith("redis://"):
        from optuna.storages.journal import JournalRedisBackend

        return JournalStorage(JournalRedisBackend(url))
    return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})


@contextlib.contextmanager
def study_lock(url: str | None, study_name: str) -> Iterator[None]:
    """Serialise enqueue/ask across processes (and, with PostgreSQL, machines)."""
    url = url or default_storage()
    if url.startswith("postgresql"):
        import sqlalchemy

        key = int.from_bytes(hashlib.sha256(study_name.encode()).digest()[:8], "big", signed=True)
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        engine.dispose()
        return
    if "://" not in url:
        lock = Path(url).with_name(Path(url).name + f".{hashlib.sha1(study_name.encode()).hexdigest()[:8]}.lock")
    elif url.startswith("sqlite:///"):
        lock = Path(url[len("sqlite:///"):] + ".lock")
    else:
        lock = Path.cwd() / f".mmsearch-{hashlib.sha1((url + study_name).encode()).hexdigest()[:8]}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock)):
        yield
