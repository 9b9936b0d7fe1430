"""Closing the paper's loop: the final configuration the measurements support, trained beside the
paper's own and compared on data no sweep chose on.

For each factor, a level its sweep decided *better* than the base experiment's (the paper's
value, as the profile scales it: ``--experiment cpu`` compares with the cpu profile's): every
sweep's comparisons with its base are judged as one family, at one false-discovery rate for the
whole reproduction (``mmsearch.stats``), so the final model changes a factor only where the
measurements support it; an *equivalent* or *inconclusive* level leaves the base value, and the
decision says which. Both configurations are trained by the export machinery with the same
seeds (``repeats`` members each: seeds run.seed, run.seed + 1, ...), registered, and scored member
by member on the test split (``test_labels.csv``; without it, on validation, said so).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmsearch.config import ExperimentConfig, flatten, to_dict, with_overrides
from mmsearch.search import SweepContext, SweepSummary
from mmsearch.stats import (
    ALPHA,
    Comparison,
    Design,
    SweepLevels,
    Verdict,
    difference,
    judge,
    judge_across,
    mean_ci,
    ranked_levels,
)

log = logging.getLogger("mmsearch.reproduce")
PAPER, MEASURED = "paper", "measured"


@dataclass
class FactorDecision:
    sweep: str
    factor: str
    base: str | None  # the paper's level (the base experiment's own)
    chosen: str | None
    settings: dict[str, Any]  # what the chosen level sets (empty: the paper's value stays)
    why: str
    study: str = ""
    metric: str = ""
    mean: float = math.nan  # the chosen level's mean over its repeats
    n: int = 0
    trial: int = -1  # its best repeat's trial, cited as in `mmsearch export`
    run_id: str | None = None
    trial_score: float = math.nan

    @property
    def changed(self) -> bool:
        return bool(self.settings)


@dataclass
class FinalModel:
    role: str  # paper or measured
    name: str  # registered model name
    version: str
    run_id: str
    scores: list[float]  # each member's samples-F1 on the split
    ensemble: float | None  # the registered model's own (members averaged)
    split: str  # "test" or "validation"

    @property
    def interval(self) -> tuple[float, float, float, float]:
        return mean_ci(self.scores)


@dataclass
class FinalComparison:
    decisions: list[FactorDecision]
    models: dict[str, FinalModel] = field(default_factory=dict)
    champion: str = ""  # the registered NAME@champion, when asked
    experiment: str = "paper"  # the base experiment: whose values the "paper" model and the decisions keep

    @property
    def split(self) -> str:
        return next(iter(self.models.values())).split if self.models else "test"

    @property
    def same(self) -> bool:
        """No factor changed: the measured model is the paper's own, trained once."""
        return MEASURED in self.models and PAPER in self.models and \
            (self.models[MEASURED].name, self.models[MEASURED].version) == (self.models[PAPER].name,
                                                                           self.models[PAPER].version)

    @property
    def comparison(self) -> Comparison | None:
        """measured - paper, member by member: member i of both models trained with seed
        run.seed + i, so the pairs are matched (a paired 95% interval, one comparison)."""
        if PAPER not in self.models or MEASURED not in self.models or self.same:
            return None
        d = difference(MEASURED, PAPER, dict(enumerate(self.models[MEASURED].scores)),
                       dict(enumerate(self.models[PAPER].scores)))
        return judge([d], Design())[0]

    @property
    def difference(self) -> tuple[float, float, float]:
        """measured - paper, with its paired 95% interval."""
        c = self.comparison
        return (math.nan, math.nan, math.nan) if c is None else (c.diff, c.low, c.high)

    def better(self) -> str:
        """The champion: the measured configuration only when its members are decided better
        than the paper's, pair by pair; the paper's when they are equivalent or undecided."""
        c = self.comparison
        return MEASURED if c is not None and c.verdict is Verdict.BETTER else PAPER

    def to_json(self) -> dict[str, Any]:
        return {"decisions": [asdict(d) for d in self.decisions], "models": {k: asdict(m) for k, m in self.models.items()},
                "champion": self.champion, "experiment": self.experiment}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> FinalComparison:
        return cls([FactorDecision(**d) for d in raw["decisions"]], {k: FinalModel(**m) for k, m in raw["models"].items()},
                   raw.get("champion", ""), raw.get("experiment", "paper"))


def reference(experiment: str | None) -> str:
    """Whose value a factor keeps: the paper's, or the profile's rendering of it (the cpu
    profile shortens epochs and sequences, so its values differ from the paper's Appendix 6.1)."""
    return "the paper's" if experiment in (None, "paper") else f"the {experiment} experiment's"


def decide(contexts: list[SweepContext], summaries: dict[str, SweepSummary],
           alpha: float = ALPHA) -> list[FactorDecision]:
    """Factor by factor, in the plan's order: a level decided better than the base, else the
    base's value and why. Every sweep's comparisons with its base are judged as one family
    (false-discovery rate ``alpha`` over the whole reproduction)."""
    judged = _judge_all(contexts, summaries, alpha)
    out = []
    for ctx in contexts:
        spec, s = ctx.spec, summaries.get(ctx.spec.name)
        if spec.mode != "ablation" or s is None:
            continue
        factor = spec.factor or spec.name
        base, ref = spec.base, reference(spec.experiment)
        ranked = ranked_levels(s.levels, spec.maximize)
        if base is None:
            values = flatten(to_dict(ctx.base))
            value = values.get(factor, "?")
            namesake = spec.level(str(value)) if str(value) in spec.labels else None
            differs = "" if namesake is None else "; level {} also sets {}".format(value, ", ".join(
                f"{k}={v} ({ref}: {values.get(k)})" for k, v in namesake.set.items() if k != factor and values.get(k) != v))
            out.append(FactorDecision(spec.name, factor, None, None if value is None else str(value), {},
                                      f"no level of the sweep ({', '.join(spec.labels)}) is {ref} configuration "
                                      f"({factor}={value}{differs}), so nothing to compare with: it stays"))
            continue
        if not ranked:
            out.append(FactorDecision(spec.name, factor, base, base, {}, f"no level completed: {ref} value stays"))
            continue
        mine = judged.get(spec.name, {})
        better = [b for b in ranked if b.level in mine and mine[b.level].verdict is Verdict.BETTER]
        if better:
            best, c = better[0], mine[better[0].level]
            label = str(best.level)
            cited = s.best_trial if s.best_level == label else None
            also = "" if len(better) == 1 else f" (also decided better: {', '.join(b.level for b in better[1:])})"
            out.append(FactorDecision(
                spec.name, factor, base, label, dict(spec.level(label).set),
                f"{label} is decided {c.describe(f'{ref} {base}')} {spec.metric}{also}", ctx.study_name,
                spec.metric, float(best.mean), int(best.n), cited.number if cited else -1,
                cited.attrs.get("mlflow_run_id") if cited else None,
                float(cited.value) if cited and cited.value is not None else math.nan))
            continue
        top = ranked[0]
        if top.level == base:
            undecided = [c.level for c in mine.values() if c.verdict is Verdict.INCONCLUSIVE]
            tail = f"; undecided: {', '.join(undecided)}" if undecided else ""
            out.append(FactorDecision(spec.name, factor, base, base, {}, f"{ref} {base} has the best mean "
                                                                         f"{spec.metric} {top.mean:.4f}{tail}: it stays"))
            continue
        c = mine.get(top.level)
        why = ("it is equivalent within the margin" if c is not None and c.verdict is Verdict.EQUIVALENT
               else "it is not decided better (inconclusive)" if c is not None else "no comparison")
        shown = f"; {c.describe(f'{ref} {base}')}" if c is not None else ""
        out.append(FactorDecision(spec.name, factor, base, base, {},
                                  f"best mean {top.level} is {top.mean - next(b.mean for b in s.levels if b.is_base):+.4f} "
                                  f"from {ref} {base}, but {why}{shown}: {ref} value stays"))
    return out


def _judge_all(contexts: list[SweepContext], summaries: dict[str, SweepSummary], alpha: float
               ) -> dict[str, dict[str, Comparison]]:
    """Every sweep's comparisons with its base level, judged again as one family (sweep -> level -> comparison)."""
    return judge_across([SweepLevels(c.spec.name, summaries[c.spec.name].levels, c.spec.maximize,
                                     summaries[c.spec.name].design)
                         for c in contexts if c.spec.mode == "ablation" and c.spec.name in summaries], alpha)


def measured_config(base: ExperimentConfig, decisions: list[FactorDecision]) -> ExperimentConfig:
    settings: dict[str, Any] = {}
    for d in decisions:
        settings.update(d.settings)  # a later sweep of the same key wins, as in `mmsearch export`
    return with_overrides(base, settings, where="the measured final configuration") if settings else base


def split_scores(bundle: Path, data: Path) -> tuple[dict[str, float], str]:
    """Each member's samples-F1 (and the averaged model's) on the test split when the dataset
    has its answers (``test_labels.csv``), as metrics ``test/member{i}_f1`` and ``test/f1``."""
    import pandas as pd

    from mmsearch.data import encode, read_table
    from mmsearch.serving import IMAGE_COLUMN, Bundle, Predictor
    from mmsearch.training import samples_f1

    test, answers = data / "test.csv", data / "test_labels.csv"
    if not (test.is_file() and answers.is_file()):
        return {}, "validation"
    table, problems = read_table(answers, ("ImageID", "Labels", "Caption"))
    if problems or table.labels is None:
        return {}, "validation"
    loaded = Bundle.load(bundle)
    frame = pd.DataFrame({"ImageID": table.image_ids, "Caption": table.captions})
    if loaded.needs_images:
        frame[IMAGE_COLUMN] = [str(data / "data" / i) for i in table.image_ids]
    truth = encode(table.labels)
    scores = {f"test/member{i}_f1": samples_f1(truth, encode(Predictor(member).predict_labels(frame)))
              for i, member in enumerate(loaded.members)}
    scores["test/f1"] = samples_f1(truth, encode(Predictor(loaded).predict_labels(frame)))
    return scores, "test"


def member_scores(metrics: dict[str, float], repeats: int, last_stage: str) -> tuple[list[float], float | None, str]:
    """From an export's metrics: each member's score and the averaged model's, and the split."""
    if "test/f1" in metrics:
        return [metrics[f"test/member{i}_f1"] for i in range(repeats)], metrics["test/f1"], "test"
    if repeats == 1:
        return [metrics[f"{last_stage}/final_val_f1"]], metrics[f"{last_stage}/final_val_f1"], "validation"
    return ([metrics[f"member{i}/{last_stage}/final_val_f1"] for i in range(repeats)],
            metrics.get("ensemble/final_val_f1"), "validation")
