"""Named YAML files (experiments/, sweeps/): a bare name or a path to a file.

The shipped folders (``sweeps/``, ``experiments/``, ``findings/``) are package data of
``mmsearch`` (``mmsearch/_shipped/``, links to the checkout's top-level folders), read through
``importlib.resources``: the same path in a source tree, an editable install, a wheel in a venv,
``pip install --user`` and ``pip install --target``. A ``sweeps/`` or ``experiments/`` folder in
the working directory adds to them (a file there of a shipped name takes its place).
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from mmsearch.errors import ConfigError, Problem


def bundled(name: str) -> Path:
    """A shipped folder (``sweeps``, ``experiments``, ``findings``), wherever mmsearch is installed."""
    # A package on a file system (every way pip installs one) gives a real path; its links resolve
    # to the checkout's folders in a source tree and an editable install.
    return Path(str(importlib.resources.files("mmsearch") / "_shipped" / name)).resolve()


def search_path(name: str) -> list[Path]:
    """Where named files of a kind are looked for, first match wins: the working directory's
    folder of that name, then the shipped one."""
    own, shipped = Path.cwd() / name, bundled(name)
    return [own, shipped] if own.is_dir() and own.resolve() != shipped.resolve() else [shipped]


def named_yaml(name_or_path: str, folder: Path | Sequence[Path]) -> Path:
    """``cpu`` means ``cpu.yaml`` in the first folder that has it; anything that looks like a
    file path is used as given."""
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        return path
    folders = [folder] if isinstance(folder, Path) else list(folder)
    for f in folders:
        if (f / f"{name_or_path}.yaml").exists():
            return f / f"{name_or_path}.yaml"
    return folders[-1] / f"{name_or_path}.yaml"


def yaml_files(folder: Path | Sequence[Path]) -> list[Path]:
    """The YAML files of the folders, one per name (the first folder's wins), sorted by name."""
    found: dict[str, Path] = {}
    for f in [folder] if isinstance(folder, Path) else folder:
        for path in sorted(f.glob("*.yaml")) if f.exists() else []:
            found.setdefault(path.stem, path)
    return [found[k] for k in sorted(found)]


MAX_CONFIG_BYTES = 1_000_000
MAX_CONFIG_VALUES = 100_000  # values once YAML's aliases are expanded: a few KB of anchors can name billions


def _bounded(raw: Any, path: Path) -> None:
    """Refuse a document that expands (through ``&anchor``/``*alias``) to more values than any
    config has: safe_load shares the aliased objects, but every later walk (validation, hashing,
    printing) would visit each expansion. The count stops at the limit, so this costs at most it."""
    seen, todo = 0, [raw]
    while todo:
        item = todo.pop()
        seen += 1
        if seen > MAX_CONFIG_VALUES:
            raise ConfigError(f"config {path}", [Problem(str(path), (
                f"expands to more than {MAX_CONFIG_VALUES:,} values (YAML anchors and aliases, &name / *name, "
                "repeat what they name); write the values out, or fewer of them"))])
        if isinstance(item, dict):
            todo += item.keys()
            todo += item.values()
        elif isinstance(item, list):
            todo += item


def read_mapping(path: Path, what: str, available: Sequence[str] = ()) -> dict[str, Any]:
    """A YAML file whose top level is a mapping, or a ConfigError naming the file and what is wrong."""
    if not path.exists():
        listing = f"; available: {', '.join(available)} (or a path)" if available else ""
        raise ConfigError(f"{what} not found", [Problem(str(path), f"no such {what}{listing}")])
    if not path.is_file():
        raise ConfigError(f"{what} {path}", [Problem(str(path), f"is a folder, not a {what} file; give a YAML file "
                                                                 f"or a {what} name")])
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{what} {path}", [Problem(str(path), f"{size:,} bytes; a {what} file is at most "
                                                                f"{MAX_CONFIG_BYTES:,}")])
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        _bounded(raw, path)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path}", [Problem(str(path), f"not UTF-8 text (byte {exc.start})")]) from None
    except OSError as exc:
        raise ConfigError(f"{what} {path}", [Problem(str(path), f"cannot read it ({exc.strerror})")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML", [Problem(str(path), str(exc))]) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {path}", [Problem(str(path), "top level must be a mapping")])
    return raw
