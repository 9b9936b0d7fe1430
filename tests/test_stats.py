"""The verdicts' statistics: each piece against scipy, and the decision rules by simulation through
the production code (``level_stats``, ``judge``, ``next_round``): the error rate they state holds
under the null, and real effects are found."""

import math

import numpy as np
import pytest
from scipy import stats

from mmsearch.stats import (
    Design,
    Looks,
    TrialRecord,
    Verdict,
    detectable_difference,
    difference,
    judge,
    level_stats,
    next_round,
)


def _sweep(rng: np.random.Generator, effects: dict[str, float], repeats: int, sd: float = 0.004, rho: float = 0.0,
           paired: bool = True) -> list[TrialRecord]:
    """Repeats of each level; repeat r of every level shares a seed effect (pair correlation ``rho``)."""
    seed = rng.standard_normal(repeats)
    out = []
    for i, (level, effect) in enumerate(effects.items()):
        values = 0.8 + effect + sd * (math.sqrt(rho) * seed + math.sqrt(1 - rho) * rng.standard_normal(repeats))
        out += [TrialRecord(i * 1000 + r, "COMPLETE", float(v), level=level, repeat=r if paired else None)
                for r, v in enumerate(values)]
    return out


def test_paired_interval_and_p_match_scipy() -> None:
    a, b = [0.71, 0.74, 0.73, 0.70, 0.72], [0.70, 0.72, 0.73, 0.68, 0.70]
    d = difference("a", "b", dict(enumerate(a)), dict(enumerate(b)))
    res = stats.ttest_rel(a, b)
    ci = res.confidence_interval(0.95)
    assert d.method == "paired" and d.n == 5 and d.p_value() == pytest.approx(res.pvalue)
    assert d.interval(0.05) == pytest.approx((ci.low, ci.high))
    # Repeats with no partner are left out of the pairing, and said so.
    d = difference("a", "b", {0: 0.71, 1: 0.74, 2: 0.73, 7: 0.9}, {0: 0.70, 1: 0.72, 2: 0.73})
    assert d.method == "paired" and d.n == 3 and d.unpaired == 1 and "1 unmatched" in d.how()


def test_holm_and_benjamini_hochberg_levels() -> None:
    def diff(p: float) -> object:  # a difference whose two-sided p is p (df large: normal)
        from mmsearch.stats import Difference

        return Difference("x", "b", stats.norm.isf(p / 2), 1.0, 1e9, "paired", 100)

    ps = [0.01, 0.04, 0.03, 0.2]
    holm = judge([diff(p) for p in ps], Design(margin=0.0))
    # Holm: 0.01 <= 0.05/4 rejected; 0.03 > 0.05/3 stops; the rest at the level where it stopped.
    assert [c.verdict for c in holm] == [Verdict.BETTER] + [Verdict.INCONCLUSIVE] * 3
    assert holm[0].confidence == pytest.approx(1 - 0.05 / 4) and holm[2].confidence == pytest.approx(1 - 0.05 / 3)
    fdr = judge([diff(p) for p in ps], Design(margin=0.0, family="fdr"))
    # BH: the largest k with p_(k) <= k 0.05 / 4 is k = 3 (0.04 <= 0.0375? no; 0.03 <= 0.025? no; 0.01 yes).
    assert [c.verdict for c in fdr] == [Verdict.BETTER] + [Verdict.INCONCLUSIVE] * 3
    fdr = judge([diff(p) for p in (0.01, 0.02, 0.03, 0.2)], Design(margin=0.0, family="fdr"))
    assert [c.verdict.value for c in fdr] == ["better", "better", "better", "inconclusive"]  # 0.03 <= 3 x 0.0125


def test_four_verdicts_and_the_margin() -> None:
    rng = np.random.default_rng(3)
    levels = {b.level: b for b in level_stats(_sweep(rng, {"base": 0, "up": 0.02, "same": 0.0, "down": -0.02}, 10,
                                                        sd=0.002, rho=0.5), ["base", "up", "same", "down"], "base")}
    assert levels["up"].vs_base == "better" and levels["down"].vs_base == "worse"
    assert levels["same"].vs_base == "equivalent" and levels["same"].comparison.equivalent
    assert levels["base"].vs_base == "base" and levels["base"].comparison is None
    vague = level_stats(_sweep(rng, {"base": 0, "x": 0.003}, 3, sd=0.01), ["base", "x"], "base")[1]
    assert vague.vs_base == "inconclusive" and vague.comparison.repeats_to_decide and "would likely decide" in \
        vague.comparison.describe()
    one = level_stats(_sweep(rng, {"base": 0, "x": 0.05}, 1), ["base", "x"], "base")[1]
    assert one.vs_base == "inconclusive" and "no interval" in one.comparison.describe()


@pytest.mark.parametrize("levels,repeats,rho,paired", [(5, 3, 0.0, True), (7, 2, 0.0, True), (3, 5, 0.6, True),
                                                       (4, 3, 0.0, False)])
def test_no_true_difference_is_called_better_or_worse_more_than_5_percent(levels: int, repeats: int, rho: float,
                                                                           paired: bool) -> None:
    rng = np.random.default_rng(levels * 100 + repeats)
    labels = [str(i) for i in range(levels)]
    sims, false = 1500, 0
    for _ in range(sims):
        out = level_stats(_sweep(rng, dict.fromkeys(labels, 0.0), repeats, rho=rho, paired=paired), labels, "0")
        false += any(b.vs_base in ("better", "worse") for b in out)
    # 5% with a simulation margin of 3 standard errors (1.7 points at 1,500 sweeps).
    assert false / sims <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / sims), false / sims


def _until_decided(rng: np.random.Generator, effects: dict[str, float], start: int, cap: int,
                   looks: Looks | None) -> tuple[dict[str, str], int]:
    """The rule of ``--until-decided``: round after round through ``next_round``."""
    labels = list(effects)
    seed = rng.standard_normal(cap)
    values = {lv: 0.8 + e + 0.004 * (math.sqrt(0.3) * seed + math.sqrt(0.7) * rng.standard_normal(cap))
              for lv, e in effects.items()}
    cells = [(lv, r) for lv in labels for r in range(start)]
    design = Design().with_looks(looks) if looks else Design()
    while True:
        trials = [TrialRecord(i, "COMPLETE", float(values[lv][r]), level=lv, repeat=r) for i, (lv, r) in enumerate(cells)]
        out = level_stats(trials, labels, labels[0], True, design)
        plan = next_round(out, cap)
        if plan is None:
            return {b.level: b.vs_base for b in out}, len(cells)
        cells += [(lv, plan[0]) for lv in plan[1]]


def test_looking_again_after_each_round_keeps_the_error_rate_only_with_the_sequential_boundary() -> None:
    rng = np.random.default_rng(11)
    effects = {"base": 0.0, "a": 0.0, "b": 0.0}
    sims = 1200
    held = sum(any(v in ("better", "worse") for v in _until_decided(rng, effects, 3, 10, Looks(8, 3))[0].values())
               for _ in range(sims)) / sims
    naive = sum(any(v in ("better", "worse") for v in _until_decided(rng, effects, 3, 10, None)[0].values())
                for _ in range(sims)) / sims
    margin = 3 * math.sqrt(0.05 * 0.95 / sims)
    assert held <= 0.05 + margin, held
    assert naive > 0.05 + margin, naive  # looking 8 times at the 5% level: the stated rate would be a lie


def test_repeats_until_decided_find_a_real_difference_and_stop_adding_where_decided() -> None:
    rng = np.random.default_rng(5)
    sims, better, equivalent, used = 400, 0, 0, 0
    for _ in range(sims):
        verdicts, n = _until_decided(rng, {"base": 0.0, "up": 0.01, "flat": 0.0}, 3, 10, Looks(8, 3))
        better += verdicts["up"] == "better"
        equivalent += verdicts["up"] == "equivalent"
        used += n
    assert better / sims >= 0.9 and equivalent / sims <= 0.05, (better / sims, equivalent / sims)
    assert used / sims < 3 * 10  # a decided level gets no more repeats


def test_next_round_adds_the_base_and_the_undecided_levels_only() -> None:
    rng = np.random.default_rng(2)
    out = level_stats(_sweep(rng, {"base": 0, "clear": 0.05, "vague": 0.001}, 3, sd=0.002), ["base", "clear", "vague"],
                      "base")
    assert {b.level: b.vs_base for b in out}["clear"] == "better"
    assert next_round(out, 10) == (3, ["base", "vague"])
    assert next_round(out, 3) is None  # the cap


def test_power_before_the_cost() -> None:
    # Paired at 5 repeats, sd 0.0057 of a difference, one comparison at 5%: about 0.0113 (the plan's figure).
    assert detectable_difference(0.0057, 5, 0.05) == pytest.approx(
        (stats.t.ppf(0.975, 4) + stats.t.ppf(0.8, 4)) * 0.0057 / math.sqrt(5))
    assert detectable_difference(0.0057, 1, 0.05) == math.inf


def test_a_repeat_pairs_levels_same_initial_weights_and_batch_order() -> None:
    """What makes the pairing real: the same seed gives two levels of a factor the same initial
    weights (the parts both share) and the same batch order; another repeat gives other ones."""
    import torch

    from mmsearch.config import load_experiment, with_overrides
    from mmsearch.models import build_networks
    from mmsearch.training import TensorBatches, seed_everything

    base = load_experiment("cpu")

    def start(cfg: object, seed: int) -> tuple[dict, list]:
        seed_everything(seed)
        net = build_networks(cfg, ["fusion"], fusion_inputs=16)["fusion"]
        batches = TensorBatches([torch.zeros(100, 1)], torch.arange(100.0), 25, shuffle=True, seed=seed)
        return net.state_dict(), [targets.tolist() for _, targets in batches]

    a_weights, a_order = start(with_overrides(base, {"fusion.dropout_p": 0.05}), 7)
    b_weights, b_order = start(with_overrides(base, {"fusion.dropout_p": 0.2}), 7)
    c_weights, c_order = start(with_overrides(base, {"fusion.dropout_p": 0.05}), 8)
    assert a_weights.keys() == b_weights.keys() and all(torch.equal(a_weights[k], b_weights[k]) for k in a_weights)
    assert a_order == b_order and a_order != c_order
    assert not all(torch.equal(a_weights[k], c_weights[k]) for k in a_weights)
