"""What each finished sweep decided: its best setting, with the trial and run behind it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mmsearch.errors import MmsearchError
from mmsearch.search import SweepRequest, load_sweep, looks_of, open_study, summarize, versus_base


@dataclass
class Decision:
    """One config value and the sweep result that chose it."""

    key: str
    value: Any
    sweep: str
    study: str
    trial: int  # the trial cited (an ablation: the best repeat of the chosen level)
    run_id: str | None
    score: float  # ablation: the chosen level's mean over repeats; search: the trial's value
    metric: str
    how: str  # "best level 'x' (mean of n)" or "best trial"
    trial_score: float  # the cited trial's own value
    vs_base: str = ""  # ablation: the chosen level's verdict against the base level, with its interval
    decided: bool = True  # ablation: whether the best level is decided better than the base (or is the base)

    def describe(self) -> str:
        if self.how == "best trial":
            return f"{self.sweep} best trial {self.trial} ({self.metric} {self.score:.4f})"
        decided = "" if self.decided else " (best by mean only: not decided better than the base)"
        return (f"{self.sweep} {self.how}{decided}: mean {self.metric} {self.score:.4f}; {self.vs_base}; "
                f"cited trial {self.trial} ({self.metric} {self.trial_score:.4f})")


def sweep_decisions(request: SweepRequest, command: str, force: bool = False) -> tuple[list[Decision], SweepRequest]:
    """The best setting of a finished sweep: for an ablation the level with the best mean over
    repeats (its best repeat's trial is cited, and whether it is distinguishable from the base
    level is said), for a search the best trial. Also returns the request its study was run with."""
    ran_with, study, _, _ = open_study(request, command)
    spec, name = load_sweep(ran_with.sweep, ran_with.experiment)[0], str(ran_with.study_name)
    s = summarize(spec, name, study.get_trials(deepcopy=False), looks=looks_of(study.user_attrs))
    best = s.best_trial
    if best is None:
        raise MmsearchError(f"sweep {spec.name!r} (study {name}) has no completed trial to export from")
    if spec.mode == "ablation":
        bar = next(b for b in s.levels if b.level == s.best_level)
        if bar.degenerate and not force:
            raise MmsearchError(
                f"sweep {spec.name!r}: its best level {s.best_level!r} scores {bar.mean:.4f}, no better than predicting "
                f"the most frequent label for every row ({bar.baseline:.4f}); exporting it would register a model "
                "that learned nothing. Pass --force to export it anyway")
        decided = bar.is_base or spec.base is None or bar.vs_base == "better"
        return [Decision(k, v, spec.name, name, best.number, best.attrs.get("mlflow_run_id"), float(bar.mean),
                         spec.metric, f"best level {s.best_level!r} (mean of {bar.n})", float(best.value or 0),
                         versus_base(bar, spec.base), decided)
                for k, v in spec.level(str(s.best_level)).set.items()], ran_with
    return [Decision(k, v, spec.name, name, best.number, best.attrs.get("mlflow_run_id"), float(best.value or 0),
                     spec.metric, "best trial", float(best.value or 0)) for k, v in best.params.items()], ran_with

