"""``mmsearch reproduce``: the plan, one schedule across sweeps, kill -9 and Ctrl-C in the middle of
the second sweep, the measured final model and the one report; as real processes on the session's
demo data, reading what Optuna, MLflow and the report page hold afterwards."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from _sweepproc import (
    finish,
    free_port,
    fresh_postgres,
    open_study,
    sets,
    start,
    sweep_env,
    wait_for,
    wait_until_serving,
)
from conftest import needs_glove, needs_mobilenet, needs_nltk

pytestmark = [needs_glove, needs_mobilenet, needs_nltk]

# The base text learning rate is set low (--set text.optim.lr=0.002), so that the sweep's other
# level is measurably better: the measured final configuration then differs from the paper's.
TEXT_SWEEP = """name: r-text-lr
description: text learning rate (test)
paper: test
stage: text
mode: ablation
factor: text.optim.lr
levels: [0.002, 0.03]
repeats: 2
"""
# Trials of a few seconds each (no early stopping), so that the test can catch one running.
FUSION_SWEEP = """name: r-fusion-p
description: fusion dropout p (test)
paper: test
stage: fusion
mode: ablation
factor: fusion.dropout_p
set: {fusion.optim.early_stopping: null}
levels: [0.05, 0.2, 0.4]
repeats: 2
"""
IMAGE_SWEEP = """name: r-cnn-lr
description: head learning rate (test)
paper: test
stage: image
mode: ablation
factor: image.optim.lr
levels: [0.003, 0.01]
repeats: 1
"""


def _finding(path: Path, value: str, tried: list[str]) -> str:
    return (f"  - {{figure: test, section: test, sweep: {path}, kind: best, value: '{value}', "
            f"tried: [{', '.join(repr(t) for t in tried)}], metric: validation F1, quote: test}}\n")


def write_findings(folder: Path, *sweeps: tuple[str, str, str, list[str]]) -> Path:
    """Sweep files and a findings file naming them, in this order."""
    lines = ["findings:\n"]
    for name, text, value, tried in sweeps:
        path = folder / f"{name}.yaml"
        path.write_text(text)
        lines.append(_finding(path, value, tried))
    findings = folder / "findings.yaml"
    findings.write_text("".join(lines))
    return findings


@pytest.fixture
def two_sweeps(tmp_path: Path) -> Path:
    return write_findings(tmp_path, ("r-text-lr", TEXT_SWEEP, "0.03", ["0.002", "0.03"]),
                          ("r-fusion-p", FUSION_SWEEP, "0.05", ["0.05", "0.2", "0.4"]))


def _args(small: dict, speed: dict, findings: Path, storage: str) -> list[str]:
    trial = {**speed, "text.optim.lr": 0.002, "fusion.optim.epochs": 120}
    return ["reproduce", "--experiment", "cpu", "--data", str(small["data.path"]), *sets(trial), "--findings",
            str(findings), "--storage", storage, "--workers", "2", "--repeats", "2"]


def _running_fusion(storage: str) -> bool:
    study = open_study(storage, "r-fusion-p")
    return study is not None and any(t.state.name == "RUNNING" and t.user_attrs.get("mlflow_run_id")
                                     for t in study.get_trials(deepcopy=False))


def _left(storage: str, tracking: str) -> dict[str, Any]:
    """Per sweep: COMPLETE trials per cell and trials by state; MLflow: runs still RUNNING, the
    report runs, and the registered final models' versions."""
    from mlflow import MlflowClient

    out: dict[str, Any] = {}
    for sweep in ("r-text-lr", "r-fusion-p"):
        trials = open_study(storage, sweep).get_trials(deepcopy=False)
        out[sweep] = {"cells": Counter((t.params.get("level"), t.user_attrs.get("repeat")) for t in trials
                                       if t.state.name == "COMPLETE"),
                      "states": Counter(t.state.name for t in trials)}
    client = MlflowClient(tracking)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=2000)
    out["running"] = [(r.info.run_name, r.info.experiment_id) for r in runs if r.info.status == "RUNNING"]
    report = client.get_experiment_by_name("reproduction")
    out["reports"] = client.search_runs([report.experiment_id]) if report else []
    out["parents"] = Counter(r.data.tags.get("sweep") for r in runs if r.data.tags.get("mode") == "ablation"
                             and "mlflow.parentRunId" not in r.data.tags)
    out["models"] = {m.name: len(client.search_model_versions(f"name='{m.name}'"))
                     for m in client.search_registered_models()}
    return out


def _assert_done_once(left: dict[str, Any]) -> None:
    assert left["r-text-lr"]["cells"] == Counter({(lv, r): 1 for lv in ("0.002", "0.03") for r in (0, 1)}), left
    assert left["r-fusion-p"]["cells"] == Counter({(lv, r): 1 for lv in ("0.05", "0.2", "0.4") for r in (0, 1)}), left
    for sweep in ("r-text-lr", "r-fusion-p"):
        assert not left[sweep]["states"].get("RUNNING") and not left[sweep]["states"].get("WAITING"), left
    assert left["running"] == [], left["running"]
    assert left["parents"] == Counter({"r-text-lr": 1, "r-fusion-p": 1}), left["parents"]
    assert len(left["reports"]) == 1 and left["reports"][0].info.status == "FINISHED", left["reports"]


@pytest.mark.slow  # about 4 minutes on 2 cores: three reproduce processes
def test_killed_and_interrupted_mid_second_sweep_then_rerun_every_cell_once_one_report(
        tmp_path: Path, small: dict, speed: dict, two_sweeps: Path) -> None:
    storage = str(tmp_path / "optuna-journal.log")
    env = sweep_env(tmp_path)
    tracking = env["MLFLOW_TRACKING_URI"]
    args = _args(small, speed, two_sweeps, storage)

    first = start(args, tmp_path, env)
    wait_for(lambda: _running_fusion(storage) or first.poll() is not None, 300, "a trial of the second sweep running")
    assert first.poll() is None, first.communicate()[1][-3000:]
    os.kill(first.pid, signal.SIGKILL)  # the coordinator only: its workers must follow it
    first.wait()
    wait_for(lambda: not _running_fusion(storage), 60, "the killed run's trials to be failed by their workers")

    second = start(args, tmp_path, env)
    wait_for(lambda: _running_fusion(storage) or second.poll() is not None, 300, "the rerun's second-sweep trial")
    assert second.poll() is None, second.communicate()[1][-3000:]
    os.killpg(second.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole process group
    code, _, err = finish(second, 120)
    assert code == 130 and "interrupted" in err and "Traceback" not in err, err[-3000:]
    left = _left(storage, tracking)
    assert left["running"] == [] and not left["reports"], left
    assert "interrupted" in {t.user_attrs.get("error") for t in open_study(storage, "r-fusion-p").get_trials()
                             if t.state.name == "FAIL"}

    code, out, err = finish(start(args, tmp_path, env), 600)
    assert code == 0 and "Traceback" not in err, err[-4000:]
    left = _left(storage, tracking)
    _assert_done_once(left)
    # Each factor's decision is printed; the measured configuration is trained (and registered) only when a
    # level was decided better than the paper's, else the paper's model stands for both.
    assert "| `text.optim.lr` | r-text-lr | 0.002 |" in out and "| `fusion.dropout_p` | r-fusion-p | 0.05 |" in out, out
    changed = "| **0.03** |" in out or "| **0.2** |" in out or "| **0.4** |" in out
    assert left["models"] == ({"reproduce-paper": 1, "reproduce-measured": 1} if changed else {"reproduce-paper": 1}), \
        (left["models"], out)
    # Two final models compared pair by pair, or one when no factor was decided better.
    assert ("measured - paper:" in out or "measured = paper: no factor was decided better" in out) and \
        "test samples-F1 per member" in out, out
    page = Path(out.split("report: ")[1].split(" (MLflow run")[0]).read_text()
    assert "The measured final model" in page and "r-fusion-p" in page
    assert "plan: 2 sweep(s)" in out and "reproduce] sweeps" in err

    # Run again with nothing left: no cell, no model and no report is made twice.
    code, out, err = finish(start(args, tmp_path, env), 300)
    assert code == 0, err[-3000:]
    assert "0 of 10 cell(s) to run" in out and "trained before" in err, (out, err[-2000:])
    again = _left(storage, tracking)
    _assert_done_once(again)
    assert again["models"] == left["models"]


@pytest.mark.slow  # about 4 minutes on 2 cores: two reproduce processes and an MLflow server
@pytest.mark.postgres
def test_two_processes_on_postgresql_and_an_mlflow_server_share_every_cell_once_one_report(
        tmp_path: Path, small: dict, speed: dict, two_sweeps: Path) -> None:
    pytest.importorskip("requests")
    with fresh_postgres() as optuna_db, fresh_postgres() as mlflow_db:
        port = free_port()
        server_dir = tmp_path / "server"
        server_dir.mkdir()
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", mlflow_db, "--artifacts-destination",
             str(server_dir / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            cwd=server_dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        tracking = f"http://127.0.0.1:{port}"
        try:
            wait_until_serving(server, tracking, "the MLflow server to start", every=1.0)
            args = [*_args(small, speed, two_sweeps, optuna_db), "--tracking-uri", tracking]
            machines = []
            for name in ("machine-a", "machine-b"):  # a folder and a cache each, as on two machines
                home = tmp_path / name
                home.mkdir()
                env = {**os.environ, "MLFLOW_TRACKING_URI": tracking, "PYTHONUNBUFFERED": "1",
                       "MMSEARCH_CACHE_DIR": str(home / "cache")}
                machines.append(start(args, home, env))
            results = [finish(proc, 900) for proc in machines]
            for code, _, err in results:
                assert code == 0 and "Traceback" not in err and "IntegrityError" not in err, err[-4000:]
            left = _left(optuna_db, tracking)
            _assert_done_once(left)
            assert set(left["models"]) <= {"reproduce-paper", "reproduce-measured"} and \
                set(left["models"].values()) == {1}, left["models"]
            # One of them trained the final models and wrote the report; the other said who does, or (when it
            # got there after) found them made and printed the same page.
            pages = {out.split("report: ")[1].split(" (MLflow run")[0] for _, out, _ in results if "report: " in out}
            assert len(pages) == 1 and Path(pages.pop()).exists(), [out[-1500:] for _, out, _ in results]
            assert all("report: " in out or "trains the final models and writes the report" in out
                       for _, out, _ in results), [out[-1500:] for _, out, _ in results]
            # Both took part: the COMPLETE cells were run by workers of both processes.
            pids = {proc.pid for proc in machines}
            ran_by: Counter[int] = Counter()
            for sweep in ("r-text-lr", "r-fusion-p"):
                study = open_study(optuna_db, sweep)
                owner = {key.split(":", 1)[1]: value["owner"]["pid"] for key, value in study.user_attrs.items()
                         if key.startswith("coordinator:")}
                ran_by.update(owner[t.user_attrs["coordinator"]] for t in study.get_trials(deepcopy=False)
                              if t.state.name == "COMPLETE")
            assert set(ran_by) == pids, (ran_by, pids)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


def test_plan_sets_aside_what_cannot_run_and_costs_the_rest_from_a_cached_calibration(
        tmp_path: Path, small: dict, speed: dict) -> None:
    captions = tmp_path / "captions"
    captions.mkdir()
    shutil.copy(Path(small["data.path"]) / "train.csv", captions / "train.csv")  # no data/ folder: no images
    findings = write_findings(tmp_path, ("r-cnn-lr", IMAGE_SWEEP, "0.003", ["0.003", "0.01"]),
                              ("r-text-lr", TEXT_SWEEP, "0.03", ["0.002", "0.03"]),
                              ("r-fusion-p", FUSION_SWEEP, "0.05", ["0.05", "0.2", "0.4"]))
    env = sweep_env(tmp_path)  # the session's cache (its word vectors), and a text setting no other test calibrates
    args = ["reproduce", "--plan", "--experiment", "cpu", "--data", str(captions), *sets({**speed, "text.optim.epochs": 8}),
            "--findings",
            str(findings), "--storage", str(tmp_path / "journal.log"), "--workers", "2"]
    code, out, err = finish(start(args, tmp_path, env), 300)
    assert code == 0, err[-3000:]
    assert "plan: 1 sweep(s), 4 of 4 cell(s) to run on 2 worker(s)" in out, out
    assert f"r-cnn-lr{' ' * 4}cannot run here: its image stage needs images and {captions} has none" in out, out
    assert "r-fusion-p" in out and "cannot run here: its fusion stage needs images" in out, out
    assert "calibrating: training the text stage(s)" in err and "calibration took" in out, (out, err[-2000:])
    line = next(x for x in out.splitlines() if x.strip().startswith("r-text-lr"))
    assert "calibration" in line
    assert open_study(str(tmp_path / "journal.log"), "r-text-lr") is None  # --plan runs no sweep
    code, again, err = finish(start(args, tmp_path, env), 120)
    assert code == 0 and "calibration read from the cache" in again and "calibrating" not in err, (again, err)
    # Same estimates from the same measurement.
    assert again.splitlines()[0] == out.splitlines()[0]
    # What each sweep can decide, before the cost: the cpu profile's lr 0.02 is no level here.
    assert "what each sweep can decide" in out and "r-text-lr: no level is the base experiment's own" in out, out
    # With the base among the levels (lr 0.002): its power from the prior spread, and with repeats until
    # decided the plan prices the worst case, every level to the cap.
    args = [*args, "--set", "text.optim.lr=0.002"]
    code, worst, err = finish(start([*args, "--until-decided", "--max-repeats", "4"], tmp_path, env), 240)
    assert code == 0 and "plan: 1 sweep(s), 8 of 8 cell(s) to run on 2 worker(s)" in worst, (worst, err[-2000:])
    assert "worst case, 4 repeats per level" in worst and "up to 4 per level (at most 8 cells)" in worst, worst
    assert "r-text-lr: at 2 repeats it detects a true difference of" in worst and "the prior spread" in worst, worst


def test_offline_without_the_base_assets_says_all_of_them_before_anything_runs(tmp_path: Path, small: dict) -> None:
    """TORCH_HOME and GENSIM_DATA_DIR pointing at empty folders (a relative path from the wrong
    folder): one message naming both assets and where they were expected; nothing calibrated."""
    torch_home, gensim = tmp_path / "torch", tmp_path / "gensim-data"
    torch_home.mkdir()
    gensim.mkdir()
    env = sweep_env(tmp_path, TORCH_HOME=str(torch_home), GENSIM_DATA_DIR=str(gensim), MMSEARCH_OFFLINE="1",
                    MMSEARCH_CACHE_DIR=str(tmp_path / "cache"))
    args = ["reproduce", "--plan", "--experiment", "cpu", "--data", str(small["data.path"]),
            "--storage", str(tmp_path / "journal.log"), "--workers", "2"]
    code, out, err = finish(start(args, tmp_path, env), 120)
    assert code == 2 and "Traceback" not in err, err[-3000:]
    assert "the final models train the base configuration" in err and "nothing was planned or run" in err, err
    assert f"word vectors glove-wiki-gigaword-50 (expected in {gensim}" in err, err
    assert f"ImageNet weights mobilenet_v2 (expected in {torch_home}" in err, err
    assert "calibrating" not in err and not (tmp_path / "cache" / "calibration").exists()


def test_plan_and_schedule_share_workers_and_upstream_across_sweeps(small: dict, speed: dict, tmp_path: Path) -> None:
    """The simulated schedule: upstream jobs first, each sweep's cells after its own upstream job,
    every worker busy until the last cell (no idling at a sweep's end)."""
    from mmsearch.reproduce._plan import CellEstimate, SweepPlan, share_upstream, simulate
    from mmsearch.search import SweepRequest, resolve

    paths = {name: tmp_path / f"{name}.yaml" for name in ("r-text-lr", "r-fusion-p")}
    paths["r-text-lr"].write_text(TEXT_SWEEP)
    paths["r-fusion-p"].write_text(FUSION_SWEEP)
    paths["r-fusion-q"] = tmp_path / "r-fusion-q.yaml"
    paths["r-fusion-q"].write_text(FUSION_SWEEP.replace("r-fusion-p", "r-fusion-q"))
    ctx = {n: resolve(SweepRequest(sweep=str(p), experiment="cpu", overrides=dict(small),
                                   storage=str(tmp_path / "j.log"))) for n, p in paths.items()}
    plans = [SweepPlan(ctx[n], 4, 0, [CellEstimate("x", i, seconds) for i in range(4)], "test", ups, "k" if ups else "")
             for n, ups, seconds in (("r-text-lr", (), 10.0), ("r-fusion-p", ("image", "text"), 3.0),
                                     ("r-fusion-q", ("image", "text"), 3.0))]
    share_upstream(plans, 1.0)
    assert plans[1].shared_with == ["r-fusion-q"] and plans[2].shared_with == ["r-fusion-p"]
    assert plans[1].upstream_s == plans[2].upstream_s == 1.0
    # 40 s of text cells, 24 s of fusion cells and 2 s of upstream jobs: 66 s on one worker. On 2, one runs
    # the two upstream jobs (one at a time) while the other starts the text cells, and both stay busy until the
    # last 3 s cell, which one runs while the other has finished: 34 s.
    assert simulate(plans, 1) == pytest.approx(66.0)
    assert simulate(plans, 2) == pytest.approx(34.0)
    # As many workers as cells: the text cells (10 s) outlast the second upstream job and its cells (2 + 3 s).
    assert simulate(plans, 100) == pytest.approx(10.0)
    # A sweep's cells never start before its own upstream job ends, even with workers idle.
    only_fusion = [plans[1]]
    assert simulate(only_fusion, 4) == pytest.approx(1.0 + 3.0)
    # The plan states the decoded-image cache the image-reading sweeps need, per size, before building it.
    from mmsearch.reproduce._run import _cache_lines, _image_caches

    caches = _image_caches(list(ctx.values()))
    assert [(c.size, c.rows) for c in caches] == [(48, 1550)]  # the text sweep reads no image
    (line,) = _cache_lines(caches)
    built = "built" if caches[0].built else "to build"
    assert line.startswith(f"  caches: decoded images at 48px: 1,550 rows, {1550 * 48 * 48 * 3 / 2**20:.1f} MB ({built}), in ")
    assert line.endswith("GB free when planned)"), line


def test_decide_takes_a_level_only_when_it_is_decided_better(small: dict, speed: dict, tmp_path: Path) -> None:
    """The measured final configuration, factor by factor, from real studies: a level clearly better
    than the base (decided better in the reproduction's one family) is taken; one within noise leaves the
    paper's value and says whether it is equivalent or inconclusive."""
    from mmsearch.reproduce import decide
    from mmsearch.reproduce._final import measured_config
    from mmsearch.search import SweepRequest, resolve, run_sweep

    text = tmp_path / "r-text-lr.yaml"
    # 4 matched seeds: with 2 (one degree of freedom) even a large gain stays undecided once the
    # reproduction's comparisons are corrected together.
    text.write_text(TEXT_SWEEP.replace("repeats: 2", "repeats: 4"))
    fusion = tmp_path / "r-fusion-p.yaml"
    fusion.write_text(FUSION_SWEEP.replace("levels: [0.05, 0.2, 0.4]", "levels: [0.05, 0.06]"))
    storage = str(tmp_path / "journal.log")
    overrides = {**speed, "text.optim.lr": 0.002, "text.optim.epochs": 12}
    summaries, contexts = {}, []
    for path in (text, fusion):
        request = SweepRequest(sweep=str(path), experiment="cpu", overrides=dict(overrides), data=small["data.path"],
                               storage=storage, workers=2, progress=False)
        s = run_sweep(request)
        summaries[s.spec.name] = s
        contexts.append(resolve(request))
    decisions = decide(contexts, summaries)
    by = {d.sweep: d for d in decisions}
    text_bar = {b.level: b for b in summaries["r-text-lr"].levels}
    assert text_bar["0.03"].vs_base == "better", text_bar  # 0.002 for 12 epochs barely moves
    assert by["r-text-lr"].chosen == "0.03" and by["r-text-lr"].settings == {"text.optim.lr": 0.03}
    why = by["r-text-lr"].why
    assert "decided better than the cpu experiment's 0.002 by +" in why and "paired on 4 matched seed(s)" in why, why
    fusion_bar = {b.level: b for b in summaries["r-fusion-p"].levels}
    if fusion_bar["0.06"].vs_base != "better":  # p 0.05 vs 0.06: within noise, as the interval says
        assert by["r-fusion-p"].chosen == "0.05" and not by["r-fusion-p"].settings
        assert "stays" in by["r-fusion-p"].why
    cfg = measured_config(contexts[0].base, decisions)
    assert cfg.text.optim.lr == 0.03 and contexts[0].base.text.optim.lr == 0.002


def test_the_plan_says_what_load_it_was_calibrated_under_and_what_load_there_is_now() -> None:
    """A busy machine inflates a calibration's epochs: they are kept as a quiet machine would have
    measured them, and the plan says so; load at planning time is named with what it would cost."""
    from mmsearch.reproduce._plan import Calibration, Plan, slowdown

    assert slowdown(0.0, 2, 2) == 1.0 and slowdown(2.0, 2, 1) == 1.5 and slowdown(6.0, 2, 2) == 4.0
    quiet = Plan([], [], 2, 2.0, "assumed", Calibration({}, 0.0, "k"), 0.0)
    assert quiet.lines()[-1] == "  the estimate assumes a quiet machine"
    busy = Plan([], [], 2, 2.0, "assumed", Calibration({}, 30.0, "k", busy=2.0, cpus=2, factor=1.5), 0.0,
                busy_now=4.0, cpus_now=2, slowdown_now=3.0)
    text = "\n".join(busy.lines())
    assert "other processes kept 2.0 of 2 CPUs busy: its epochs took 1.50x longer" in text, text
    assert "4.0 of 2 CPUs are busy with other work now: while that lasts, expect up to 3.0x longer" in text, text
