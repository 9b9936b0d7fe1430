"""What each finished sweep decided: its best setting, with the trial and run behind it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mmsearch.charts import ablation_bars_data, best_level
from mmsearch.errors import MmsearchError
from mmsearch.search import SweepRequest, open_storage, resolve, trial_records


@dataclass
class Decision:
    """One config value and the sweep result that chose it."""

    key: str
    value: Any
    sweep: str
    study: str
    trial: int
    run_id: str | None
    score: float
    metric: str
    how: str  # "best level (mean of n)" or "best trial"


def sweep_decisions(request: SweepRequest) -> list[Decision]:
    """Best setting of a finished sweep: for an ablation the level with the best mean over
    repeats (its best repeat's trial is cited), for a search the best trial."""
    import optuna

    ctx = resolve(request)
    try:
        study = optuna.load_study(study_name=ctx.study_name, storage=open_storage(request.storage))
    except KeyError:
        raise MmsearchError(
            f"sweep {ctx.spec.name!r} has no study {ctx.study_name!r} in this storage: run "
            f"`mmsearch sweep run {ctx.spec.name}` with the same --experiment/--data/--set first") from None
    records = trial_records(study)
    complete = [r for r in records if r.state == "COMPLETE" and r.value is not None]
    if not complete:
        raise MmsearchError(f"sweep {ctx.spec.name!r} (study {ctx.study_name}) has no completed trial to export from")
    spec = ctx.spec
    maximize = spec.direction == "maximize"
    pick = max if maximize else min
    if spec.mode == "ablation":
        bars = ablation_bars_data(records, [lv.label for lv in spec.levels], spec.base)
        level = best_level(bars, maximize)
        assert level is not None
        bar = next(b for b in bars if b["level"] == level)
        cited = pick((r for r in complete if r.level == level), key=lambda r: r.value)
        return [Decision(k, v, spec.name, ctx.study_name, cited.number, cited.attrs.get("mlflow_run_id"), bar["mean"],
                         spec.metric, f"best level {level!r} (mean of {bar['n']})")
                for k, v in spec.level(level).overrides.items()]
    best = pick(complete, key=lambda r: r.value)
    return [Decision(k, v, spec.name, ctx.study_name, best.number, best.attrs.get("mlflow_run_id"), float(best.value),
                     spec.metric, "best trial") for k, v in best.params.items()]
