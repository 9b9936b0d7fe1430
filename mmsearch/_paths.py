"""Where mmsearch keeps its caches, and the standard download caches it reads.

Everything derived (decoded images, word-vector matrices, stage features, the demo dataset)
lives under one cache root so that every run and worker process shares it and one command
wipes it. The standard caches (``TORCH_HOME``, ``GENSIM_DATA_DIR``, ``NLTK_DATA``) are
resolved to absolute paths once, when mmsearch is imported: a relative value such as
``../shared/cache/torch`` means the folder it names from where the command was started, also
for the worker processes and subprocesses that run elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "MMSEARCH_CACHE_DIR"
OFFLINE_ENV = "MMSEARCH_OFFLINE"
# Variables holding one folder, and those holding a list of folders (os.pathsep-separated).
FOLDER_VARIABLES = ("TORCH_HOME", "GENSIM_DATA_DIR", CACHE_ENV)
FOLDER_LIST_VARIABLES = ("NLTK_DATA",)


def absolutize_environment(environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Turn relative cache folders in ``environ`` into absolute ones (in place)."""
    for name in FOLDER_VARIABLES:
        value = environ.get(name)
        if value:
            environ[name] = os.path.abspath(os.path.expanduser(value))
    for name in FOLDER_LIST_VARIABLES:
        value = environ.get(name)
        if value:
            environ[name] = os.pathsep.join(os.path.abspath(os.path.expanduser(p)) if p else p
                                            for p in value.split(os.pathsep))


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
