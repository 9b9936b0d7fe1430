"""Named YAML files (experiments/, sweeps/): a bare name or a path to a file."""

from __future__ import annotations

from pathlib import Path


def named_yaml(name_or_path: str, folder: Path) -> Path:
    """``cpu`` means ``folder/cpu.yaml``; anything that looks like a file path is used as given."""
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        return path
    return folder / f"{name_or_path}.yaml"


def yaml_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.yaml")) if folder.exists() else []
