"""Content-addressed, process-safe disk cache.

Keys are hashes of JSON-able descriptions of everything a value depends on. A file lock per
key makes concurrent workers wait for the first builder instead of all building the same
artifact; values are written to a temporary name and renamed so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import joblib

from mmsearch._paths import cache_dir

log = logging.getLogger("mmsearch.cache")
T = TypeVar("T")


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hash of a JSON-able object that is identical across processes and machines."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def atomic_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.{os.getpid()}.tmp")


def cached_joblib(kind: str, key: Any, build: Callable[[], T], what: str = "") -> T:
    """Return the cached value for ``key`` or build, store and return it."""
    digest = stable_hash(key)
    folder = cache_dir(kind)
    final = folder / f"{digest}.joblib"
    if final.exists():
        log.info("cache hit: %s %s", kind, what or digest)
        return joblib.load(final)
    with file_lock(folder / f"{digest}.lock"):
        if final.exists():
            log.info("cache hit: %s %s", kind, what or digest)
            return joblib.load(final)
        log.info("cache miss: %s %s, building", kind, what or digest)
        value = build()
        tmp = atomic_path(final)
        joblib.dump(value, tmp)
        os.replace(tmp, final)
        return value
