import math

import pytest

from mmsearch.charts import (
    TrialRecord, ablation_bars_data, best_level, bubble_data, curves_data, length_data, oov_data,
)
from mmsearch.text import OovReport


def _t(n: int, level: str, value: float | None, state: str = "COMPLETE", **attrs: float) -> TrialRecord:
    return TrialRecord(n, state, value, level=level, repeat=n % 2, curve={1: 0.5, 2: value or 0.4}, attrs=dict(attrs))


TRIALS = [_t(0, "0", 0.70), _t(1, "0", 0.72), _t(2, "1", 0.75), _t(3, "1", 0.77), _t(4, "2", None, "FAIL")]


def test_ablation_bars_mean_std_base_and_failed_levels() -> None:
    bars = ablation_bars_data(TRIALS, ["0", "1", "2"], base_level="1")
    assert [b["level"] for b in bars] == ["0", "1", "2"]
    assert math.isclose(bars[0]["mean"], 0.71) and math.isclose(bars[0]["std"], 0.0141421356, rel_tol=1e-6)
    assert bars[1]["is_base"] and not bars[0]["is_base"]
    assert bars[2]["n"] == 0 and bars[2]["failed"] == 1 and math.isnan(bars[2]["mean"])
    assert best_level(bars) == "1" and best_level(bars, maximize=False) == "0"


def test_curves_skip_trials_without_epochs() -> None:
    records = TRIALS + [TrialRecord(9, "FAIL", None)]
    curves = curves_data(records)
    assert len(curves) == 5 and curves[2]["epochs"] == [1, 2] and curves[2]["f1"] == [0.5, 0.75]


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
