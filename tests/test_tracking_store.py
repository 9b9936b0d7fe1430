"""mmsearch's default MLflow store is MLflow's own default, so plain MLflow tools find it."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmsearch.tracking import Tracker, default_tracking_uri

PLAIN_MLFLOW = ("import json, mlflow\n"
                "names = [e.name for e in mlflow.search_experiments()]\n"
                "runs = mlflow.search_runs(experiment_names=['sweep/demo'], output_format='list')\n"
                "print(json.dumps({'names': names, 'runs': [r.info.run_name for r in runs],"
                " 'uri': mlflow.get_tracking_uri()}))\n")


def _plain_mlflow(folder: Path) -> dict:
    """What MLflow itself sees from ``folder`` with no tracking URI set (a notebook started there)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run([sys.executable, "-c", PLAIN_MLFLOW], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_default_store_is_where_mlflow_looks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracker = Tracker()
    assert tracker.uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    experiment = tracker.experiment("sweep/demo")
    with tracker.run(experiment, "dropout_count=2 · r0 · trial 0") as run_id:
        tracker.log_text(run_id, "hello", "config.yaml")
    seen = _plain_mlflow(tmp_path)
    assert "sweep/demo" in seen["names"] and seen["runs"] == ["dropout_count=2 · r0 · trial 0"], seen
    # Artifacts under ./mlruns, as in MLflow's own default layout.
    assert (tmp_path / "mlruns" / "sweep_demo").is_dir()
    assert [p.name for p in (tmp_path / "mlruns").rglob("config.yaml")] == ["config.yaml"]


def test_an_earlier_mmsearch_store_is_moved_once_and_keeps_its_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    legacy = tmp_path / "mlruns" / "mlflow.db"
    legacy.parent.mkdir()
    old = Tracker(f"sqlite:///{legacy}")
    experiment = old.experiment("sweep/demo")
    with old.run(experiment, "old run") as run_id:
        old.log_text(run_id, "kept", "config.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with caplog.at_level(logging.WARNING, logger="mmsearch.tracking"):
        uri = default_tracking_uri()
        assert default_tracking_uri() == uri  # said once: the second call finds it moved
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db" and not legacy.exists()
    assert caplog.text.count("moved the MLflow store") == 1 and str(legacy) in caplog.text
    tracker = Tracker()
    assert tracker.client.get_run(run_id).info.run_name == "old run"
    assert tracker.client.download_artifacts(run_id, "config.yaml", str(tmp_path)).endswith("config.yaml")
    assert "old run" in _plain_mlflow(tmp_path)["runs"]
