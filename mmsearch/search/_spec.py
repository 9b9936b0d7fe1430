"""Sweep files (``sweeps/*.yaml``): declarative, validated before anything runs.

Two modes:

* ``ablation`` — one factor at a time over a grid of levels, each level run ``repeats`` times
  with different seeds and compared with the base configuration (the paper's method);
* ``search`` — a sampler (TPE by default) over several factors, ``n_trials`` trials, pruning.

A level is a value of ``factor`` or a mapping ``{label: ..., set: {dotted.key: value, ...}}``
when one level changes several keys together (a corpus and its dimension, say).
``profiles`` holds per-experiment replacements of any top-level key, e.g. the CPU profile's
extra backbones.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmsearch._files import named_yaml, yaml_files
from mmsearch._registry import Registry
from mmsearch.config import ExperimentConfig, build_experiment, flatten, load_experiment, to_dict
from mmsearch.errors import ConfigError, MmsearchError, Problem

SWEEPS_DIR = Path(__file__).resolve().parents[2] / "sweeps"
MODES = ("ablation", "search")
CHARTS = ("curves", "ablation", "bubble", "lengths", "oov", "importance", "parallel")
STAGE_NAMES = ("image", "text", "fusion")
METRICS = ("val_f1", "val_f1_micro", "val_f1_macro", "val_loss", "val_f1_tuned")
TOP_KEYS = {"name", "description", "paper", "experiment", "stage", "mode", "factor", "levels", "base", "repeats",
            "space", "n_trials", "sampler", "pruner", "metric", "direction", "charts", "profiles", "seed"}


def _tpe(seed: int) -> Any:
    import optuna

    return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)


def _random(seed: int) -> Any:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _cmaes(seed: int) -> Any:
    import optuna

    return optuna.samplers.CmaEsSampler(seed=seed)


SAMPLERS: Registry[Any] = Registry("sampler")
SAMPLERS.register("tpe", _tpe)
SAMPLERS.register("random", _random)
SAMPLERS.register("cmaes", _cmaes)


def _median() -> Any:
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)


def _none() -> Any:
    import optuna

    return optuna.pruners.NopPruner()


def _halving() -> Any:
    import optuna

    return optuna.pruners.SuccessiveHalvingPruner()


def _hyperband() -> Any:
    import optuna

    return optuna.pruners.HyperbandPruner()


PRUNERS: Registry[Any] = Registry("pruner")
PRUNERS.register("median", _median)
PRUNERS.register("none", _none)
PRUNERS.register("successive_halving", _halving)
PRUNERS.register("hyperband", _hyperband)


@dataclass
class Level:
    label: str
    overrides: dict[str, Any]


@dataclass
class Dimension:
    """One search-space axis of a ``search`` sweep."""

    key: str
    type: str  # float, int, categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] = field(default_factory=list)

    def suggest(self, trial: Any) -> Any:
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_categorical(self.key, self.choices)


@dataclass
class SweepSpec:
    name: str
    path: Path
    description: str
    paper: str
    experiment: str
    stage: str
    mode: str
    metric: str = "val_f1"
    direction: str = "maximize"
    factor: str | None = None
    levels: list[Level] = field(default_factory=list)
    base: str | None = None
    repeats: int = 1
    space: list[Dimension] = field(default_factory=list)
    n_trials: int = 20
    sampler: str = "tpe"
    pruner: str = "median"
    charts: list[str] = field(default_factory=list)
    seed: int = 0

    @property
    def size(self) -> int:
        return len(self.levels) * self.repeats if self.mode == "ablation" else self.n_trials

    def cells(self) -> list[tuple[str, int]]:
        return [(lv.label, r) for lv in self.levels for r in range(self.repeats)]

    def level(self, label: str) -> Level:
        for lv in self.levels:
            if lv.label == label:
                return lv
        raise KeyError(label)

    def suggest(self, trial: Any, base_seed: int) -> tuple[dict[str, Any], str | None, int | None]:
        """The thin adapter's first step: Optuna suggestions -> dotted config overrides."""
        if self.mode == "ablation":
            label = trial.suggest_categorical("level", [lv.label for lv in self.levels])
            repeat = trial.suggest_int("repeat", 0, max(0, self.repeats - 1))
            overrides = dict(self.level(label).overrides)
            overrides["run.repeat"] = repeat
            return overrides, label, repeat
        return {d.key: d.suggest(trial) for d in self.space}, None, None


def sweep_path(name_or_path: str) -> Path:
    return named_yaml(name_or_path, SWEEPS_DIR)


def available_sweeps() -> list[Path]:
    return yaml_files(SWEEPS_DIR)


def load_sweep(name_or_path: str, experiment: str | None = None, overrides: Mapping[str, Any] | None = None
               ) -> tuple[SweepSpec, ExperimentConfig]:
    """Parse and validate a sweep and its base experiment; every level is checked against the
    config schema, so a bad level fails here, before any training."""
    path = sweep_path(name_or_path)
    if not path.exists():
        names = ", ".join(p.stem for p in available_sweeps())
        raise ConfigError("sweep not found", [Problem(str(path), f"no such sweep; available: {names}")])
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"sweep {path} is not valid YAML", [Problem(str(path), str(exc))]) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"sweep {path}", [Problem(str(path), "top level must be a mapping")])
    problems: list[Problem] = []
    where = str(path)
    exp_name = experiment or raw.get("experiment") or "paper"
    profile = (raw.get("profiles") or {}).get(exp_name, {})
    if not isinstance(profile, dict):
        problems.append(Problem(f"{where}: profiles.{exp_name}", "must be a mapping of sweep keys"))
        profile = {}
    merged = {**copy.deepcopy(raw), **copy.deepcopy(profile)}
    for key in merged:
        if key not in TOP_KEYS:
            problems.append(Problem(f"{where}: {key}", f"unknown key; valid: {', '.join(sorted(TOP_KEYS))}"))
    base_cfg: ExperimentConfig | None = None
    try:
        base_cfg = load_experiment(exp_name, overrides)
    except MmsearchError as exc:
        problems += getattr(exc, "problems", [Problem(where, str(exc))])

    def need(key: str, kind: type | tuple[type, ...], default: Any = None, required: bool = True) -> Any:
        value = merged.get(key, default)
        if value is None:
            if required:
                problems.append(Problem(f"{where}: {key}", "missing"))
            return default
        if not isinstance(value, kind):
            problems.append(Problem(f"{where}: {key}", f"{value!r} has the wrong type"))
            return default
        return value

    spec = SweepSpec(
        name=need("name", str, path.stem), path=path, description=need("description", str, ""),
        paper=str(merged.get("paper", "")), experiment=exp_name, stage=need("stage", str, "fusion"),
        mode=need("mode", str, "ablation"), metric=need("metric", str, "val_f1", False),
        direction=need("direction", str, "maximize", False), repeats=need("repeats", int, 1, False),
        n_trials=need("n_trials", int, 20, False), sampler=need("sampler", str, "tpe", False),
        pruner=need("pruner", str, "median" if merged.get("mode") == "search" else "none", False),
        charts=list(need("charts", list, [], False)), seed=need("seed", int, 0, False),
    )
    if spec.name != path.stem:
        problems.append(Problem(f"{where}: name", f"{spec.name!r} must equal the file name {path.stem!r}"))
    if spec.stage not in STAGE_NAMES:
        problems.append(Problem(f"{where}: stage", f"{spec.stage!r}; valid: {', '.join(STAGE_NAMES)}"))
    if spec.mode not in MODES:
        problems.append(Problem(f"{where}: mode", f"{spec.mode!r}; valid: {', '.join(MODES)}"))
    if spec.metric not in METRICS:
        problems.append(Problem(f"{where}: metric", f"{spec.metric!r}; valid: {', '.join(METRICS)}"))
    if spec.direction not in ("maximize", "minimize"):
        problems.append(Problem(f"{where}: direction", f"{spec.direction!r}; valid: maximize, minimize"))
    if spec.repeats < 1:
        problems.append(Problem(f"{where}: repeats", f"{spec.repeats} must be >= 1"))
    for chart in spec.charts:
        if chart not in CHARTS:
            problems.append(Problem(f"{where}: charts", f"unknown chart {chart!r}; valid: {', '.join(CHARTS)}"))
    for reg, value, key in ((SAMPLERS, spec.sampler, "sampler"), (PRUNERS, spec.pruner, "pruner")):
        if value not in reg:
            problems.append(Problem(f"{where}: {key}", f"unknown {reg.kind} {value!r}; registered: {', '.join(reg.names())}"))
    if spec.mode == "ablation":
        spec.factor = need("factor", str, None)
        raw_levels = need("levels", list, [])
        spec.levels = _levels(raw_levels, spec.factor, where, problems)
        base = merged.get("base")
        spec.base = str(base) if base is not None else _base_level(spec, base_cfg)
    elif spec.mode == "search":
        spec.space = _space(need("space", dict, {}), where, problems)
        if spec.n_trials < 1:
            problems.append(Problem(f"{where}: n_trials", f"{spec.n_trials} must be >= 1"))
    if base_cfg is not None:
        for overrides, at in _all_overrides(spec, where):
            try:
                build_experiment(to_dict(base_cfg), at, overrides)
            except ConfigError as exc:
                problems += exc.problems
    if problems:
        raise ConfigError(f"invalid sweep {path}", problems)
    assert base_cfg is not None
    return spec, base_cfg


def _levels(raw: list[Any], factor: str | None, where: str, problems: list[Problem]) -> list[Level]:
    levels, seen = [], set()
    for i, item in enumerate(raw):
        at = f"{where}: levels[{i}]"
        if isinstance(item, dict):
            label, overrides = item.get("label"), item.get("set")
            if not isinstance(label, str) or not isinstance(overrides, dict):
                problems.append(Problem(at, f"{item!r}: a mapping level needs 'label' (text) and 'set' (mapping)"))
                continue
            level = Level(label, dict(overrides))
        else:
            if factor is None:
                continue
            level = Level(str(item), {factor: item})
        if level.label in seen:
            problems.append(Problem(at, f"duplicate level {level.label!r}"))
        seen.add(level.label)
        levels.append(level)
    if not levels:
        problems.append(Problem(f"{where}: levels", "an ablation needs at least one level"))
    return levels


def _base_level(spec: SweepSpec, cfg: ExperimentConfig | None) -> str | None:
    """The level equal to the base experiment's own setting (marked on the ablation chart)."""
    if cfg is None:
        return None
    flat = flatten(to_dict(cfg))
    for lv in spec.levels:
        if all(flat.get(k) == v for k, v in lv.overrides.items()):
            return lv.label
    return None


def _space(raw: Mapping[str, Any], where: str, problems: list[Problem]) -> list[Dimension]:
    dims = []
    for key, d in raw.items():
        at = f"{where}: space.{key}"
        if not isinstance(d, dict):
            problems.append(Problem(at, "must be a mapping with type and range"))
            continue
        kind = d.get("type")
        if kind in ("float", "int"):
            low, high = d.get("low"), d.get("high")
            if not isinstance(low, (int, float)) or not isinstance(high, (int, float)) or low >= high:
                problems.append(Problem(at, f"needs numeric low < high, got low={low!r} high={high!r}"))
                continue
            if d.get("log") and low <= 0:
                problems.append(Problem(at, f"log scale needs low > 0, got {low}"))
                continue
            dims.append(Dimension(key, kind, float(low), float(high), bool(d.get("log", False)), d.get("step")))
        elif kind == "categorical":
            choices = d.get("choices")
            if not isinstance(choices, list) or not choices:
                problems.append(Problem(at, "categorical needs a non-empty 'choices' list"))
                continue
            dims.append(Dimension(key, kind, choices=choices))
        else:
            problems.append(Problem(at, f"type {kind!r}; valid: float, int, categorical"))
    if not dims and not problems:
        problems.append(Problem(f"{where}: space", "a search needs at least one dimension"))
    return dims


def _all_overrides(spec: SweepSpec, where: str) -> list[tuple[dict[str, Any], str]]:
    if spec.mode == "ablation":
        return [(lv.overrides, f"{where} level {lv.label!r}") for lv in spec.levels]
    out = []
    for d in spec.space:
        values = d.choices if d.type == "categorical" else [d.low, d.high]
        for v in values:
            out.append(({d.key: int(v) if d.type == "int" else v}, f"{where} space.{d.key}={v!r}"))
    return out
