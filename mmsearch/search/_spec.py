"""Sweep files (``sweeps/*.yaml``): declarative, validated before anything runs.

Two modes:

* ``ablation`` — one factor at a time over a grid of levels, each level run ``repeats`` times
  with different seeds and compared with the base configuration (the paper's method);
* ``search`` — a sampler (TPE by default) over several factors, ``n_trials`` trials, pruning.

A level is a value of ``factor`` or a mapping ``{label: ..., set: {dotted.key: value, ...}}``
when one level changes several keys together (a corpus and its dimension, say).
``profiles`` holds per-experiment replacements of any top-level key, e.g. the CPU profile's
extra backbones. The file is validated by the same strict settings models as experiments, and
every level (or search-space edge) is validated against the base experiment: all problems are
reported at once, with the file and key.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, PrivateAttr, ValidationError, model_validator

from mmsearch._files import bundled, named_yaml, read_mapping, search_path, yaml_files
from mmsearch._lazy import lazy_module
from mmsearch._registry import Registry
from mmsearch._settings import Settings, problems_from
from mmsearch.config import (
    STAGE_NAMES,
    ExperimentConfig,
    build_experiment,
    load_experiment,
    to_dict,
)
from mmsearch.errors import ConfigError, MmsearchError, Problem
from mmsearch.stats import Design, Looks, margin_for
from mmsearch.training import EPOCH_METRICS, FINAL_ONLY_METRICS

if TYPE_CHECKING:
    import optuna

SWEEPS_DIR = bundled("sweeps")
MAX_LEVELS = 1000  # a grid of more is a typo or a hostile file; each level's config is built before anything runs
AUTO_START_REPEATS = 3  # repeats: auto starts here: the fewest that give a paired interval some power
CHARTS = ("curves", "losses", "ablation", "bubble", "lengths", "oov", "importance", "parallel")


optuna = lazy_module("optuna")

SAMPLERS: Registry[Any] = Registry("sampler")  # name -> factory of a sampler from a seed
SAMPLERS.register("tpe", lambda seed: optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True))
SAMPLERS.register("random", lambda seed: optuna.samplers.RandomSampler(seed=seed))
SAMPLERS.register("cmaes", lambda seed: optuna.samplers.CmaEsSampler(seed=seed))

PRUNERS: Registry[Any] = Registry("pruner")  # name -> factory of a pruner
PRUNERS.register("median", lambda: optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2))
PRUNERS.register("none", lambda: optuna.pruners.NopPruner())
# min_resource 2: a caption network's epoch-1 F1 says little (it sits at the label-1 baseline for
# an epoch or two); reduction factor 3 keeps a third of the trials at each rung.
PRUNERS.register("successive_halving", lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=3))
PRUNERS.register("hyperband", lambda: optuna.pruners.HyperbandPruner(min_resource=2, reduction_factor=3))

METRICS = {**EPOCH_METRICS, **FINAL_ONLY_METRICS}  # name -> the direction that is better


class Level(Settings):
    label: str
    set: dict[str, Any] = Field(min_length=1, description="dotted config keys this level sets")


class Dimension(Settings):
    """One search-space axis of a ``search`` sweep."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _range(self) -> Dimension:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical needs a non-empty 'choices' list")
        elif self.low is None or self.high is None or self.low >= self.high:
            raise ValueError(f"needs numeric low < high, got low={self.low!r} high={self.high!r}")
        elif self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got {self.low}")
        return self

    def suggest(self, trial: optuna.Trial, key: str) -> Any:
        if self.type == "float":
            return trial.suggest_float(key, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(key, int(self.low or 0), int(self.high or 0), log=self.log, step=int(self.step or 1))
        return trial.suggest_categorical(key, self.choices or [])

    def edges(self) -> list[Any]:
        """The values a trial may take at the edges of the axis (each is validated up front)."""
        if self.type == "categorical":
            return list(self.choices or [])
        return [int(v) if self.type == "int" else v for v in (self.low, self.high)]


Scalar = str | int | float | bool


class SweepSpec(Settings):
    name: str
    description: str
    paper: str = Field(description="section and figure of the paper this sweep reproduces")
    experiment: str = Field("paper", description="base experiment")
    stage: Literal[STAGE_NAMES]  # type: ignore[valid-type]
    mode: Literal["ablation", "search"]
    metric: Literal[tuple(METRICS)] = "val_f1"  # type: ignore[valid-type]
    direction: Literal["maximize", "minimize"] | None = Field(None, description="default: the metric's own")
    factor: str | None = None
    set: dict[str, Any] = Field(default_factory=dict,
                                description="settings every trial of this sweep uses on top of the base experiment")
    levels: list[Level | Scalar] = Field(default_factory=list, max_length=MAX_LEVELS,
                                         description=f"the levels of the factor (at most {MAX_LEVELS})")
    base: Scalar | None = Field(None, description="the level equal to the base experiment (found when omitted)")
    repeats: int | Literal["auto"] = Field(
        1, description="runs of each level with seeds run.seed+0..; 1..100, or auto: start at 3 and add repeats to "
                       "the levels whose comparison with the base is still inconclusive, up to max_repeats")
    max_repeats: int = Field(10, ge=2, le=100, description="repeats: auto (or --until-decided): at most this many "
                                                           "repeats per level")
    margin: float | None = Field(None, ge=0, description="margin of practical equivalence in the metric's units "
                                                         "(default: 0.005 for F1 metrics); --set stats.margin wins")
    space: dict[str, Dimension] = Field(default_factory=dict)
    n_trials: int = Field(20, ge=1, le=100_000)
    sampler: Annotated[str, SAMPLERS.validator] = "tpe"
    pruner: Annotated[str, PRUNERS.validator] | None = Field(None, description="default: median for a search, none for an ablation")
    charts: list[Literal[CHARTS]] = Field(default_factory=list)  # type: ignore[valid-type]
    profiles: dict[str, dict[str, Any]] = Field(default_factory=dict)
    seed: int = 0
    _path: Path = PrivateAttr(default=Path())
    _design: Any = PrivateAttr(default=None)
    until_decided: bool = Field(False, description="set by repeats: auto or --until-decided")

    @model_validator(mode="after")
    def _repeats(self) -> SweepSpec:
        if self.repeats == "auto":
            self.repeats, self.until_decided = AUTO_START_REPEATS, True
        elif not 1 <= int(self.repeats) <= 100:
            raise ValueError(f"repeats {self.repeats}: 1..100, or auto")
        if self.until_decided and self.max_repeats < int(self.repeats):
            raise ValueError(f"max_repeats {self.max_repeats} is below repeats {self.repeats}")
        return self

    @model_validator(mode="after")
    def _mode(self) -> SweepSpec:
        if self.mode == "ablation":
            if not self.levels:
                raise ValueError("an ablation needs at least one level")
            if self.factor is None and not all(isinstance(lv, Level) for lv in self.levels):
                raise ValueError("plain levels need a 'factor' (the dotted key they set)")
            labels = [lv.label for lv in self.level_list]
            if len(set(labels)) < len(labels):
                raise ValueError(f"duplicate level labels in {labels}")
        elif not self.space:
            raise ValueError("a search needs at least one 'space' dimension")
        if self.metric in FINAL_ONLY_METRICS and self.pruner not in (None, "none"):
            raise ValueError(f"metric {self.metric!r} exists only for the final model, so pruner {self.pruner!r} "
                             "has no per-epoch value to prune on; use pruner: none or a per-epoch metric")
        if self.direction is None:
            self.direction = METRICS[self.metric]  # type: ignore[assignment]
        if self.pruner is None:
            self.pruner = "median" if self.mode == "search" and self.metric in EPOCH_METRICS else "none"
        return self

    # -- views -----------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self._path

    @cached_property
    def level_list(self) -> list[Level]:
        """Each level with everything it sets: the sweep's own ``set`` and the level's."""
        return [Level(label=lv.label, set={**self.set, **lv.set}) if isinstance(lv, Level)
                else Level(label=str(lv), set={**self.set, str(self.factor): lv}) for lv in self.levels]

    @property
    def labels(self) -> list[str]:
        return [lv.label for lv in self.level_list]

    @property
    def size(self) -> int:
        return len(self.level_list) * int(self.repeats) if self.mode == "ablation" else self.n_trials

    @property
    def design(self) -> Design:
        """How this sweep's comparisons are judged, one look (see ``looks_of`` for sequential runs)."""
        return self._design or Design(margin=self.margin if self.margin is not None else margin_for(self.metric))

    @property
    def looks(self) -> Looks:
        """Analyses a sequential sweep plans: one after each round from ``repeats`` to ``max_repeats``."""
        return Looks(self.max_repeats - int(self.repeats) + 1, int(self.repeats)) if self.until_decided else Looks()

    def until(self, max_repeats: int | None) -> SweepSpec:
        """This sweep with repeats added until decided (``--until-decided [--max-repeats N]``)."""
        self.until_decided = True
        if max_repeats is not None:
            self.max_repeats = max_repeats
        return self

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    def cells(self) -> list[tuple[str, int]]:
        return [(label, r) for label in self.labels for r in range(int(self.repeats))]

    def level(self, label: str) -> Level:
        for lv in self.level_list:
            if lv.label == label:
                return lv
        raise KeyError(label)

    def suggest(self, trial: optuna.Trial) -> tuple[dict[str, Any], str | None, int | None]:
        """The thin adapter's first step: Optuna suggestions -> dotted config overrides. An
        ablation's level is the one searched parameter; its repeat index is a trial attribute
        (a seed offset, not a setting), so importance charts never rank it."""
        if self.mode == "ablation":
            label = trial.suggest_categorical("level", self.labels)
            repeat = int(trial.user_attrs["repeat"])
            return {**self.level(label).set, "run.repeat": repeat}, label, repeat
        return {**self.set, **{key: d.suggest(trial, key) for key, d in self.space.items()}}, None, None


def sweep_path(name_or_path: str) -> Path:
    return named_yaml(name_or_path, search_path("sweeps"))


def available_sweeps() -> list[Path]:
    return yaml_files(search_path("sweeps"))


def load_sweep(name_or_path: str, experiment: str | None = None, overrides: Mapping[str, Any] | None = None
               ) -> tuple[SweepSpec, ExperimentConfig]:
    """Parse and validate a sweep and its base experiment; every level is checked against the
    config schema, so a bad level fails here, before any training."""
    path = sweep_path(name_or_path)
    raw = read_mapping(path, "sweep", [p.stem for p in available_sweeps()])
    where = str(path)
    problems: list[Problem] = []
    exp_name = experiment or raw.get("experiment") or "paper"
    profile = (raw.get("profiles") or {}).get(exp_name, {})
    merged = {**copy.deepcopy(raw), **copy.deepcopy(profile if isinstance(profile, dict) else {}), "experiment": exp_name}
    spec: SweepSpec | None = None
    try:
        spec = SweepSpec.model_validate(merged)
        spec._path = path
    except ValidationError as exc:
        problems += problems_from(exc, where, SweepSpec)
    if spec is not None and spec.name != path.stem:
        problems.append(Problem(f"{where}: name", f"{spec.name!r} must equal the file name {path.stem!r}"))
    base_cfg: ExperimentConfig | None = None
    try:
        base_cfg = load_experiment(exp_name, overrides)
    except MmsearchError as exc:
        problems += getattr(exc, "problems", [Problem(where, str(exc))])
    if base_cfg is not None:
        for overrides_at, at in _all_overrides(spec, merged, where):
            try:
                build_experiment(to_dict(base_cfg), at, overrides_at)
            except ConfigError as exc:
                problems += exc.problems
    if spec is not None and base_cfg is not None:
        if spec.metric in FINAL_ONLY_METRICS and not base_cfg.run.tune_thresholds:
            problems.append(Problem(f"{where}: metric", f"{spec.metric!r} is computed only with run.tune_thresholds: "
                                                        "true in the base experiment (or --set run.tune_thresholds=true)"))
        margin = base_cfg.stats.margin if base_cfg.stats.margin is not None else spec.margin
        spec._design = Design(alpha=base_cfg.stats.alpha, margin=margin if margin is not None else margin_for(spec.metric))
        if spec.mode == "ablation" and spec.base is None:
            spec.base = _base_level(spec, base_cfg)
        elif spec.base is not None:
            spec.base = str(spec.base)
            if spec.base not in spec.labels:
                problems.append(Problem(f"{where}: base", f"{spec.base!r} is not a level; levels: {', '.join(spec.labels)}"))
    if problems:
        raise ConfigError(f"invalid sweep {path}", problems)
    assert spec is not None and base_cfg is not None
    return spec, base_cfg


def _base_level(spec: SweepSpec, cfg: ExperimentConfig) -> str | None:
    """The level whose configuration is the base experiment's own, with the sweep's ``set``
    applied (marked on the charts). Whole configs are compared after validation, so
    ``embedding_dim: null`` equals the corpus's size."""
    base = to_dict(build_experiment(to_dict(cfg), "base level", spec.set)) if spec.set else to_dict(cfg)
    for lv in spec.level_list:
        try:
            if to_dict(build_experiment(to_dict(cfg), "base level", lv.set)) == base:
                return lv.label
        except ConfigError:
            continue
    return None


def _all_overrides(spec: SweepSpec | None, raw: Mapping[str, Any], where: str) -> list[tuple[dict[str, Any], str]]:
    """Every level's (or search-space edge's) overrides. From the raw file when the sweep itself
    has other problems, so a bad level is reported together with them."""
    if spec is not None:
        if spec.mode == "ablation":
            return [(lv.set, f"{where} level {lv.label!r}") for lv in spec.level_list]
        return [({**spec.set, key: v}, f"{where} space.{key}={v!r}") for key, d in spec.space.items() for v in d.edges()]
    out = []
    for item in raw.get("levels") or []:
        if isinstance(item, dict) and isinstance(item.get("set"), dict):
            out.append((item["set"], f"{where} level {item.get('label')!r}"))
        elif isinstance(raw.get("factor"), str) and not isinstance(item, (dict, list)):
            out.append(({raw["factor"]: item}, f"{where} level {str(item)!r}"))
    return out
