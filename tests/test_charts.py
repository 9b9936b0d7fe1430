import math

import numpy as np
import pytest
from scipy import stats

from mmsearch.charts import (
    TrialRecord,
    ablation_bars_data,
    best_level,
    bubble_data,
    curves_data,
    length_data,
    mean_ci,
    oov_data,
    welch_diff,
)
from mmsearch.text import OovReport


def _t(n: int, level: str, value: float | None, state: str = "COMPLETE", **attrs: object) -> TrialRecord:
    return TrialRecord(n, state, value, level=level, repeat=n % 2, curve={1: 0.5, 2: value or 0.4}, attrs=dict(attrs))


TRIALS = [_t(0, "0", 0.70), _t(1, "0", 0.72), _t(2, "1", 0.75), _t(3, "1", 0.77), _t(4, "2", None, "FAIL")]


def test_ablation_bars_mean_ci_base_best_and_failed_levels() -> None:
    bars = ablation_bars_data(TRIALS, ["0", "1", "2"], base_level="1")
    assert [b["level"] for b in bars] == ["0", "1", "2"]
    assert math.isclose(bars[0]["mean"], 0.71) and math.isclose(bars[0]["std"], 0.0141421356, rel_tol=1e-6)
    half = stats.t.ppf(0.975, 1) * 0.0141421356 / math.sqrt(2)  # n=2: t with 1 degree of freedom, 12.7
    assert bars[0]["ci_low"] == pytest.approx(0.71 - half) and bars[0]["ci_high"] == pytest.approx(0.71 + half)
    assert bars[1]["is_base"] and bars[1]["is_best"] and not bars[0]["is_best"] and bars[1]["vs_base"] == "base"
    assert bars[2]["n"] == 0 and bars[2]["failed"] == 1 and math.isnan(bars[2]["mean"])
    # Two repeats a side cannot tell 0.71 from 0.76: the interval of the difference spans zero.
    assert bars[0]["diff"] == pytest.approx(-0.05) and bars[0]["diff_low"] < 0 < bars[0]["diff_high"]
    assert bars[0]["vs_base"] == "not distinguishable"
    assert best_level(bars) == "1" and best_level(bars, maximize=False) == "0"


def test_a_level_is_better_only_when_the_interval_says_so() -> None:
    rng = np.random.default_rng(0)
    base = [_t(i, "b", 0.70 + 0.002 * rng.standard_normal()) for i in range(5)]
    clear = [_t(10 + i, "x", 0.75 + 0.002 * rng.standard_normal()) for i in range(5)]
    noisy = [_t(20 + i, "y", 0.71 + 0.05 * rng.standard_normal()) for i in range(5)]
    bars = {b["level"]: b for b in ablation_bars_data(base + clear + noisy, ["b", "x", "y"], "b")}
    assert bars["x"]["vs_base"] == "better" and bars["x"]["diff_low"] > 0
    assert bars["y"]["vs_base"] == "not distinguishable"
    # For a loss, lower is better: the same interval reads the other way.
    assert {b["level"]: b for b in ablation_bars_data(base + clear, ["b", "x"], "b", maximize=False)}["x"]["vs_base"] == "worse"


def test_welch_interval_matches_scipy() -> None:
    a, b = [0.71, 0.74, 0.73, 0.70], [0.69, 0.70, 0.66]
    diff, low, high = welch_diff(a, b)
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(0.95)
    assert diff == pytest.approx(np.mean(a) - np.mean(b)) and low == pytest.approx(ci.low) and high == pytest.approx(ci.high)
    assert math.isnan(mean_ci([0.5])[2]) and math.isnan(welch_diff([0.5], [0.4, 0.6])[1])


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
    bars = ablation_bars_data(flat, ["a", "b"], "a")
    assert [b["degenerate"] for b in bars] == [True, True] and bars[0]["baseline"] == pytest.approx(0.5877)
    verdict = degenerate_verdict(bars)
    assert verdict is not None and verdict.outcome == DEGENERATE and "0.5877" in verdict.why
    learned = flat[:2] + [TrialRecord(i, "COMPLETE", 0.70 + i / 100, level="b", repeat=i, attrs=base) for i in (2, 3)]
    bars = ablation_bars_data(learned, ["a", "b"], "a")
    assert [b["degenerate"] for b in bars] == [True, False] and degenerate_verdict(bars) is None
    no_baseline = ablation_bars_data([TrialRecord(0, "COMPLETE", 0.1, level="a", repeat=0)], ["a"], "a")
    assert no_baseline[0]["degenerate"] is False  # a loss metric, or trials from before: nothing to compare with


def test_one_rule_ranks_levels_and_breaks_ties_the_same_everywhere() -> None:
    from mmsearch.charts import best_level, ranked_levels

    def bar(level: str, mean: float, n: int, base: bool = False) -> dict:
        return {"level": level, "mean": mean, "n": n, "is_base": base}

    bars = [bar("a", 0.5, 3), bar("b", 0.7, 2), bar("c", 0.7, 3), bar("d", 0.9, 0)]
    assert [b["level"] for b in ranked_levels(bars)] == ["c", "b", "a"]  # unmeasured d never ranks
    assert best_level([bar("x", 0.7, 3), bar("base", 0.7, 3, base=True)]) == "base"  # a full tie keeps the base
    assert best_level([bar("x", 0.7, 3), bar("y", 0.7, 3)]) == "x"  # then the sweep's order
    assert best_level(bars, maximize=False) == "a"
    # The report's verdict names the same best level as `sweep status` on a tie.
    from mmsearch.report._findings import Finding, _best

    stats = {"ci_low": 0.6, "ci_high": 0.6}
    levels = [{**bar("2", 0.6, 2), **stats, "values": [0.6, 0.6]}, {**bar("3", 0.6, 3), **stats, "values": [0.6] * 3}]
    finding = Finding.model_validate({"figure": "f", "section": "4", "sweep": "s", "kind": "best", "value": "2",
                                      "tried": ["2", "3"], "metric": "val_f1", "quote": "q"})
    verdict = _best(finding, levels, {"maximize": True})
    assert verdict.measured.startswith("best 3") and best_level(levels) == "3", verdict
