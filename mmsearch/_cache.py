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
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from mmsearch._paths import cache_dir, cache_root

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
        _touch(target)
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


def _touch(target: Path) -> None:
    """Mark an entry as used now (its mtime), which ``prune`` reads as its last use."""
    try:
        os.utime(target)
    except OSError:  # a read-only cache is still a cache
        pass


@dataclass
class CacheUsage:
    kind: str
    entries: int
    bytes: int
    folder: Path


def _entries(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if not p.name.endswith(".lock") and not p.name.startswith(".")]


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def cache_usage() -> list[CacheUsage]:
    """Each kind of cached value under the cache root: how many entries, how many bytes."""
    root = cache_root()
    return [CacheUsage(d.name, len(entries := _entries(d)), sum(_size(e) for e in entries), d)
            for d in sorted(root.iterdir()) if d.is_dir()]


def prune(kinds: list[str] | None, unused_days: float, dry_run: bool = False) -> tuple[int, int]:
    """Remove entries of ``kinds`` (all when None) not used for ``unused_days`` days; returns
    (entries, bytes). An entry another process is building is never touched: builds happen in a
    temporary path under the entry's lock, and a removed entry is simply built again when needed."""
    cutoff = time.time() - unused_days * 86400
    removed = freed = 0
    for usage in cache_usage():
        if kinds and usage.kind not in kinds:
            continue
        for path in _entries(usage.folder):
            if path.stat().st_mtime > cutoff:
                continue
            with FileLock(str(path.with_name(path.name + ".lock"))):
                size = _size(path)
                if not dry_run:
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
            if not dry_run:
                path.with_name(path.name + ".lock").unlink(missing_ok=True)
            removed, freed = removed + 1, freed + size
    return removed, freed


def _count(events: Counter[str] | None, name: str) -> None:
    if events is not None:
        events[name] += 1
