"""Closing the paper's loop: the final configuration the measurements support, trained beside the
paper's own and compared on data no sweep chose on.

For each factor, the level its sweep found better than the base experiment's (the paper's value,
as the profile scales it: ``--experiment cpu`` compares with the cpu profile's) with a Welch 95%
interval of the difference excluding zero; otherwise the base value stays. Both configurations are trained by the export machinery with the same
seeds (``repeats`` members each: seeds run.seed, run.seed + 1, ...), registered, and scored member
by member on the test split (``test_labels.csv``; without it, on validation, said so).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmsearch.charts import mean_ci, ranked_levels, welch_diff
from mmsearch.config import ExperimentConfig, flatten, to_dict, with_overrides
from mmsearch.search import SweepContext, SweepSummary

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
    def difference(self) -> tuple[float, float, float]:
        """measured - paper, with its Welch 95% interval."""
        if PAPER not in self.models or MEASURED not in self.models:
            return math.nan, math.nan, math.nan
        return welch_diff(self.models[MEASURED].scores, self.models[PAPER].scores)

    def better(self) -> str:
        """The role whose members score better on average (the paper's on a tie)."""
        if MEASURED not in self.models or self.models[MEASURED].scores == self.models[PAPER].scores:
            return PAPER
        return MEASURED if self.difference[0] > 0 else PAPER

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


def decide(contexts: list[SweepContext], summaries: dict[str, SweepSummary]) -> list[FactorDecision]:
    """Factor by factor, in the plan's order: the measured level, or the base's and why."""
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
        best = ranked[0]
        label = str(best["level"])
        interval = "" if math.isnan(best["diff_low"]) else \
            f" (95% CI of the difference {best['diff_low']:+.4f}..{best['diff_high']:+.4f})"
        if label != base and best["vs_base"] == "better":
            cited = s.best_trial
            out.append(FactorDecision(
                spec.name, factor, base, label, dict(spec.level(label).set),
                f"{label} beats {ref} {base} by {best['diff']:+.4f} {spec.metric}{interval}", ctx.study_name,
                spec.metric, float(best["mean"]), int(best["n"]), cited.number if cited else -1,
                cited.attrs.get("mlflow_run_id") if cited else None,
                float(cited.value) if cited and cited.value is not None else math.nan))
        elif label == base:
            out.append(FactorDecision(spec.name, factor, base, base, {}, f"{ref} {base} has the best mean "
                                                                         f"{spec.metric} {best['mean']:.4f}"))
        else:
            why = "one repeat gives no interval" if not interval else "the interval includes 0"
            out.append(FactorDecision(spec.name, factor, base, base, {},
                                      f"best {label} is {best['diff']:+.4f} from {ref} {base}{interval}, but {why}: "
                                      "it stays"))
    return out


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
    from mmsearch.serving import IMAGE_COLUMN
    from mmsearch.serving._predictor import Bundle, Predictor
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
