"""The paper's findings (``findings/paper.yaml``) and the verdicts on them.

A verdict compares one finding with what a sweep measured: reproduced, not reproduced, not
distinguishable (the 95% intervals cannot tell), or not run (with the reason). How a finding is
judged depends on its ``kind``, a registered rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError

from mmsearch._files import bundled, read_mapping
from mmsearch._registry import Registry
from mmsearch._settings import Settings, problems_from
from mmsearch.charts import ranked_levels, verdict, welch_diff
from mmsearch.errors import ConfigError

FINDINGS = bundled("findings") / "paper.yaml"
REPRODUCED, NOT_REPRODUCED, NOT_DISTINGUISHABLE, NOT_RUN, DEGENERATE = (
    "reproduced", "not reproduced", "not distinguishable", "not run", "degenerate")


def degenerate_verdict(levels: list[dict[str, Any]]) -> Verdict | None:
    """When every level that ran scores no better than predicting the most frequent label for
    every row, the comparison between them says nothing about the factor."""
    ran = [b for b in levels if b["n"] > 0]
    if not ran or not all(b.get("degenerate") for b in ran):
        return None
    baseline = max(b["baseline"] for b in ran)
    return Verdict(DEGENERATE, "; ".join(f"{b['level']}: {b['mean']:.4f}" for b in ran),
                   f"every level scores no better than predicting the most frequent label for every row (samples-F1 "
                   f"{baseline:.4f}): the models learned nothing beyond the label frequencies, so the levels cannot "
                   "be compared (more data or epochs, or a working upstream stage)")


@dataclass
class Verdict:
    outcome: str  # one of the four above
    measured: str  # what the platform measured, in one line
    why: str  # how the outcome follows from it (or why there is none)


# kind -> rule(finding, per-level statistics of the sweep, extra measurements) -> Verdict
Rule = Callable[["Finding", list[dict[str, Any]], dict[str, Any]], Verdict]
VERDICTS: Registry[Rule] = Registry("finding kind")


class Finding(Settings):
    figure: str
    section: str
    sweep: str
    kind: Annotated[str, VERDICTS.validator]
    value: str = Field(description="the level the paper chose (best) or compares with (no_effect)")
    levels: list[str] = Field(default_factory=list, description="no_effect: the levels found no different")
    tried: list[str] = Field(description="the levels the paper tried")
    metric: str
    quote: str
    reported: dict[str, float] = Field(default_factory=dict, description="numbers the paper gives, by level")


def load_findings(path: Path = FINDINGS) -> list[Finding]:
    raw = read_mapping(path, "findings file")
    out, problems = [], []
    for i, item in enumerate(raw.get("findings") or []):
        try:
            out.append(Finding.model_validate(item))
        except ValidationError as exc:
            problems += problems_from(exc, f"{path}: findings[{i}]", Finding)
    if problems:
        raise ConfigError(f"invalid findings file {path}", problems)
    return out


def _fmt(bar: dict[str, Any]) -> str:
    ci = "" if math.isnan(bar["ci_low"]) else f", 95% CI {bar['ci_low']:.4f}..{bar['ci_high']:.4f}"
    return f"{bar['level']}: {bar['mean']:.4f} (n={bar['n']}{ci})"


def _measured(bars: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [b for b in bars.values() if b["n"] > 0]


@VERDICTS.register("best")
def _best(f: Finding, levels: list[dict[str, Any]], extra: dict[str, Any]) -> Verdict:
    """Reproduced when the paper's level beats every other here by more than the 95% interval of
    the difference; not reproduced when another level beats it that way; else not distinguishable."""
    bars = {b["level"]: b for b in levels}
    ran = _measured(bars)
    if f.value not in bars:
        return Verdict(NOT_RUN, "", f"this profile does not try {f.value}; its levels: {', '.join(bars)}")
    chosen = bars[f.value]
    if chosen["n"] == 0 or len(ran) < 2:
        return Verdict(NOT_RUN, "", f"no completed trial of level {f.value}" if chosen["n"] == 0
                       else "fewer than two levels completed")
    ranked = ranked_levels(ran, extra["maximize"])  # the rule `sweep status` and export use
    rival = next(b for b in ranked if b is not chosen)  # the best of the other levels
    diff, low, high = welch_diff(chosen["values"], rival["values"])
    seen = verdict(low, high, extra["maximize"])
    best = ranked[0]
    measured = f"best {_fmt(best)}" + ("" if best is chosen else f"; paper's {_fmt(chosen)}")
    interval = "no interval: one repeat" if math.isnan(low) else f"95% CI {low:+.4f}..{high:+.4f}"
    if seen == "better":
        return Verdict(REPRODUCED, measured, f"{f.value} beats the next best, {rival['level']}, by {diff:+.4f} ({interval})")
    if seen == "worse":  # the interval of (rival - paper's), which excludes 0
        return Verdict(NOT_REPRODUCED, measured, f"{rival['level']} beats {f.value} by {-diff:+.4f} "
                                                 f"(95% CI {-high:+.4f}..{-low:+.4f})")
    ahead = f"{f.value} has the best mean" if best is chosen else f"{rival['level']} has a better mean than {f.value}"
    return Verdict(NOT_DISTINGUISHABLE, measured, f"{ahead}, but {f.value} - {rival['level']} = {diff:+.4f} is within "
                                                  f"noise ({interval})")


@VERDICTS.register("no_effect")
def _no_effect(f: Finding, levels: list[dict[str, Any]], extra: dict[str, Any]) -> Verdict:
    bars = {b["level"]: b for b in levels}
    if f.value not in bars or bars[f.value]["n"] == 0:
        return Verdict(NOT_RUN, "", f"level {f.value} was not run in this profile (levels: {', '.join(bars)})")
    ref = bars[f.value]
    compared = [bars[lv] for lv in f.levels if lv in bars and lv != f.value and bars[lv]["n"] > 0]
    if not compared:
        return Verdict(NOT_RUN, "", f"none of {', '.join(f.levels)} other than {f.value} was run in this profile")
    measured = "; ".join(_fmt(b) for b in [ref, *compared])
    differs, widest = [], (0.0, "")
    for b in compared:
        diff, low, high = welch_diff(b["values"], ref["values"])
        if verdict(low, high, extra["maximize"]) in ("better", "worse"):
            differs.append(f"{b['level']} ({diff:+.4f}, 95% CI {low:+.4f}..{high:+.4f})")
        if abs(diff) >= abs(widest[0]):
            widest = (diff, f"{b['level']} at {diff:+.4f}" + ("" if math.isnan(low) else f", 95% CI {low:+.4f}..{high:+.4f}"))
    if differs:
        return Verdict(NOT_REPRODUCED, measured, f"differs from {f.value}: {', '.join(differs)}")
    repeats = min(b["n"] for b in [ref, *compared])
    power = ("single repeats give no interval, so nothing can be told apart" if repeats < 2 else
             f"with {repeats} repeats per level; the largest difference, {widest[1]}, includes 0")
    return Verdict(REPRODUCED, measured, f"no level is distinguishable from {f.value} ({power})")


@VERDICTS.register("fewest_oov")
def _fewest_oov(f: Finding, levels: list[dict[str, Any]], extra: dict[str, Any]) -> Verdict:
    oov = {r["corpus"]: r for r in extra.get("oov", [])}
    if not oov:
        return Verdict(NOT_RUN, "", "no OOV counts (the text-corpus sweep has not run)")
    mine = oov.get(f.value)
    available = {c: r["oov_words"] for c, r in oov.items() if r["available"]}
    measured = "; ".join(f"{c}: {n} words" for c, n in available.items())
    if mine is None or not mine["available"]:
        reason = ((mine or {}).get("error") or "not among the sweep's levels").split(". ")[0]
        return Verdict(NOT_RUN, measured, f"{f.value} is not available here: {reason}")
    fewest = min(available, key=lambda c: available[c])
    if available[fewest] == available[f.value]:
        return Verdict(REPRODUCED, measured, f"{f.value} leaves the fewest words without a vector")
    return Verdict(NOT_REPRODUCED, measured, f"{fewest} leaves fewer words without a vector than {f.value}")
