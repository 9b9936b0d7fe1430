from pathlib import Path

import numpy as np
import pytest

from mmsearch.charts import TrialRecord, ablation_bars_data
from mmsearch.report import VERDICTS, Finding, load_findings
from mmsearch.search import available_sweeps, load_sweep

from conftest import REAL_CAPTIONS, needs_glove, needs_mobilenet, needs_nltk


def _levels(means: dict[str, list[float]]) -> list[dict]:
    trials = [TrialRecord(i, "COMPLETE", v, level=lv, repeat=r) for i, (lv, vs) in enumerate(means.items())
              for r, v in enumerate(vs)]
    return ablation_bars_data(trials, list(means), base_level=None)


def _finding(kind: str, value: str, **kw: object) -> Finding:
    return Finding(figure="Figure X", section="4", sweep="s", kind=kind, value=value, tried=[value], metric="F1",
                   quote="q", **kw)


def test_every_finding_names_a_shipped_sweep_and_levels_it_tries() -> None:
    findings = load_findings()
    assert len(findings) == 17
    for f in findings:
        spec, _ = load_sweep(f.sweep, "paper")
        assert f.value in spec.labels and set(f.levels) <= set(spec.labels), f.sweep
    assert {f.sweep for f in findings} <= {p.stem for p in available_sweeps()}


def test_best_verdicts() -> None:
    rule, maximize = VERDICTS.get("best"), {"maximize": True}
    clear = _levels({"a": [0.70, 0.71, 0.70], "b": [0.80, 0.81, 0.80], "c": [0.60, 0.61, 0.60]})
    assert rule(_finding("best", "b"), clear, maximize).outcome == "reproduced"
    result = rule(_finding("best", "a"), clear, maximize)
    assert result.outcome == "not reproduced" and result.why.startswith("b beats a")
    noisy = _levels({"a": [0.70, 0.78], "b": [0.74, 0.76]})  # b's mean is higher, the interval spans 0
    result = rule(_finding("best", "b"), noisy, maximize)
    assert result.outcome == "not distinguishable" and "b has the best mean" in result.why
    result = rule(_finding("best", "a"), noisy, maximize)
    assert result.outcome == "not distinguishable" and "b has a better mean than a" in result.why
    single = rule(_finding("best", "a"), _levels({"a": [0.70], "b": [0.80]}), maximize)
    assert single.outcome == "not distinguishable" and "one repeat" in single.why
    loss = rule(_finding("best", "c"), clear, {"maximize": False})  # lower is better for a loss
    assert loss.outcome == "reproduced"
    missing = rule(_finding("best", "d"), clear, maximize)
    assert missing.outcome == "not run" and "does not try d" in missing.why


def test_no_effect_and_oov_verdicts() -> None:
    rule, maximize = VERDICTS.get("no_effect"), {"maximize": True}
    flat = _levels({"16": [0.80, 0.81, 0.80], "250": [0.805, 0.80, 0.81], "2000": [0.80, 0.81, 0.805]})
    assert rule(_finding("no_effect", "250", levels=["16", "2000"]), flat, maximize).outcome == "reproduced"
    steep = _levels({"16": [0.70, 0.71, 0.70], "250": [0.805, 0.80, 0.81]})
    result = rule(_finding("no_effect", "250", levels=["16"]), steep, maximize)
    assert result.outcome == "not reproduced" and "16" in result.why
    oov = VERDICTS.get("fewest_oov")
    counts = {"oov": [{"corpus": "a", "oov_words": 10, "available": True, "error": None},
                      {"corpus": "b", "oov_words": 3, "available": True, "error": None},
                      {"corpus": "c", "oov_words": 0, "available": False, "error": "offline"}]}
    assert oov(_finding("fewest_oov", "b"), [], counts).outcome == "reproduced"
    assert oov(_finding("fewest_oov", "a"), [], counts).outcome == "not reproduced"
    offline = oov(_finding("fewest_oov", "c"), [], counts)
    assert offline.outcome == "not run" and "offline" in offline.why


@needs_glove
@needs_mobilenet
@needs_nltk
def test_report_renders_every_finding_and_logs_to_mlflow(tmp_path: Path, small: dict, speed: dict) -> None:
    from mlflow import MlflowClient

    from mmsearch.report import ReportRequest, reproduce
    from mmsearch.search import SweepRequest, run_sweep

    storage = str(tmp_path / "journal.log")
    run_sweep(SweepRequest(sweep="fusion-dropout-count", experiment="cpu", overrides=dict(speed),
                           data=small["data.path"], storage=storage, progress=False))
    report = reproduce(ReportRequest(experiment="cpu", data=small["data.path"], overrides=dict(speed), storage=storage,
                                     out=tmp_path / "reproduction.html"))
    by_sweep = {s.finding.sweep: s for s in report.sections}
    assert len(report.sections) == 17
    dropout = by_sweep["fusion-dropout-count"]
    assert dropout.verdict.outcome in ("reproduced", "not reproduced", "not distinguishable")
    assert [b["n"] for b in dropout.levels] == [3, 3, 3] and np.isfinite(dropout.levels[0]["ci_low"])
    assert by_sweep["fusion-lr"].verdict.outcome == "not run"
    assert by_sweep["fusion-lr"].command.startswith("mmsearch sweep run fusion-lr --experiment cpu --data ")
    page = (tmp_path / "reproduction.html").read_text()
    assert "Figure 16" in page and "<script src=\"https://cdn.plot.ly" not in page and page.count("<h2>") == 17
    run = MlflowClient().get_run(report.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["not_run"] == 16
    assert {a.path for a in MlflowClient().list_artifacts(report.run_id)} == {"reproduction.html", "verdicts.json"}


def test_on_a_caption_only_dataset_image_sweeps_say_why_they_cannot_run(tmp_path: Path) -> None:
    from mmsearch.report import ReportRequest, reproduce

    report = reproduce(ReportRequest(experiment="cpu", data=str(REAL_CAPTIONS), storage=str(tmp_path / "journal.log"),
                                     out=tmp_path / "reproduction.html"))
    by_sweep = {s.finding.sweep: s for s in report.sections}
    for sweep in ("cnn-lr", "fusion-dropout-count"):  # an image sweep and one whose upstream reads images
        assert "needs images" in by_sweep[sweep].verdict.why and by_sweep[sweep].command == "", sweep
    assert by_sweep["text-lr"].verdict.why == "the sweep has no study in this storage"
    assert by_sweep["text-lr"].command.startswith("mmsearch sweep run text-lr --experiment cpu --data ")


def test_unknown_finding_kind_lists_the_registered_ones(tmp_path: Path) -> None:
    from mmsearch.errors import ConfigError

    path = tmp_path / "f.yaml"
    path.write_text("findings:\n  - {figure: F, section: '4', sweep: s, kind: biggest, value: a, tried: [a], "
                    "metric: m, quote: q}\n")
    with pytest.raises(ConfigError) as err:
        load_findings(path)
    assert "biggest" in str(err.value) and "best, no_effect, fewest_oov" in str(err.value)
