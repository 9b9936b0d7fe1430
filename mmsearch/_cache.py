"""Content-addressed, process-safe disk cache.

Keys are hashes of JSON-able descriptions of everything a value depends on. Every cached value
(decoded images, word vectors, embedding matrices, stage weights and features, the demo data)
goes through :func:`cached`: one process builds it under a file lock (the maintained
``filelock`` package), into a temporary path that is renamed into place when complete, so
concurrent workers wait for the first builder and no reader ever sees half a value.

What happened (a build or a hit, per kind) is counted in a ``Counter`` the caller passes in,
so a test can prove a cache was reused by counting, not by timing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

from mmsearch._paths import cache_dir

log = logging.getLogger("mmsearch.cache")


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hash of a JSON-able object that is identical across processes and machines."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def entry(kind: str, key: Any, suffix: str = "") -> Path:
    """Where the value of ``key`` lives in the ``kind`` cache (a file or a folder)."""
    digest = key if isinstance(key, str) else stable_hash(key)
    return cache_dir(kind) / f"{digest}{suffix}"


def cached(target: Path, write: Callable[[Path], None], *, kind: str, what: str = "",
           events: Counter[str] | None = None) -> Path:
    """Return ``target``, first building it with ``write(tmp)`` unless it exists.

    ``write`` creates ``tmp`` (a file or a folder); it is renamed onto ``target`` only when
    ``write`` returns, and removed when it raises.
    """
    label = what or target.name
    if target.exists():
        log.debug("cache hit: %s", label)
        _count(events, f"hit:{kind}")
        return target
    with FileLock(str(target.with_name(target.name + ".lock"))):
        if target.exists():
            log.debug("cache hit: %s", label)
            _count(events, f"hit:{kind}")
            return target
        log.info("cache miss: %s, building", label)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            write(tmp)
            os.replace(tmp, target)
        except BaseException:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            elif tmp.exists():
                tmp.unlink()
            raise
        _count(events, f"build:{kind}")
    return target


def _count(events: Counter[str] | None, name: str) -> None:
    if events is not None:
        events[name] += 1
