from pathlib import Path

import numpy as np
import pytest

from mmsearch.report import Finding, load_findings
from mmsearch.report._findings import Case, judge_findings
from mmsearch.search import available_sweeps, load_sweep
from mmsearch.stats import Design, TrialRecord, level_stats

from conftest import REAL_CAPTIONS, needs_glove, needs_mobilenet, needs_nltk


def _levels(means: dict[str, list[float]]) -> list:
    """Levels whose repeat r ran with seed r (paired across levels)."""
    trials = [TrialRecord(i * 100 + r, "COMPLETE", v, level=lv, repeat=r) for i, (lv, vs) in enumerate(means.items())
              for r, v in enumerate(vs)]
    return level_stats(trials, list(means), base_level=None)


def _judge(finding: Finding, levels: list, maximize: bool = True, **extra: object):
    return judge_findings([Case(finding, levels, Design(), maximize, dict(extra))])[0][0]


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
    clear = _levels({"a": [0.70, 0.71, 0.70], "b": [0.80, 0.81, 0.80], "c": [0.60, 0.61, 0.60]})
    result = _judge(_finding("best", "b"), clear)
    assert result.outcome == "reproduced" and "a, c decided worse" in result.why
    result = _judge(_finding("best", "a"), clear)
    assert result.outcome == "not reproduced" and result.why.startswith("b is better than a by +0.1000"), result.why
    noisy = _levels({"a": [0.70, 0.78], "b": [0.74, 0.76]})  # b's mean is higher, the interval spans 0
    result = _judge(_finding("best", "b"), noisy)
    assert result.outcome == "inconclusive" and "undecided: a" in result.why
    single = _judge(_finding("best", "a"), _levels({"a": [0.70], "b": [0.80]}))
    assert single.outcome == "inconclusive" and "no interval" in single.why
    loss = _judge(_finding("best", "c"), clear, maximize=False)  # lower is better for a loss
    assert loss.outcome == "reproduced"
    missing = _judge(_finding("best", "d"), clear)
    assert missing.outcome == "not run" and "does not try d" in missing.why
    # A rival equivalent within the margin (paired on seeds: about +0.001 each time) leaves the paper's choice
    # standing, and so does one decided better by less than the margin (+0.001 exactly, no spread).
    same = _levels({"a": [0.700, 0.720, 0.690, 0.710], "b": [0.7015, 0.7205, 0.6905, 0.7110]})
    result = _judge(_finding("best", "a"), same)
    assert result.outcome == "reproduced" and "b equivalent within ±0.005" in result.why, result.why
    same = _levels({"a": [0.700, 0.720, 0.690, 0.710], "b": [0.701, 0.721, 0.691, 0.711]})
    result = _judge(_finding("best", "a"), same)
    assert result.outcome == "reproduced" and "b equivalent within ±0.005" in result.why, result.why


def test_no_effect_is_reproduced_only_when_every_level_is_shown_equivalent() -> None:
    finding = _finding("no_effect", "250", levels=["16", "2000"])
    flat = _levels({"16": [0.800, 0.810, 0.805, 0.795], "250": [0.801, 0.811, 0.804, 0.796],
                    "2000": [0.800, 0.812, 0.806, 0.795]})
    result = _judge(finding, flat)
    assert result.outcome == "reproduced" and "equivalent to 250 within ±0.005" in result.why, result.why
    # Nothing distinguishable is not the same as equivalent: two noisy repeats prove nothing.
    vague = _levels({"16": [0.78, 0.83], "250": [0.81, 0.80], "2000": [0.79, 0.82]})
    result = _judge(finding, vague)
    assert result.outcome == "inconclusive" and "not all are shown equivalent" in result.why, result.why
    steep = _levels({"16": [0.70, 0.71, 0.70], "250": [0.805, 0.80, 0.81]})
    result = _judge(_finding("no_effect", "250", levels=["16"]), steep)
    assert result.outcome == "not reproduced" and "16 is worse than 250" in result.why, result.why
    # A finding's own margin: the same +0.004 differences are equivalent at ±0.01, inconclusive at ±0.001.
    close = _levels({"a": [0.800, 0.810, 0.790, 0.805], "b": [0.804, 0.8135, 0.7945, 0.809]})
    assert _judge(_finding("no_effect", "a", levels=["b"], margin=0.01), close).outcome == "reproduced"
    assert _judge(_finding("no_effect", "a", levels=["b"], margin=0.001), close).outcome != "reproduced"


def test_oov_verdicts() -> None:
    counts = [{"corpus": "a", "oov_words": 10, "available": True, "error": None},
              {"corpus": "b", "oov_words": 3, "available": True, "error": None},
              {"corpus": "c", "oov_words": 0, "available": False, "error": "offline"}]
    assert _judge(_finding("fewest_oov", "b"), [], oov=counts).outcome == "reproduced"
    assert _judge(_finding("fewest_oov", "a"), [], oov=counts).outcome == "not reproduced"
    offline = _judge(_finding("fewest_oov", "c"), [], oov=counts)
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
    assert dropout.verdict.outcome in ("reproduced", "not reproduced", "inconclusive")
    assert [b.n for b in dropout.levels] == [3, 3, 3] and np.isfinite(dropout.levels[0].ci_low)
    # Every comparison it rests on was judged in the report's one family, paired on seeds.
    assert dropout.verdict.comparisons and all(c.difference.method == "paired" for c in dropout.verdict.comparisons)
    assert report.comparisons == 2 and report.design.family == "fdr"
    assert by_sweep["fusion-lr"].verdict.outcome == "not run"
    assert by_sweep["fusion-lr"].command.startswith("mmsearch sweep run fusion-lr --experiment cpu --data ")
    page = (tmp_path / "reproduction.html").read_text()
    assert "Figure 16" in page and "<script src=\"https://cdn.plot.ly" not in page and page.count("<h2>") == 17
    assert "All 2 comparisons of this page are judged as one family at a false-discovery rate of 5%" in page
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
