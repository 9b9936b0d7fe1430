"""Loading, overriding and validating experiment configs. Every problem is reported at once."""

from __future__ import annotations

import copy
import dataclasses
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from mmsearch._files import named_yaml, yaml_files
from mmsearch.config._schema import ExperimentConfig
from mmsearch.errors import ConfigError, Problem

T = TypeVar("T")
EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"


def _is_optional(tp: Any) -> tuple[bool, Any]:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def from_dict(cls: type[T], data: Mapping[str, Any], where: str, problems: list[Problem], prefix: str = "") -> T:
    """Build a dataclass from a mapping, collecting type and unknown-key problems."""
    hints = get_type_hints(cls)
    fields = {fl.name: fl for fl in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in fields:
            problems.append(Problem(f"{where}: {path}", f"unknown key; valid keys here: {', '.join(fields)}"))
            continue
        kwargs[key] = _coerce(hints[key], value, where, path, problems)
    return cls(**{k: v for k, v in kwargs.items() if v is not _BAD})


_BAD = object()


def _coerce(tp: Any, value: Any, where: str, path: str, problems: list[Problem]) -> Any:
    optional, inner = _is_optional(tp)
    if value is None:
        if optional or tp is Any:
            return None
        problems.append(Problem(f"{where}: {path}", f"null is not allowed; expected {_type_name(tp)}"))
        return _BAD
    if tp is Any:
        return value
    if dataclasses.is_dataclass(inner):
        if not isinstance(value, Mapping):
            problems.append(Problem(f"{where}: {path}", f"expected a mapping of {inner.__name__} keys, got {value!r}"))
            return _BAD
        return from_dict(inner, value, where, problems, prefix=f"{path}.")
    if inner is bool:
        if isinstance(value, bool):
            return value
    elif inner is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif inner is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif inner is str:
        if isinstance(value, str):
            return value
    else:
        return value
    problems.append(Problem(f"{where}: {path}", f"{value!r} is not a valid {_type_name(tp)}"))
    return _BAD


def _type_name(tp: Any) -> str:
    optional, inner = _is_optional(tp)
    name = getattr(inner, "__name__", str(inner))
    return f"{name} or null" if optional else name


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


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


def experiment_path(name_or_path: str) -> Path:
    return named_yaml(name_or_path, EXPERIMENTS_DIR)


def available_experiments() -> list[str]:
    return [p.stem for p in yaml_files(EXPERIMENTS_DIR)]


def load_experiment(name_or_path: str, overrides: Mapping[str, Any] | None = None,
                    extra_problems: list[Problem] | None = None) -> ExperimentConfig:
    """Read an experiment file, apply dotted overrides, validate; raise listing every problem."""
    path = experiment_path(name_or_path)
    problems = list(extra_problems or [])
    if not path.exists():
        raise ConfigError(
            "experiment not found",
            [Problem(str(path), f"no such file; experiments available: {', '.join(available_experiments())} (or a path)")],
        )
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"experiment {path} is not valid YAML", [Problem(str(path), str(exc))]) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"experiment {path}", [Problem(str(path), "top level must be a mapping of sections")])
    raw.setdefault("name", path.stem)
    return build_experiment(raw, str(path), overrides, problems)


def build_experiment(raw: Mapping[str, Any], where: str, overrides: Mapping[str, Any] | None = None,
                     problems: list[Problem] | None = None) -> ExperimentConfig:
    problems = problems if problems is not None else []
    data = copy.deepcopy(dict(raw))
    for key, value in (overrides or {}).items():
        set_path(data, key, value)
    cfg = from_dict(ExperimentConfig, data, where, problems)
    from mmsearch.config._validate import validate

    problems += validate(cfg, where)
    if problems:
        raise ConfigError(f"invalid configuration {where}", problems)
    return cfg


def with_overrides(cfg: ExperimentConfig, overrides: Mapping[str, Any], where: str = "overrides") -> ExperimentConfig:
    return build_experiment(to_dict(cfg), where, overrides)


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


__all__ = ["from_dict", "to_dict", "flatten", "parse_overrides", "load_experiment", "build_experiment",
           "with_overrides", "dump_yaml", "available_experiments", "experiment_path"]
