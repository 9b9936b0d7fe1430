"""Loading, overriding and describing experiment configs. Every problem is reported at once."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from mmsearch._files import bundled, named_yaml, read_mapping, search_path, yaml_files
from mmsearch._settings import problems_from
from mmsearch.config._schema import ExperimentConfig
from mmsearch.errors import ConfigError, Problem

EXPERIMENTS_DIR = bundled("experiments")
REFERENCE = "paper"  # the experiment every other profile is a deviation from


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
    return named_yaml(name_or_path, search_path("experiments"))


def available_experiments() -> list[str]:
    return [p.stem for p in yaml_files(search_path("experiments"))]


def _read(path: Path) -> dict[str, Any]:
    raw = read_mapping(path, "experiment", available_experiments())
    raw.setdefault("name", path.stem)
    return raw


def load_experiment(name_or_path: str, overrides: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """Read an experiment file, apply the command line's dotted overrides (``--set``), validate;
    raise listing every problem, each blamed on the file or on the ``--set`` that caused it."""
    path = experiment_path(name_or_path)
    return build_experiment(_read(path), str(path), overrides, overrides_from="--set")


def build_experiment(raw: Mapping[str, Any], where: str, overrides: Mapping[str, Any] | None = None,
                     overrides_from: str | None = None) -> ExperimentConfig:
    """``overrides_from``: what to blame a problem with an overridden key on (``--set``); by
    default ``where``, whose overrides they are (a sweep level's, say)."""
    data = copy.deepcopy(dict(raw))
    for key, value in (overrides or {}).items():
        set_path(data, key, value)
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        problems = problems_from(exc, where, ExperimentConfig)
        if overrides_from:
            problems = [_blame(p, where, overrides or {}, overrides_from) for p in problems]
        raise ConfigError(f"invalid configuration {where}", problems) from None


def _blame(problem: Problem, where: str, overrides: Mapping[str, Any], source: str) -> Problem:
    key = problem.where.removeprefix(f"{where}: ")
    ours = next((k for k in overrides if k == key or key.startswith(k + ".") or k.startswith(key + ".")), None)
    if ours is None or key == problem.where:
        return problem
    return Problem(f"{source} {ours}" if ours == key else f"{source} {ours} ({key})", problem.message)


def with_overrides(cfg: ExperimentConfig, overrides: Mapping[str, Any], where: str = "overrides") -> ExperimentConfig:
    return build_experiment(to_dict(cfg), where, overrides)


def dump_yaml(cfg: BaseModel) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


# -- profiles: what an experiment changes from the paper's -----------------------------------------
@dataclass(frozen=True)
class Deviation:
    key: str
    paper: Any
    value: Any
    reason: str = ""


_DECLARED = re.compile(r"^#\s+(?P<key>[a-z_][\w.]*):\s+(?P<paper>.+?)\s+->\s+(?P<value>.+?)(?:\s{2,}(?P<reason>\S.*))?$")


def deviations(name_or_path: str, reference: str = REFERENCE) -> list[Deviation]:
    """Every setting in which the experiment differs from the reference (the paper's), computed
    from the two files, with the reason its header gives for each."""
    cfg, ref = flatten(to_dict(load_experiment(name_or_path))), flatten(to_dict(load_experiment(reference)))
    reasons = {d.key: d.reason for d in declared_deviations(name_or_path)}
    return [Deviation(k, ref.get(k), v, reasons.get(k, "")) for k, v in cfg.items()
            if k != "name" and ref.get(k) != v]


def declared_deviations(name_or_path: str) -> list[Deviation]:
    """The deviations an experiment file's header comment lists (``#   key: paper -> value  reason``)."""
    out = []
    for line in experiment_path(name_or_path).read_text().splitlines():
        if not line.startswith("#"):
            break
        m = _DECLARED.match(line)
        if m:
            out.append(Deviation(m["key"], yaml.safe_load(m["paper"]), yaml.safe_load(m["value"]), m["reason"] or ""))
    return out


def describe(cfg: ExperimentConfig) -> list[tuple[str, Any, str]]:
    """(dotted key, value, documentation) of every setting, in schema order."""
    out: list[tuple[str, Any, str]] = []

    def walk(model: BaseModel, prefix: str) -> None:
        for name, field in type(model).model_fields.items():
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                walk(value, f"{prefix}{name}.")
            else:
                out.append((f"{prefix}{name}", value, field.description or ""))

    walk(cfg, "")
    return out
