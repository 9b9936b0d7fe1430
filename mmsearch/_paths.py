"""Where mmsearch keeps its caches, and the standard download caches it reads.

Everything derived (decoded images, word-vector matrices, stage features, the demo dataset)
lives under one cache root so that every run and worker process shares it and one command
wipes it.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "MMSEARCH_CACHE_DIR"
OFFLINE_ENV = "MMSEARCH_OFFLINE"


def cache_root() -> Path:
    root = os.environ.get(CACHE_ENV)
    path = Path(root) if root else Path.home() / ".cache" / "mmsearch"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir(kind: str) -> Path:
    path = cache_root() / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def offline_forced() -> bool:
    return os.environ.get(OFFLINE_ENV, "").lower() in {"1", "true", "yes"}
