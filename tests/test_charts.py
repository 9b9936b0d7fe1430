import math

import numpy as np
import pytest
from scipy import stats

from mmsearch.charts import bubble_data, curves_data, length_data, oov_data
from mmsearch.stats import TrialRecord, best_level, difference, level_stats, mean_ci
from mmsearch.text import OovReport


def _t(n: int, level: str, value: float | None, state: str = "COMPLETE", **attrs: object) -> TrialRecord:
    return TrialRecord(n, state, value, level=level, repeat=n % 2, curve={1: 0.5, 2: value or 0.4}, attrs=dict(attrs))


TRIALS = [_t(0, "0", 0.70), _t(1, "0", 0.72), _t(2, "1", 0.75), _t(3, "1", 0.77), _t(4, "2", None, "FAIL")]


def test_level_stats_mean_ci_base_best_and_failed_levels() -> None:
    bars = level_stats(TRIALS, ["0", "1", "2"], base_level="1")
    assert [b.level for b in bars] == ["0", "1", "2"]
    assert math.isclose(bars[0].mean, 0.71) and math.isclose(bars[0].std, 0.0141421356, rel_tol=1e-6)
    half = stats.t.ppf(0.975, 1) * 0.0141421356 / math.sqrt(2)  # n=2: t with 1 degree of freedom, 12.7
    assert bars[0].ci_low == pytest.approx(0.71 - half) and bars[0].ci_high == pytest.approx(0.71 + half)
    assert bars[1].is_base and bars[1].is_best and not bars[0].is_best and bars[1].vs_base == "base"
    assert bars[2].n == 0 and bars[2].failed == 1 and math.isnan(bars[2].mean)
    # Two repeats a side, paired on seeds 0 and 1: -0.05 both times, a difference with no spread.
    assert bars[0].diff == pytest.approx(-0.05) and bars[0].comparison.difference.method == "paired"
    assert best_level(bars) == "1" and best_level(bars, maximize=False) == "0"


def test_a_level_is_better_only_when_the_interval_says_so() -> None:
    rng = np.random.default_rng(0)
    base = [_t(i, "b", 0.70 + 0.002 * rng.standard_normal()) for i in range(5)]
    clear = [_t(10 + i, "x", 0.75 + 0.002 * rng.standard_normal()) for i in range(5)]
    noisy = [_t(20 + i, "y", 0.71 + 0.05 * rng.standard_normal()) for i in range(5)]
    bars = {b.level: b for b in level_stats(base + clear + noisy, ["b", "x", "y"], "b")}
    assert bars["x"].vs_base == "better" and bars["x"].diff_low > 0
    assert bars["y"].vs_base == "inconclusive"
    # For a loss, lower is better: the same interval reads the other way.
    assert {b.level: b for b in level_stats(base + clear, ["b", "x"], "b", maximize=False)}["x"].vs_base == "worse"


def test_welch_interval_matches_scipy_where_no_seed_matches() -> None:
    a, b = [0.71, 0.74, 0.73, 0.70], [0.69, 0.70, 0.66]
    d = difference("a", "b", {-1 - i: v for i, v in enumerate(a)}, {10 + i: v for i, v in enumerate(b)})
    low, high = d.interval(0.05)
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(0.95)
    assert d.method == "Welch" and d.diff == pytest.approx(np.mean(a) - np.mean(b))
    assert low == pytest.approx(ci.low) and high == pytest.approx(ci.high) and d.p_value() == pytest.approx(res.pvalue)
    assert math.isnan(mean_ci([0.5])[2]) and not difference("a", "b", {0: 0.5}, {0: 0.4, 1: 0.6}).testable


def test_curves_name_the_factor_and_share_a_colour_group_per_level() -> None:
    records = TRIALS + [TrialRecord(9, "FAIL", None)]
    curves = curves_data(records, factor="fusion.dropout_count")
    assert len(curves) == 5 and curves[2]["epochs"] == [1, 2] and curves[2]["values"] == [0.5, 0.75]
    assert curves[0]["label"] == "fusion.dropout_count=0" and curves[0]["group"] == curves[1]["group"] == "0"
    history = TrialRecord(1, "COMPLETE", 0.7, level="a", attrs={"history": {"val_loss": [0.3, 0.2, 0.25]}})
    assert curves_data([history], "f", "val_loss")[0]["values"] == [0.3, 0.2, 0.25]


def test_bubble_uses_size_params_and_mean_f1() -> None:
    trials = [_t(0, "resnet18", 0.6, size_mb=42.7, params=11e6), _t(1, "resnet18", 0.7, size_mb=42.7, params=11e6),
              _t(2, "resnet50", None, "FAIL")]
    points = bubble_data(trials, ["resnet18", "resnet50"])
    assert len(points) == 1 and points[0]["level"] == "resnet18" and points[0]["size_mb"] == 42.7
    assert points[0]["params"] == 11_000_000 and points[0]["f1"] == pytest.approx(0.65)


def test_length_and_oov_data() -> None:
    data = length_data([3, 5, 5, 7, 12])
    assert data["histogram"] == {3: 1, 5: 2, 7: 1, 12: 1} and data["fewer_than"][6] == 3 and data["box"]["median"] == 5
    rows = oov_data([OovReport("a", 100, 7, 9, 500, []), OovReport("b", 100, 0, 0, 500, [], error="offline")])
    assert rows[0]["oov_words"] == 7 and rows[0]["available"] and not rows[1]["available"]


def test_a_level_no_better_than_the_most_frequent_label_is_flagged_everywhere() -> None:
    from mmsearch.report._findings import DEGENERATE, degenerate_verdict

    base = {"baseline_f1": 0.5877}
    flat = [TrialRecord(i, "COMPLETE", 0.5877, level=lv, repeat=i % 2, attrs=base) for i, lv in enumerate("aabb")]
    bars = level_stats(flat, ["a", "b"], "a")
    assert [b.degenerate for b in bars] == [True, True] and bars[0].baseline == pytest.approx(0.5877)
    verdict = degenerate_verdict(bars)
    assert verdict is not None and verdict.outcome == DEGENERATE and "0.5877" in verdict.why
    learned = flat[:2] + [TrialRecord(i, "COMPLETE", 0.70 + i / 100, level="b", repeat=i, attrs=base) for i in (2, 3)]
    bars = level_stats(learned, ["a", "b"], "a")
    assert [b.degenerate for b in bars] == [True, False] and degenerate_verdict(bars) is None
    no_baseline = level_stats([TrialRecord(0, "COMPLETE", 0.1, level="a", repeat=0)], ["a"], "a")
    assert no_baseline[0].degenerate is False  # a loss metric, or trials from before: nothing to compare with


def test_one_rule_ranks_levels_and_breaks_ties_the_same_everywhere() -> None:
    from mmsearch.stats import ranked_levels

    def bars(means: dict[str, tuple[float, int]], base: str | None = None) -> list:
        trials = [TrialRecord(i * 10 + r, "COMPLETE", mean, level=lv, repeat=r)
                  for i, (lv, (mean, n)) in enumerate(means.items()) for r in range(n)]
        return level_stats(trials, list(means), base)

    levels = bars({"a": (0.5, 3), "b": (0.75, 2), "c": (0.75, 3), "d": (0.875, 0)})  # exact in binary: true ties
    assert [b.level for b in ranked_levels(levels)] == ["c", "b", "a"]  # unmeasured d never ranks
    assert best_level(bars({"x": (0.75, 3), "base": (0.75, 3)}, base="base")) == "base"  # a full tie keeps the base
    assert best_level(bars({"x": (0.75, 3), "y": (0.75, 3)})) == "x"  # then the sweep's order
    assert best_level(levels, maximize=False) == "a"
    # The report's verdict names the same best level as `sweep status` on a tie.
    from mmsearch.report._findings import Case, Finding, judge_findings

    tie = bars({"2": (0.625, 2), "3": (0.625, 3)})
    finding = Finding.model_validate({"figure": "f", "section": "4", "sweep": "s", "kind": "best", "value": "2",
                                      "tried": ["2", "3"], "metric": "val_f1", "quote": "q"})
    from mmsearch.stats import Design

    verdict = judge_findings([Case(finding, tie, Design())])[0][0]
    assert verdict.measured.startswith("best 3") and best_level(tie) == "3", verdict
