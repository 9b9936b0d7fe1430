"""The paper's findings (``findings/paper.yaml``) and the verdicts on them.

A verdict compares one finding with what a sweep measured: reproduced, not reproduced,
inconclusive (the comparisons it rests on are not decided yet, with the repeats that would
likely decide them), not run (with the reason), or degenerate. A finding's comparisons (each
level against the paper's value, paired on matched seeds) are judged together with every other
finding's of the same report, at one false-discovery rate (``mmsearch.stats``), so the report
as a whole keeps its stated error rate. How a finding is judged depends on its ``kind``, a
registered rule:

* ``best``: reproduced when no level is decided better than the paper's choice and every
  other level is decided worse or equivalent to it; not reproduced when one is decided better
  (by more than the margin: a real but smaller difference is equivalent); inconclusive otherwise.
* ``no_effect``: reproduced only when every listed level is decided equivalent to the paper's
  value (never because nothing was distinguishable); not reproduced when one is decided
  different by more than the margin can hold; inconclusive otherwise.
* ``fewest_oov``: a count, no interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError

from mmsearch._files import bundled, read_mapping
from mmsearch._registry import Registry
from mmsearch._settings import Settings, problems_from
from mmsearch.errors import ConfigError
from mmsearch.stats import Comparison, Design, Difference, LevelStats, difference, judge, ranked_levels
from mmsearch.stats import Verdict as Call

FINDINGS = bundled("findings") / "paper.yaml"
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_RUN, DEGENERATE = (
    "reproduced", "not reproduced", "inconclusive", "not run", "degenerate")
OUTCOMES = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_RUN, DEGENERATE)


def degenerate_verdict(levels: Sequence[LevelStats]) -> Verdict | None:
    """When every level that ran scores no better than predicting the most frequent label for
    every row, the comparison between them says nothing about the factor."""
    ran = [b for b in levels if b.n > 0]
    if not ran or not all(b.degenerate for b in ran):
        return None
    baseline = max(b.baseline for b in ran)
    return Verdict(DEGENERATE, "; ".join(f"{b.level}: {b.mean:.4f}" for b in ran),
                    f"every level scores no better than predicting the most frequent label for every row (samples-F1 "
                    f"{baseline:.4f}): the models learned nothing beyond the label frequencies, so the levels cannot "
                    "be compared (more data or epochs, or a working upstream stage)")


@dataclass
class Verdict:
    outcome: str  # one of OUTCOMES
    measured: str  # what the platform measured, in one line
    why: str  # how the outcome follows from it (or why there is none)
    comparisons: list[Comparison] = field(default_factory=list)  # what it rests on, judged


@dataclass
class FindingKind:
    """How one kind of finding is judged: the comparisons it needs (or why it has none), then
    the verdict from those comparisons once the whole report's family has judged them."""

    comparisons: Callable[[Finding, Sequence[LevelStats]], list[Difference] | Verdict]
    verdict: Callable[[Finding, Sequence[LevelStats], list[Comparison], dict[str, Any]], Verdict]


KINDS: Registry[FindingKind] = Registry("finding kind")


class Finding(Settings):
    figure: str
    section: str
    sweep: str
    kind: Annotated[str, KINDS.validator]
    value: str = Field(description="the level the paper chose (best) or compares with (no_effect)")
    levels: list[str] = Field(default_factory=list, description="no_effect: the levels found no different")
    tried: list[str] = Field(description="the levels the paper tried")
    metric: str
    quote: str
    reported: dict[str, float] = Field(default_factory=dict, description="numbers the paper gives, by level")
    margin: float | None = Field(None, ge=0, description="margin of practical equivalence for this finding "
                                                         "(default: its sweep's)")


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


def _fmt(bar: LevelStats) -> str:
    ci = "" if math.isnan(bar.ci_low) else f", 95% CI {bar.ci_low:.4f}..{bar.ci_high:.4f}"
    return f"{bar.level}: {bar.mean:.4f} (n={bar.n}{ci})"


def _against(f: Finding, levels: Sequence[LevelStats], wanted: Sequence[str]) -> list[Difference] | Verdict:
    bars = {b.level: b for b in levels}
    if f.value not in bars:
        return Verdict(NOT_RUN, "", f"this profile does not try {f.value}; its levels: {', '.join(bars)}")
    ref = bars[f.value]
    if ref.n == 0:
        return Verdict(NOT_RUN, "", f"no completed trial of level {f.value}")
    others = [bars[lv] for lv in wanted if lv in bars and lv != f.value and bars[lv].n > 0]
    if not others:
        return Verdict(NOT_RUN, "", f"no level other than {f.value} completed" if f.kind == "best" else
                        f"none of {', '.join(f.levels)} other than {f.value} was run in this profile")
    return [difference(b.level, f.value, b.by_repeat, ref.by_repeat) for b in others]


def _undecided(comparisons: Sequence[Comparison]) -> str:
    parts = []
    for c in comparisons:
        if c.verdict is Call.INCONCLUSIVE:
            more = (f"~{c.repeats_to_decide} repeats per level would likely decide it" if c.repeats_to_decide
                    else c.difference.how() if not c.difference.testable else "over 100 repeats would be needed")
            where = "" if math.isnan(c.low) else f", {c.confidence:.1%} CI {c.low:+.4f}..{c.high:+.4f}"
            parts.append(f"{c.level} ({c.diff:+.4f}{where}; {more})")
    return "; ".join(parts)


def _best_verdict(f: Finding, levels: Sequence[LevelStats], judged: list[Comparison], extra: dict[str, Any]) -> Verdict:
    bars = {b.level: b for b in levels}
    ranked = ranked_levels([b for b in levels if b.n > 0], extra["maximize"])
    best, chosen = ranked[0], bars[f.value]
    measured = f"best {_fmt(best)}" + ("" if best is chosen else f"; paper's {_fmt(chosen)}")
    # A level beats the paper's choice when it is decided better by more than the margin can hold.
    beats = [c for c in judged if c.verdict is Call.BETTER and not c.equivalent]
    if beats:
        return Verdict(NOT_REPRODUCED, measured, "; ".join(f"{c.level} is {c.describe(f.value)}" for c in beats), judged)
    if all(c.verdict is Call.WORSE or c.equivalent for c in judged):
        worse = [c.level for c in judged if c.verdict is Call.WORSE and not c.equivalent]
        same = [c.level for c in judged if c.equivalent]
        return Verdict(REPRODUCED, measured, f"no level beats {f.value}: " + "; ".join(
            part for part in (f"{', '.join(worse)} decided worse" if worse else "",
                              f"{', '.join(same)} equivalent within ±{judged[0].margin:g}" if same else "") if part),
                       judged)
    return Verdict(INCONCLUSIVE, measured, f"no level is decided better than {f.value}, but undecided: "
                                            f"{_undecided(judged)}", judged)


def _no_effect_verdict(f: Finding, levels: Sequence[LevelStats], judged: list[Comparison],
                       extra: dict[str, Any]) -> Verdict:
    bars = {b.level: b for b in levels}
    measured = "; ".join(_fmt(bars[lv]) for lv in [f.value, *(c.level for c in judged)])
    differs = [c for c in judged if c.verdict in (Call.BETTER, Call.WORSE) and not c.equivalent]
    if differs:
        return Verdict(NOT_REPRODUCED, measured, "; ".join(f"{c.level} is {c.describe(f.value)}" for c in differs),
                        judged)
    if all(c.equivalent for c in judged):
        return Verdict(REPRODUCED, measured, f"every level is equivalent to {f.value} within ±{judged[0].margin:g}: "
                        + "; ".join(f"{c.level} {c.diff:+.4f} ({c.confidence:.1%} CI {c.low:+.4f}..{c.high:+.4f})"
                                    for c in judged), judged)
    return Verdict(INCONCLUSIVE, measured, f"no level is decided different from {f.value}, but not all are shown "
                                            f"equivalent within ±{judged[0].margin:g}: {_undecided(judged)}", judged)


KINDS.register("best", FindingKind(lambda f, levels: _against(f, levels, [b.level for b in levels]), _best_verdict))
KINDS.register("no_effect", FindingKind(lambda f, levels: _against(f, levels, f.levels), _no_effect_verdict))


def _fewest_oov(f: Finding, levels: Sequence[LevelStats], judged: list[Comparison], extra: dict[str, Any]) -> Verdict:
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


KINDS.register("fewest_oov", FindingKind(lambda f, levels: [], _fewest_oov))


@dataclass
class Case:
    """One finding with what its sweep measured, before the report judges them all together."""

    finding: Finding
    levels: Sequence[LevelStats]
    design: Design  # its sweep's (margin, looks); the family's error rate is the report's
    maximize: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def margin(self) -> float:
        return self.finding.margin if self.finding.margin is not None else self.design.margin


def report_design(cases: Sequence[Case], alpha: float) -> Design:
    """The report's one family: a false-discovery rate ``alpha`` over every finding's comparisons
    (when nothing differs at all, also the chance of any false better/worse in the whole report),
    split over the most looks any of its sweeps planned."""
    most = max(cases, key=lambda c: c.design.looks, default=None)
    return Design(alpha=alpha, family="fdr", looks=most.design.looks if most else 1,
                  first_look=most.design.first_look if most else 0)


def judge_findings(cases: Sequence[Case], alpha: float = 0.05) -> tuple[list[Verdict], Design, int]:
    """Every finding's verdict, its comparisons judged as one family with all the others'.
    Returns the verdicts, the family's design and the number of comparisons in it."""
    out: list[Verdict | None] = [None] * len(cases)
    pending: list[tuple[int, list[Difference]]] = []
    for i, case in enumerate(cases):
        f = case.finding
        early = degenerate_verdict(case.levels) if f.kind != "fewest_oov" else None
        needed = early or KINDS.get(f.kind).comparisons(f, case.levels)
        if isinstance(needed, Verdict):
            out[i] = needed
        else:
            pending.append((i, needed))
    design = report_design(cases, alpha)
    diffs = [d for _, ds in pending for d in ds]
    judged = iter(judge(diffs, design, [cases[i].maximize for i, ds in pending for _ in ds],
                        [cases[i].margin for i, ds in pending for _ in ds]))
    for i, ds in pending:
        case = cases[i]
        out[i] = KINDS.get(case.finding.kind).verdict(case.finding, case.levels, [next(judged) for _ in ds],
                                                      {"maximize": case.maximize, **case.extra})
    return [v for v in out if v is not None], design, len(diffs)
