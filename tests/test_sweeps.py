import csv
import io
import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import optuna
import pytest

from mmsearch._processes import ProcessIdentity
from mmsearch.errors import ConfigError
from mmsearch.search import SweepRequest, available_sweeps, load_sweep, open_storage, records, run_sweep, sweep_status
from mmsearch.tracking import Tracker

from conftest import needs_glove, needs_mobilenet, needs_nltk

pytestmark = [needs_glove, needs_mobilenet, needs_nltk]

PAPER_SWEEPS = {"cnn-backbone", "cnn-augmentation", "cnn-epochs", "cnn-batch-size", "cnn-lr", "text-embedding-size",
                "text-corpus", "text-seq-len", "text-epochs", "text-batch-size", "text-lr", "fusion-epochs",
                "fusion-batch-size", "fusion-lr", "fusion-dropout-count", "fusion-dropout-p", "fusion-hidden-size"}


@pytest.mark.parametrize("experiment", ["paper", "cpu"])
def test_every_shipped_sweep_loads_and_validates(experiment: str) -> None:
    names = set()
    for path in available_sweeps():
        spec, _ = load_sweep(str(path), experiment)
        names.add(spec.name)
        assert spec.size >= 1 and spec.paper
    assert PAPER_SWEEPS <= names and any(load_sweep(str(p))[0].mode == "search" for p in available_sweeps())
    backbone, _ = load_sweep("cnn-backbone", "cpu")
    assert {"mobilenet_v2", "resnet18", "resnet50", "resnext101_32x8d"} <= set(backbone.labels)


def test_bad_sweep_file_lists_all_problems(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nstage: fusion\nmode: ablation\nfactor: fusion.dropout_p\nlevels: [0.1, 7]\n"
                    "charts: [nope]\nsampler: magic\ncolour: red\n")
    with pytest.raises(ConfigError) as err:
        load_sweep(str(path), "cpu")
    text = str(err.value)
    for needle in ("description", "colour", "nope", "magic", "level '7'", "fusion.dropout_p"):
        assert needle in text, needle


@pytest.mark.parametrize("pruner, expected", [("median", "has no per-epoch value to prune on"),
                                                ("none", "run.tune_thresholds")])
def test_a_final_only_metric_is_checked_before_any_trial(tmp_path: Path, pruner: str, expected: str) -> None:
    path = tmp_path / "tuned.yaml"
    path.write_text("name: tuned\ndescription: d\npaper: p\nstage: text\nmode: search\nmetric: val_f1_tuned\n"
                    f"pruner: {pruner}\nspace:\n  text.optim.lr: {{type: float, low: 0.001, high: 0.1, log: true}}\n")
    with pytest.raises(ConfigError) as err:
        load_sweep(str(path), "cpu")
    assert expected in str(err.value) and "metric" in str(err.value)
    if pruner == "none":  # and valid once the base experiment tunes its thresholds
        assert load_sweep(str(path), "cpu", {"run.tune_thresholds": True})[0].metric == "val_f1_tuned"


def _request(tmp_path: Path, small: dict, sweep: str, **kw: object) -> SweepRequest:
    return SweepRequest(sweep=sweep, experiment="cpu", overrides={k: v for k, v in small.items() if k != "data.path"},
                        data=small["data.path"], storage=str(tmp_path / "journal.log"), progress=False, **kw)


def _cells(storage: str, study_name: str) -> Counter:
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage).optuna)
    return Counter((r.level, r.repeat) for r in records(study.trials))


def test_grid_ablation_two_workers_then_mlflow(tmp_path: Path, small: dict) -> None:
    summary = run_sweep(_request(tmp_path, small, "fusion-dropout-count", workers=2))
    cells = _cells(str(tmp_path / "journal.log"), summary.study_name)
    assert sum(cells.values()) == 9 and set(cells.values()) == {1}  # 3 levels x 3 repeats, each once
    assert summary.counts == {"COMPLETE": 9}
    tracker = Tracker()
    children = tracker.children(summary.experiment_id, summary.parent_run_id)
    assert len(children) == 9 and all(r.info.status == "FINISHED" for r in children)
    history = tracker.client.get_metric_history(children[0].info.run_id, "epoch/val_f1")
    assert len(history) >= 2 and sorted(m.step for m in history) == list(range(1, len(history) + 1))
    # A trial's page opens on the sweep's metric: its curve in the section that sorts first.
    headline = tracker.client.get_metric_history(children[0].info.run_id, "curve/val_f1")
    assert [(m.step, m.value) for m in headline] == [(m.step, m.value) for m in history]
    assert min(k.split("/")[0] for k in children[0].data.metrics) == "curve"
    artifacts = {a.path for a in tracker.client.list_artifacts(summary.parent_run_id, "charts")}
    assert {"charts/report.html", "charts/data.json"} <= artifacts
    html = Path(tracker.client.download_artifacts(summary.parent_run_id, "charts/report.html", str(tmp_path))).read_text()
    assert len(html) > 1_000_000 and "<script src=\"https://cdn.plot.ly" not in html and "Ablation" in html
    parent = tracker.client.get_run(summary.parent_run_id)
    assert parent.info.status == "FINISHED"
    # The runs table cuts names at ~16 characters: the best level and its mean come first, and
    # stand in columns of their own in the view the printed link opens (MLflow's shared view).
    assert parent.info.run_name.startswith(f"★ {summary.best_level} · {summary.best_value:.4f} · dropout_count")
    assert parent.data.tags["level"] == f"★ {summary.best_level}"
    assert parent.data.metrics["best_val_f1"] == pytest.approx(summary.best_value)
    view = json.loads(tracker.client.get_experiment(summary.experiment_id).tags["mlflow.sharedViewState.mmsearch"])
    assert view["selectedColumns"][:3] == ["metrics.`best_val_f1`", "metrics.`final/val_f1`", "tags.`level`"]
    assert all(r.data.tags["level"] in {"0", "1", "2"} and "final/val_f1" in r.data.metrics for r in children)
    # What the MLflow UI shows without opening a run: the level table above the runs table, the
    # dataset in the Dataset column of every run, the table as the parent's levels.csv.
    described = tracker.client.get_experiment(summary.experiment_id).tags["mlflow.note.content"]
    assert "| fusion.dropout_count | n | mean ± std |" in described and f"**{summary.best_level}** ★" in described
    for run in [tracker.client.get_run(summary.parent_run_id), tracker.client.get_run(children[0].info.run_id)]:
        (dataset,) = [d.dataset for d in run.inputs.dataset_inputs]
        assert dataset.name == Path(small["data.path"]).name and json.loads(dataset.profile)["train_rows"] > 0
    table = Path(tracker.client.download_artifacts(summary.parent_run_id, "levels.csv", str(tmp_path))).read_text()
    rows = list(csv.DictReader(io.StringIO(table)))
    assert [r["level"] for r in rows] == [str(b.level) for b in summary.levels] and all(r["n"] == "3" for r in rows)
    assert {r["method"] for r in rows if r["is_base"] == "False"} == {"paired"}  # the same seeds pair the levels
    assert "*Verdicts*: paired t on matched seeds" in described
    assert [r["level"] for r in rows if r["is_best"] == "True"] == [summary.best_level]
    # optuna-dashboard's study note says the best level (its own "Best Trial" is one trial).
    from optuna_dashboard._note import get_note_from_system_attrs

    storage = open_storage(str(tmp_path / "journal.log")).optuna
    attrs = storage.get_study_system_attrs(storage.get_study_id_from_name(summary.study_name))
    note = get_note_from_system_attrs(attrs, None)["body"]
    assert f"**{summary.best_level}** ★" in note and "Best Trial" in note


UNTIL_DECIDED = """name: u-fusion-p
description: fusion dropout p, repeats until decided (test)
paper: test
stage: fusion
mode: ablation
factor: fusion.dropout_p
levels: [0.05, 0.06, 0.5]
repeats: auto
max_repeats: 5
"""


def test_repeats_until_decided_add_cells_only_where_a_comparison_is_undecided(tmp_path: Path, small: dict) -> None:
    """``repeats: auto``: 3 repeats, then one more round at a time for the base and the undecided
    levels only, each cell once, up to the cap; the study keeps the plan, so every later reader
    holds the same error rate; a rerun adds nothing."""
    sweep = tmp_path / "u-fusion-p.yaml"
    sweep.write_text(UNTIL_DECIDED)
    request = _request(tmp_path, small, str(sweep), workers=2)
    summary = run_sweep(request)
    storage = str(tmp_path / "journal.log")
    cells = _cells(storage, summary.study_name)
    assert set(cells.values()) == {1}, cells  # each cell once
    repeats = {lv: sorted(r for (level, r) in cells if level == lv) for lv in ("0.05", "0.06", "0.5")}
    assert all(r == list(range(len(r))) for r in repeats.values()), repeats  # rounds add the next seed
    base = repeats["0.05"]
    assert len(base) > 3, "the test needs one undecided comparison after the first round"
    for b in summary.levels:
        if b.is_base:
            continue
        if len(repeats[b.level]) < len(base):  # it stopped getting repeats: decided by then
            assert b.decided, (b.level, b.vs_base)
        if len(base) < 5:  # the sweep stopped before the cap: everything is decided
            assert b.decided, (b.level, b.vs_base)
    assert summary.total == summary.done == len(cells) and not summary.missing
    study = optuna.load_study(study_name=summary.study_name, storage=open_storage(storage).optuna)
    assert study.user_attrs["sequential"] == {"repeats": 3, "max_repeats": 5}
    assert summary.design.looks == 3 and summary.design.first_look == 3
    status, _ = sweep_status(replace(request, study_name=summary.study_name), "sweep status")
    assert [b.vs_base for b in status.levels] == [b.vs_base for b in summary.levels]  # read back the same
    again = run_sweep(request)
    assert again.ran == 0 and _cells(storage, summary.study_name) == cells


def test_until_decided_resumes_a_fixed_study_by_adding_cells(tmp_path: Path, small: dict) -> None:
    sweep = tmp_path / "u-fusion-p.yaml"
    sweep.write_text(UNTIL_DECIDED.replace("repeats: auto", "repeats: 2").replace("[0.05, 0.06, 0.5]", "[0.05, 0.06]"))
    request = _request(tmp_path, small, str(sweep), workers=2)
    first = run_sweep(request)
    assert first.done == 4 and all(b.vs_base in ("base", "inconclusive") for b in first.levels)  # 2 seeds: df 1
    more = run_sweep(replace(request, until_decided=True, max_repeats=4))
    cells = _cells(str(tmp_path / "journal.log"), more.study_name)
    assert more.study_name == first.study_name and set(cells.values()) == {1} and len(cells) > 4, cells
    study = optuna.load_study(study_name=more.study_name, storage=open_storage(str(tmp_path / "journal.log")).optuna)
    assert study.user_attrs["sequential"] == {"repeats": 2, "max_repeats": 4}  # the first look counts as a look


def test_interrupted_sweep_resumes_only_missing_cells(tmp_path: Path, small: dict) -> None:
    first = run_sweep(_request(tmp_path, small, "fusion-dropout-count", trials=4))
    assert first.counts == {"COMPLETE": 4}
    second = run_sweep(_request(tmp_path, small, "fusion-dropout-count"))
    assert second.ran == 5 and second.counts == {"COMPLETE": 9}
    cells = _cells(str(tmp_path / "journal.log"), second.study_name)
    assert len(cells) == 9 and set(cells.values()) == {1}
    third = run_sweep(_request(tmp_path, small, "fusion-dropout-count"))
    assert third.ran == 0


def test_a_claim_cut_short_before_its_owner_was_written_is_failed_and_its_cell_rerun(tmp_path: Path,
                                                                                     small: dict) -> None:
    first = run_sweep(_request(tmp_path, small, "fusion-dropout-count", trials=4))
    study = optuna.load_study(study_name=first.study_name, storage=open_storage(str(tmp_path / "journal.log")).optuna)
    level, repeat = load_sweep("fusion-dropout-count", "cpu")[0].cells()[-1]  # not among the first run's 4
    # What a worker interrupted between ask() and marking the trial leaves: RUNNING, no owner, a
    # fresh start time (so no grace has run out).
    study.enqueue_trial({"level": level}, user_attrs={"level": level, "repeat": repeat})
    orphan = study.ask()
    assert orphan.user_attrs.get("repeat") == repeat and "owner" not in orphan.user_attrs
    second = run_sweep(_request(tmp_path, small, "fusion-dropout-count"))
    assert second.counts == {"COMPLETE": 9, "FAIL": 1}
    failed = study.trials[orphan.number]
    assert failed.state.name == "FAIL" and failed.user_attrs["error"] == "worker died: its claim was cut short"
    cells = _cells(str(tmp_path / "journal.log"), second.study_name)
    assert cells[(level, repeat)] == 2 and len(cells) == 9  # the cut-short claim, then the cell that ran


def test_runs_left_running_by_a_worker_cut_off_after_its_trial_ended_are_ended_by_status(tmp_path: Path,
                                                                                        small: dict) -> None:
    request = _request(tmp_path, small, "fusion-dropout-count", trials=2)
    first = run_sweep(request)
    study = optuna.load_study(study_name=first.study_name, storage=open_storage(request.storage).optuna)
    tracker = Tracker()
    done = study.trials[0]
    dead_worker = done.user_attrs["owner"]
    assert dead_worker["pid"] != os.getpid() and not Path(f"/proc/{dead_worker['pid']}").exists()

    def failed_trial_with_running_run(owner: dict) -> str:
        trial = study.ask()
        trial.set_user_attr("owner", owner)
        trial.set_user_attr("error", "interrupted")
        run_id = tracker.create_run(first.experiment_id, "cut off", first.parent_run_id, {"trial": str(trial.number)})
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return run_id

    # What a worker cut off between telling Optuna and ending its MLflow run leaves: a finished
    # trial whose run is RUNNING. Once after its trial COMPLETE, once after it failed "interrupted";
    # and a run whose process is alive (ending it now), which must be left alone.
    tracker.reopen(done.user_attrs["mlflow_run_id"])
    cut_off = failed_trial_with_running_run(dead_worker)
    ending_now = failed_trial_with_running_run(ProcessIdentity.current().attr())
    _, info = sweep_status(replace(request, trials=None), "mmsearch sweep status")
    assert info["stray_runs"] == 2 and info["repaired"] == 0
    finished, killed = tracker.client.get_run(done.user_attrs["mlflow_run_id"]), tracker.client.get_run(cut_off)
    assert (finished.info.status, finished.data.tags["state"]) == ("FINISHED", "finished")
    assert (killed.info.status, killed.data.tags["state"]) == ("KILLED", "interrupted")
    assert f"process {dead_worker['pid']}" in killed.data.tags["ended_because"]
    assert [r.info.run_id for r in tracker.running_children(first.parent_run_id)] == [ending_now]


def test_failing_trial_is_recorded_and_sweep_goes_on(tmp_path: Path, small: dict) -> None:
    sweep = tmp_path / "corpora.yaml"
    sweep.write_text(
        "name: corpora\ndescription: one level cannot load offline\npaper: test\nstage: text\nmode: ablation\n"
        "factor: text.corpus\nlevels:\n"
        "  - {label: glove-twitter-25, set: {text.corpus: glove-twitter-25, text.embedding_dim: null}}\n"
        "  - {label: glove50, set: {text.corpus: glove-wiki-gigaword-50, text.embedding_dim: null, text.optim.epochs: 3}}\n"
        "charts: [oov]\n")
    summary = run_sweep(_request(tmp_path, small, str(sweep)))
    assert summary.counts == {"FAIL": 1, "COMPLETE": 1}
    study = optuna.load_study(study_name=summary.study_name, storage=open_storage(str(tmp_path / "journal.log")).optuna)
    failed = [t for t in study.trials if t.state.name == "FAIL"][0]
    assert "glove-twitter-25" in failed.user_attrs["error"] and "offline" in failed.user_attrs["error"]
    tracker = Tracker()
    runs = tracker.children(summary.experiment_id, summary.parent_run_id)
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]


def test_search_sweep_prunes(tmp_path: Path, small: dict) -> None:
    sweep = tmp_path / "lr-search.yaml"
    sweep.write_text(
        "name: lr-search\ndescription: fusion lr\npaper: test\nstage: fusion\nmode: search\nn_trials: 12\n"
        "space:\n  fusion.optim.lr: {type: float, low: 1.0e-5, high: 0.5, log: true}\n"
        "sampler: random\npruner: median\nseed: 3\n")
    request = _request(tmp_path, small, str(sweep))
    request.overrides["fusion.optim.early_stopping"] = None
    summary = run_sweep(request)
    assert summary.counts.get("PRUNED", 0) >= 1
    assert sum(summary.counts.values()) == 12


@pytest.mark.postgres
def test_postgresql_storage(tmp_path: Path, small: dict) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    url = "postgresql://postgres@127.0.0.1:5432/test"
    try:
        sqlalchemy.create_engine(url).connect().close()
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"PostgreSQL not reachable at {url}: {exc}")
    import uuid

    request = _request(tmp_path, small, "fusion-dropout-count", trials=3)
    request.storage, request.study_name = url, f"pg-{uuid.uuid4().hex[:8]}"
    summary = run_sweep(request)
    assert summary.counts == {"COMPLETE": 3}
    study = optuna.load_study(study_name=request.study_name, storage=url)
    assert len(study.trials) == 3


def test_epoch_sweeps_train_every_epoch_they_are_asked_for(tmp_path: Path, small: dict) -> None:
    """text-epochs turns early stopping and best-epoch restore off for every level: each trial
    trains exactly its level's epochs, and its curves in Optuna and MLflow have every one."""
    request = _request(tmp_path, small, "text-epochs", trials=2)  # the first cells: 10 epochs, repeats 0 and 1
    summary = run_sweep(request)
    assert summary.counts == {"COMPLETE": 2}
    study = optuna.load_study(study_name=summary.study_name, storage=open_storage(request.storage).optuna)
    tracker = Tracker()
    for t in study.trials:
        assert t.params["level"] == "10" and len(t.user_attrs["history"]["val_loss"]) == 10
        assert t.user_attrs["final_epochs_run"] == 10 and sorted(t.intermediate_values) == list(range(1, 11))
        history = tracker.client.get_metric_history(t.user_attrs["mlflow_run_id"], "epoch/val_loss")
        assert sorted(m.step for m in history) == list(range(1, 11))
        config = tracker.client.get_run(t.user_attrs["mlflow_run_id"]).data.params
        assert config["text.optim.early_stopping"] == "None" and config["text.optim.restore_best"] == "False"


def test_a_sweep_that_leaves_a_cell_failed_exits_3_and_names_it(tmp_path: Path, small: dict, speed: dict,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from mmsearch.cli import main

    from _sweepproc import sets

    sweep = tmp_path / "corpora.yaml"
    sweep.write_text(
        "name: corpora\ndescription: one level cannot load offline\npaper: test\nstage: text\nmode: ablation\n"
        "factor: text.corpus\nlevels:\n"
        "  - {label: glove-twitter-25, set: {text.corpus: glove-twitter-25, text.embedding_dim: null}}\n"
        "  - {label: glove50, set: {text.corpus: glove-wiki-gigaword-50, text.embedding_dim: null, text.optim.epochs: 3}}\n")
    argv = ["sweep", "run", str(sweep), "--experiment", "cpu", "--data", small["data.path"], *sets(speed),
            "--storage", str(tmp_path / "journal.log")]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 3, err
    assert "incomplete: 1 cell(s) not COMPLETE (exit 3)" in err
    assert "text.corpus=glove-twitter-25 r0: FAIL: " in err and "offline" in err
    assert "glove50" not in err.split("incomplete:")[1]
    # The rerun tries only the missing cell, which fails the same way: still 3, never 0.
    assert main(argv) == 3
    assert "incomplete: 1 cell(s)" in capsys.readouterr().err


def test_levels_whose_weights_are_not_here_are_named_before_anything_trains(
        tmp_path: Path, small: dict, caplog: pytest.LogCaptureFixture) -> None:
    """cnn-backbone on the cpu profile, offline with only mobilenet_v2's weights cached (the
    shipped cache): the warning names the six other levels once, with where the file belongs."""
    from mmsearch.models import checkpoint_path
    from mmsearch.search._context import resolve
    from mmsearch.search._coordinator import warn_missing_assets

    ctx = resolve(_request(tmp_path, small, "cnn-backbone"))
    cached = {lv for lv in ctx.spec.labels if checkpoint_path(lv).exists()}
    assert "mobilenet_v2" in cached and len(cached) < len(ctx.spec.labels)  # as the shipped cache has it
    with caplog.at_level("WARNING", logger="mmsearch.sweep"):
        warn_missing_assets(ctx)
    (line,) = [r.getMessage() for r in caplog.records if "ImageNet weights" in r.getMessage()]
    named = line.split("level(s) ", 1)[1].split(" need ", 1)[0].split(", ")
    assert set(named) == set(ctx.spec.labels) - cached, line
    assert "offline" in line and str(checkpoint_path("resnet50").parent) in line and "image.pretrained=false" in line
    # `mmsearch models` says the same, backbone by backbone.
    proc = subprocess.run([sys.executable, "-m", "mmsearch", "models"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "mobilenet_v2 (cached)" in proc.stdout and "resnet50 (not cached)" in proc.stdout


def test_the_progress_line_names_the_upstream_stage_and_epoch_while_it_trains(tmp_path: Path) -> None:
    """While a fusion sweep's upstream job trains, nothing else moves: its line says which stage,
    which epoch and about how long is left (read from the job's progress file), not just 'starting'."""
    from mmsearch.search._summary import progress_line, summarize
    from mmsearch.search._worker import UpstreamProgress, read_upstream_progress
    from mmsearch.training import EpochLog, FitState

    path = tmp_path / "progress" / "upstream.json"
    progress = UpstreamProgress(str(path))
    progress.stage, progress.epochs = "text", 30
    progress.on_epoch_end(FitState(model=None), EpochLog(5, 0.3, 0.5, 0.3, 0.6, 0.6, 0.5, 0.01, 2.0))
    note = read_upstream_progress(str(path))
    assert note == "text stage: epoch 5/30, about 50s left at most", note
    progress.on_epoch_end(FitState(model=None, replayed=True), EpochLog(6, 0.3, 0.5, 0.3, 0.6, 0.6, 0.5, 0.01, 2.0))
    assert read_upstream_progress(str(path)) == note  # a cached stage's replayed epochs train nothing
    spec, _ = load_sweep("fusion-dropout-count", "cpu")
    line = progress_line(summarize(spec, "s", []), 1, 0.0, 40.0, f"preparing upstream features ({note})")
    assert "this run: preparing upstream features (text stage: epoch 5/30, about 50s left at most)" in line, line
    assert read_upstream_progress(str(tmp_path / "none.json")) == "" and read_upstream_progress(None) == ""
