"""Named YAML files (experiments/, sweeps/): a bare name or a path to a file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from mmsearch.errors import ConfigError, Problem


def named_yaml(name_or_path: str, folder: Path) -> Path:
    """``cpu`` means ``folder/cpu.yaml``; anything that looks like a file path is used as given."""
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        return path
    return folder / f"{name_or_path}.yaml"


def yaml_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.yaml")) if folder.exists() else []


def read_mapping(path: Path, what: str, available: Sequence[str] = ()) -> dict[str, Any]:
    """A YAML file whose top level is a mapping, or a ConfigError naming the file and what is wrong."""
    if not path.exists():
        listing = f"; available: {', '.join(available)} (or a path)" if available else ""
        raise ConfigError(f"{what} not found", [Problem(str(path), f"no such {what}{listing}")])
    if not path.is_file():
        raise ConfigError(f"{what} {path}", [Problem(str(path), f"is a folder, not a {what} file; give a YAML file "
                                                                 f"or a {what} name")])
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path}", [Problem(str(path), f"not UTF-8 text (byte {exc.start})")]) from None
    except OSError as exc:
        raise ConfigError(f"{what} {path}", [Problem(str(path), f"cannot read it ({exc.strerror})")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML", [Problem(str(path), str(exc))]) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {path}", [Problem(str(path), "top level must be a mapping")])
    return raw
