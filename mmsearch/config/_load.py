"""Loading, overriding and describing experiment configs. Every problem is reported at once."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from mmsearch._files import named_yaml, yaml_files
from mmsearch._settings import problems_from
from mmsearch.config._schema import ExperimentConfig
from mmsearch.errors import ConfigError, Problem

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"


def to_dict(cfg: BaseModel) -> dict[str, Any]:
    return cfg.model_dump()


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and value and all(isinstance(k, str) for k in value):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            node[part] = nxt
        node = nxt
    node[parts[-1]] = value


def parse_overrides(items: Iterable[str], where: str = "--set") -> tuple[dict[str, Any], list[Problem]]:
    """``section.key=value`` strings (values parsed as YAML) into a dotted-key mapping."""
    out: dict[str, Any] = {}
    problems = []
    for item in items:
        if "=" not in item:
            problems.append(Problem(where, f"{item!r} is not key=value (example: --set text.optim.lr=0.01)"))
            continue
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            problems.append(Problem(where, f"{item!r}: value is not valid YAML ({exc})"))
    return out, problems


def request_overrides(sets: Iterable[str] = (), data: str | Path | None = None) -> dict[str, Any]:
    """The overrides a command line asks for: its ``--set`` values and ``--data`` as ``data.path``
    (an absolute path, so every process and machine reads the same folder). Raises listing every
    malformed ``--set``."""
    overrides, problems = parse_overrides(sets)
    if problems:
        raise ConfigError("invalid --set", problems)
    if data is not None:
        overrides["data.path"] = str(Path(data).expanduser().resolve())
    return overrides


def experiment_path(name_or_path: str) -> Path:
    return named_yaml(name_or_path, EXPERIMENTS_DIR)


def available_experiments() -> list[str]:
    return [p.stem for p in yaml_files(EXPERIMENTS_DIR)]


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError("experiment not found", [
            Problem(str(path), f"no such file; experiments available: {', '.join(available_experiments())} (or a path)")])
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"experiment {path} is not valid YAML", [Problem(str(path), str(exc))]) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"experiment {path}", [Problem(str(path), "top level must be a mapping of sections")])
    raw.setdefault("name", path.stem)
    return raw


def load_experiment(name_or_path: str, overrides: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """Read an experiment file, apply dotted overrides, validate; raise listing every problem."""
    path = experiment_path(name_or_path)
    return build_experiment(_read(path), str(path), overrides)


def build_experiment(raw: Mapping[str, Any], where: str, overrides: Mapping[str, Any] | None = None) -> ExperimentConfig:
    data = copy.deepcopy(dict(raw))
    for key, value in (overrides or {}).items():
        set_path(data, key, value)
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration {where}", problems_from(exc, where, ExperimentConfig)) from None


def with_overrides(cfg: ExperimentConfig, overrides: Mapping[str, Any], where: str = "overrides") -> ExperimentConfig:
    return build_experiment(to_dict(cfg), where, overrides)


def dump_yaml(cfg: BaseModel) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
