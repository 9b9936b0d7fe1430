"""``python -m benchmarks.verdicts``: how often mmsearch's verdicts are wrong, and what they cost.

Every figure comes from the production decision code (``mmsearch.stats.level_stats``, the
report's ``judge_findings``, the reproduction's ``judge_across``, the sequential rule
``next_round``) fed with simulated sweeps of the shipped shapes (levels x repeats of
``sweeps/*.yaml`` under the ``paper`` profile, the 16 level-comparing findings of
``findings/paper.yaml``). A repeat's value is ``mean(level) + sd * (sqrt(rho) * seed_r +
sqrt(1 - rho) * noise)``: the same seed shared by every level's repeat r, with pair correlation
``rho`` and spread ``sd`` measured on the real captions (``--real`` reads them from the studies
of ``benchmarks/sweeps/verdicts-*.yaml``, else the values given).

* V1 false verdicts under the null (every level identical): per sweep, and per whole
  reproduction (the findings' verdicts and the final model's decisions). Target: at most 5%.
* V2 power: one level truly +0.01 better than the base, ``--until-decided --max-repeats 10``:
  *better* at least 90% of the time, *equivalent* at most 5%, and the trials it used.
* V3 a real null on real data: the verdicts of ``verdicts-null-seeds`` (levels that differ only
  in the seed base), read from its study.
* V4 trials per decided comparison, paired + sequential against the former fixed repeats with
  Welch's interval, at the same family-wise error rate (Holm). Target: at least 2x fewer.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EFFECT, SD, RHO = 0.01, 0.004, 0.0


@dataclass
class Shape:
    name: str
    labels: list[str]
    base: str | None
    repeats: int
    maximize: bool = True


def shipped_shapes(experiment: str = "paper") -> dict[str, Shape]:
    from mmsearch.search import available_sweeps, load_sweep

    out = {}
    for path in available_sweeps():
        spec, _ = load_sweep(str(path), experiment)
        if spec.mode == "ablation":
            out[spec.name] = Shape(spec.name, spec.labels, spec.base, int(spec.repeats), spec.maximize)
    return out


class World:
    """Draws repeats of a simulated sweep: one seed effect per repeat index, shared by every level."""

    def __init__(self, rng: np.random.Generator, shape: Shape, effects: dict[str, float], sd: float, rho: float,
                 max_repeats: int) -> None:
        seed = rng.standard_normal(max_repeats)
        self.values = {lv: 0.80 + effects.get(lv, 0.0) + sd * (math.sqrt(rho) * seed
                                                              + math.sqrt(1 - rho) * rng.standard_normal(max_repeats))
                       for lv in shape.labels}

    def trials(self, cells: Sequence[tuple[str, int]]) -> list:
        from mmsearch.stats import TrialRecord

        return [TrialRecord(i, "COMPLETE", float(self.values[lv][r]), level=lv, repeat=r) for i, (lv, r) in enumerate(cells)]


def fixed(world: World, shape: Shape, repeats: int, design) -> list:  # type: ignore[no-untyped-def]
    from mmsearch.stats import level_stats

    cells = [(lv, r) for lv in shape.labels for r in range(repeats)]
    return level_stats(world.trials(cells), shape.labels, shape.base, shape.maximize, design)


def sequential(world: World, shape: Shape, start: int, cap: int, design) -> tuple[list, int]:  # type: ignore[no-untyped-def]
    """The rule ``sweep run --until-decided`` follows (``next_round``), round after round."""
    from mmsearch.stats import Looks, level_stats, next_round

    design = design.with_looks(Looks(cap - start + 1, start))
    cells = [(lv, r) for lv in shape.labels for r in range(start)]
    while True:
        levels = level_stats(world.trials(cells), shape.labels, shape.base, shape.maximize, design)
        plan = next_round(levels, cap)
        if plan is None:
            return levels, len(cells)
        repeat, labels = plan
        cells += [(lv, repeat) for lv in labels]


def v1(shapes: dict[str, Shape], sd: float, rho: float, sims: int, rng: np.random.Generator) -> list[str]:
    from mmsearch.report import load_findings
    from mmsearch.report._findings import NOT_REPRODUCED, Case, judge_findings
    from mmsearch.stats import Design, SweepLevels, judge_across

    findings = [f for f in load_findings() if f.kind != "fewest_oov"]
    sweeps = sorted({f.sweep for f in findings})
    false_sweep = {name: 0 for name in sweeps}
    false_report = false_decision = 0
    for _ in range(sims):
        levels = {}
        for name in sweeps:
            shape = shapes[name]
            design = Design()
            levels[name] = fixed(World(rng, shape, {}, sd, rho, shape.repeats), shape, shape.repeats, design)
            false_sweep[name] += any(b.vs_base in ("better", "worse") for b in levels[name])
        verdicts, _, _ = judge_findings([Case(f, levels[f.sweep], Design(), shapes[f.sweep].maximize) for f in findings])
        false_report += any(v.outcome == NOT_REPRODUCED or any(c.verdict.value in ("better", "worse")
                                                               for c in v.comparisons) for v in verdicts)
        decided = judge_across([SweepLevels(n, levels[n], shapes[n].maximize, Design()) for n in sweeps], 0.05)
        false_decision += any(c.verdict.value in ("better", "worse") for cs in decided.values() for c in cs.values())
    worst = max(false_sweep, key=lambda n: false_sweep[n])
    error = 3 * math.sqrt(0.05 * 0.95 / sims)  # three standard errors of a simulated 5%
    pooled = sum(false_sweep.values()) / sims / len(sweeps)
    return [f"| V1 null, per sweep: all {len(sweeps)} level-comparing sweeps pooled | {pooled:.1%} of sweeps call a level "
            f"better/worse | ≤ 5% | {'met' if pooled <= 0.05 + error / 4 else 'NOT met'} |",
            f"| V1 null, per sweep: the worst of the {len(sweeps)} ({worst}, {len(shapes[worst].labels)} levels x "
            f"{shapes[worst].repeats} repeats; the largest of 16 estimates, each ±{error:.1%}) | {false_sweep[worst] / sims:.1%} "
            f"| ≤ 5% within simulation error | {'met' if false_sweep[worst] / sims <= 0.05 + error else 'NOT met'} |",
            f"| V1 null, whole reproduction: any false better/worse/not reproduced among the {len(findings)} findings | "
            f"{false_report / sims:.1%} of reproductions | ≤ 5% | {'met' if false_report / sims <= 0.05 + error / 2 else 'NOT met'} |",
            f"| V1 null, whole reproduction: the final model changes any factor | {false_decision / sims:.1%} of "
            f"reproductions | ≤ 5% | {'met' if false_decision / sims <= 0.05 + error / 2 else 'NOT met'} |"]


def v2(shapes: dict[str, Shape], sd: float, rho: float, sims: int, rng: np.random.Generator, cap: int = 10
       ) -> tuple[list[str], float]:
    from mmsearch.stats import Design

    rows, used_by = [], {}
    for name in ("fusion-dropout-count", "text-lr"):
        shape = shapes[name]
        target = next(lv for lv in shape.labels if lv != shape.base)
        better = equivalent = used = 0
        for _ in range(sims):
            levels, n = sequential(World(rng, shape, {target: EFFECT}, sd, rho, cap), shape, 3, cap, Design())
            verdict = next(b for b in levels if b.level == target).vs_base
            better += verdict == "better"
            equivalent += verdict == "equivalent"
            used += n
        used_by[name] = used / sims
        ok = better / sims >= 0.9 and equivalent / sims <= 0.05
        rows.append(f"| V2 power: {name} ({len(shape.labels)} levels), level {target} truly +{EFFECT} (sd {sd}), "
                    f"--until-decided --max-repeats {cap} | better {better / sims:.1%}, equivalent "
                    f"{equivalent / sims:.1%}; {used / sims:.1f} trials on average (cap {len(shape.labels) * cap}) | "
                    f"better ≥ 90%, equivalent ≤ 5% | {'met' if ok else 'NOT met'} |")
    return rows, used_by["fusion-dropout-count"]


def welch_holm_detects(world: World, shape: Shape, repeats: int, target: str) -> bool:
    """The former rule (Welch's interval per level, now with Holm across the sweep's comparisons)."""
    from mmsearch.stats import Design, Difference, judge

    x = world.values
    diffs = []
    for lv in shape.labels:
        if lv == shape.base:
            continue
        a, b = x[lv][:repeats], x[str(shape.base)][:repeats]
        va, vb = a.var(ddof=1) / repeats, b.var(ddof=1) / repeats
        se = math.sqrt(va + vb)
        df = (va + vb) ** 2 / (va ** 2 / (repeats - 1) + vb ** 2 / (repeats - 1))
        diffs.append(Difference(lv, str(shape.base), float(a.mean() - b.mean()), se, df, "Welch", repeats))
    judged = {c.level: c for c in judge(diffs, Design())}
    return judged[target].verdict.value == "better"


def v4(shapes: dict[str, Shape], sd: float, rho: float, sims: int, rng: np.random.Generator, ours_trials: float
       ) -> list[str]:
    """Trials per decided comparison: ours (paired, sequential) against Welch's interval on fixed
    repeats at the same family-wise rate, (a) sized for the same 90% power, (b) at the shipped repeats."""
    from mmsearch.stats import Design

    shape = shapes["fusion-dropout-count"]
    target = next(lv for lv in shape.labels if lv != shape.base)
    decided = 0
    for _ in range(sims):
        levels, _ = sequential(World(rng, shape, {target: EFFECT}, sd, rho, 10), shape, 3, 10, Design())
        decided += sum(b.decided for b in levels)
    per_decided = ours_trials / (decided / sims)
    hits_at: dict[int, float] = {}
    for repeats in range(2, 41):
        hits_at[repeats] = sum(welch_holm_detects(World(rng, shape, {target: EFFECT}, sd, rho, repeats), shape, repeats,
                                                  target) for _ in range(sims)) / sims
        if hits_at[repeats] >= 0.9:
            break
    sized = repeats * len(shape.labels) / hits_at[repeats]
    shipped = shape.repeats
    if shipped not in hits_at:
        hits_at[shipped] = sum(welch_holm_detects(World(rng, shape, {target: EFFECT}, sd, rho, shipped), shape, shipped,
                                                  target) for _ in range(sims)) / sims
    today = shipped * len(shape.labels) / max(hits_at[shipped], 1e-9)
    return [f"| V4 trials per decided comparison ({shape.name}, {len(shape.labels)} levels, one truly +{EFFECT}, sd {sd}, "
            f"FWER 5%): paired + sequential (cap 10) vs Welch on fixed repeats sized for 90% power ({repeats} a level) | "
            f"{per_decided:.1f} vs {sized:.1f}: {sized / per_decided:.2f}x fewer | ≥ 2x | "
            f"{'met' if sized / per_decided >= 2 else 'NOT met'} |",
            f"| V4 the same against the shipped design ({shipped} repeats a level, Welch, Holm: decides the +{EFFECT} "
            f"{hits_at[shipped]:.0%} of the time) | {per_decided:.1f} vs {today:.1f}: {today / per_decided:.2f}x fewer | "
            f"≥ 2x | {'met' if today / per_decided >= 2 else 'NOT met'} |"]


def measured(path: str) -> tuple[float, float, list[str]]:
    """(sd of one repeat, pair correlation, V3 rows) from the real-caption studies of the benchmark's sweeps."""
    import optuna

    from mmsearch.search import load_sweep, looks_of, open_storage, records, summarize

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(path).optuna
    names = optuna.study.get_all_study_names(storage)
    out: dict[str, tuple] = {}
    for sweep in ("verdicts-pairs-text-lr", "verdicts-null-seeds"):
        name = next((n for n in names if n.startswith(sweep + "@")), None)
        if name is None:
            raise SystemExit(f"no study of {sweep} in {path}: run `mmsearch sweep run benchmarks/sweeps/{sweep}.yaml "
                             "--experiment cpu --data ../shared/data/comp5329-captions --storage ...` first")
        study = optuna.load_study(study_name=name, storage=storage)
        spec, _ = load_sweep(str(ROOT / "benchmarks" / "sweeps" / f"{sweep}.yaml"), "cpu")
        s = summarize(spec, name, study.get_trials(deepcopy=False), looks=looks_of(study.user_attrs))
        out[sweep] = (spec, s, records(study.get_trials(deepcopy=False)))
    spec, s, _ = out["verdicts-pairs-text-lr"]
    base = next(b for b in s.levels if b.is_base)
    sds = [b.std for b in s.levels if b.n >= 2]
    corr = []
    for b in s.levels:
        if b is base:
            continue
        common = sorted(set(b.by_repeat) & set(base.by_repeat))
        corr.append(float(np.corrcoef([b.by_repeat[r] for r in common], [base.by_repeat[r] for r in common])[0, 1]))
    sd, rho = float(np.sqrt(np.mean(np.square(sds)))), float(np.mean(corr))
    _, null, _ = out["verdicts-null-seeds"]
    calls = [f"{b.level}: {b.comparison.describe() if b.comparison else b.vs_base}" for b in null.levels]
    wrong = [b.level for b in null.levels if b.vs_base in ("better", "worse")]
    v3 = [f"| V3 real null on the real captions (verdicts-null-seeds: seed bases 0..4000, {null.levels[0].n} repeats) | "
          f"{'no better/worse verdict' if not wrong else 'FALSE verdicts: ' + ', '.join(wrong)}: "
          + "; ".join(calls).replace("|", "/") + f" | no better/worse | {'met' if not wrong else 'NOT met'} |"]
    pairs = (f"On the real captions (verdicts-pairs-text-lr, lr 0.01/0.02/0.03 x {base.n} matched seeds): sd of one "
             f"repeat {sd:.4f}; pair correlation of a level's repeat with the base's repeat of the same seed "
             + ", ".join(f"{c:+.2f}" for c in corr) + f" (mean {rho:+.2f}); per level: "
             + "; ".join(f"{b.level} {b.vs_base}" + (f" ({b.comparison.describe()})" if b.comparison else "")
                         for b in s.levels))
    return sd, rho, [*v3, "", pairs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.verdicts", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", metavar="STORAGE", help="the journal holding the studies of benchmarks/sweeps/"
                                                          "verdicts-*.yaml on the real captions (V3, sd and rho)")
    parser.add_argument("--sd", type=float, default=SD, help=f"spread of one repeat (default {SD}, the issue's; the real "
                                                             "captions' is printed with --real)")
    parser.add_argument("--rho", type=float, default=RHO, help=f"pair correlation without --real (default {RHO})")
    parser.add_argument("--sims", type=int, default=2000, help="simulated sweeps per figure (default 2000)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md as it is")
    args = parser.parse_args(argv)
    import logging

    logging.disable(logging.WARNING)
    rng = np.random.default_rng(args.seed)
    sd, rho, real = args.sd, args.rho, []
    if args.real:
        measured_sd, rho, real = measured(args.real)
        rho = max(0.0, rho)  # a negative estimate from few pairs: simulate as uncorrelated, the cautious side
    shapes = shipped_shapes()
    rows = ["| case | measured | target | verdict |", "|---|---|---|---|"]
    rows += v1(shapes, sd, rho, args.sims, rng)
    power, ours = v2(shapes, sd, rho, max(500, args.sims // 2), rng)
    rows += power
    rows += v4(shapes, sd, rho, max(500, args.sims // 2), rng, ours)
    rows += [r for r in real if r.startswith("|")]
    notes = [r for r in real if r and not r.startswith("|")]
    head = (f"Measured {dt.date.today()} by `python -m benchmarks.verdicts {' '.join(argv or sys.argv[1:])}`: "
            f"{args.sims} simulated sweeps per V1 figure, seed {args.seed}, sd of one repeat {sd:.4f}, pair correlation "
            f"{rho:.2f} {'(measured on the real captions, below)' if args.real else '(given)'}; margin ±0.005, α 5%.")
    text = "\n".join(["## verdicts: error rates, power and cost of the decisions", "", head, "", *rows, "", *notes])
    print(text)
    if not args.no_write:
        from benchmarks.__main__ import replace_section

        replace_section(ROOT / "BENCHMARKS.md", "verdicts", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
