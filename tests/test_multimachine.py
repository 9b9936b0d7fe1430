"""Three machines, one study: the topology of docker-compose.yml, run on loopback.

The test reads docker-compose.yml and runs what it describes: the ``mlflow`` service's command
(PostgreSQL backend, served artifacts, the basic-auth app) against fresh databases, and the
``worker`` service's command once per replica, each started at the same moment with a working
folder and a cache of its own and in a PID namespace of its own (as containers on separate
machines have). Images cannot be pulled here, so the compose client only validates the file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from _sweepproc import finish, free_port, fresh_postgres, sets, wait_until_serving
from conftest import needs_glove, needs_mobilenet, needs_nltk

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
ENV = {"POSTGRES_USER": "postgres", "POSTGRES_PASSWORD": "", "MLFLOW_ADMIN_USERNAME": "admin",
       "MLFLOW_ADMIN_PASSWORD": "a-long-admin-password", "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret-key-0123456789",
       "MLFLOW_WORKER_USERNAME": "mmsearch-worker", "MLFLOW_WORKER_PASSWORD": "a-worker-password"}


def compose(values: dict[str, str]) -> dict[str, Any]:
    """docker-compose.yml with ${VAR...} filled in, as ``docker compose`` reads it with a .env."""
    text = re.sub(r"\$\{(\w+)(?::?[?-][^}]*)?\}", lambda m: values[m.group(1)], COMPOSE.read_text())
    return yaml.safe_load(text.replace("$$", "$"))


def test_compose_file_is_valid_and_keeps_results_private(tmp_path: Path) -> None:
    spec = compose(ENV)
    published = [p for s in spec["services"].values() for p in s.get("ports", [])]
    assert published and all(p.startswith("127.0.0.1:") for p in published)  # nothing on every interface
    raw = yaml.safe_load(COMPOSE.read_text())["services"]
    secrets = {k: v for s in raw.values() for k, v in (s.get("environment") or {}).items()
               if "PASSWORD" in k or "SECRET" in k}
    assert secrets and all(str(v).startswith("${") for v in secrets.values())  # every secret comes from .env
    assert "--app-name=basic-auth" in spec["services"]["mlflow"]["command"]
    gpu = spec["services"]["worker-gpu"]  # beside the CPU workers, started only with --profile gpu
    assert gpu["profiles"] == ["gpu"] and "cu" in gpu["build"]["args"]["TORCH_INDEX"].rsplit("/", 1)[-1]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert "TORCH_INDEX" in (ROOT / "Dockerfile").read_text()
    assert (ROOT / "deploy" / "env.example").exists() and "/.env" in (ROOT / ".gitignore").read_text()
    client = shutil.which("docker-compose")
    if client is None:
        pytest.skip("the compose client (Debian's docker-compose) is not installed; .ci/run installs it")
    shutil.copy(COMPOSE, tmp_path / "docker-compose.yml")
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    missing = subprocess.run([client, "config", "-q"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "POSTGRES_USER" in missing.stderr  # refuses to run without credentials
    (tmp_path / ".env").write_text((ROOT / "deploy" / "env.example").read_text())
    valid = subprocess.run([client, "config", "-q"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert valid.returncode == 0, valid.stderr


def _localise(value: str, subs: dict[str, str]) -> str:
    for old, new in subs.items():
        value = value.replace(old, new)
    return value


@pytest.mark.slow
@pytest.mark.postgres
@needs_glove
@needs_mobilenet
@needs_nltk
def test_three_machines_share_one_study_behind_an_authenticated_server(tmp_path: Path) -> None:
    requests = pytest.importorskip("requests")
    pytest.importorskip("flask_wtf", reason="the basic-auth app needs mlflow[auth]")
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to give each machine a PID namespace of its own")
    from mmsearch.data import SynthSpec, synthesize

    data = synthesize(tmp_path / "data", SynthSpec(n_train=400, n_test=20, image_size=32, seed=4))
    with fresh_postgres() as mlflow_db, fresh_postgres() as optuna_db:
        port = free_port()
        services = compose(ENV)["services"]
        server_dir = tmp_path / "mlflow"
        server_dir.mkdir()
        subs = {"postgresql://postgres@postgres:5432/mlflow": mlflow_db,
                "postgresql://postgres@postgres:5432/optuna": optuna_db,
                "http://mlflow:5000": f"http://127.0.0.1:{port}", "--host=0.0.0.0": "--host=127.0.0.1",
                "--port=5000": f"--port={port}", ":5000": f":{port}", "/mlflow/": f"{server_dir}/"}
        (server_dir / "basic_auth.ini").write_text(_localise((ROOT / "deploy" / "basic_auth.ini").read_text(), subs))
        mlflow = services["mlflow"]
        server_env = {**os.environ, **{k: _localise(str(v), subs) for k, v in mlflow["environment"].items()}}
        command = [_localise(str(a), subs) for a in mlflow["command"]]
        assert command[:2] == ["mlflow", "server"]
        server = subprocess.Popen([sys.executable, "-m", *command], cwd=server_dir, env=server_env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        uri = f"http://127.0.0.1:{port}"
        probe = f"{uri}/api/2.0/mlflow/experiments/search"
        try:
            wait_until_serving(server, uri, "the MLflow server to start", every=1.0)
            auth = (ENV["MLFLOW_ADMIN_USERNAME"], ENV["MLFLOW_ADMIN_PASSWORD"])
            assert requests.post(probe, json={"max_results": 1}, timeout=10).status_code == 401  # no credentials
            assert requests.post(probe, json={"max_results": 1}, timeout=10, auth=("admin", "wrong")).status_code == 401
            assert requests.post(probe, json={"max_results": 1}, timeout=10, auth=auth).status_code == 200

            # The workers' own account, made by the compose file's one-shot service (twice: it is idempotent).
            users = services["mlflow-users"]
            users_env = {**os.environ, **{k: _localise(str(v), subs) for k, v in users["environment"].items()}}
            script = _localise(" ".join(users["command"]), {"/create_worker_user.py": str(ROOT / "deploy" / "create_worker_user.py")})
            for _ in range(2):
                made = subprocess.run([sys.executable, *script.split()[1:]], env=users_env, capture_output=True,
                                      text=True, timeout=120)
                assert made.returncode == 0, made.stderr[-3000:]
            worker = services["worker"]
            assert worker["environment"]["MLFLOW_TRACKING_PASSWORD"] == ENV["MLFLOW_WORKER_PASSWORD"]
            assert ENV["MLFLOW_ADMIN_PASSWORD"] not in json.dumps(worker["environment"])  # workers never hold it
            worker_auth = (ENV["MLFLOW_WORKER_USERNAME"], ENV["MLFLOW_WORKER_PASSWORD"])
            assert requests.post(probe, json={"max_results": 1}, timeout=10, auth=worker_auth).status_code == 200
            replicas = worker["deploy"]["replicas"]
            assert replicas == 3
            speed = {"data.image_size": 32, "image.optim.epochs": 5, "text.optim.epochs": 4, "fusion.optim.epochs": 15,
                     "run.threads": 1}
            machines = []
            for i in range(replicas):
                home = tmp_path / f"machine{i}"
                home.mkdir()
                env = {**os.environ, **{k: _localise(str(v), subs) for k, v in worker["environment"].items()}}
                env["MMSEARCH_CACHE_DIR"] = str(home / "cache")  # compose: /cache inside each container
                args = [_localise(str(a), {"/data": str(data)}) for a in worker["command"]]
                assert args[:3] == ["mmsearch", "sweep", "run"]
                cmd = ["unshare", "--pid", "--fork", "--mount-proc", "--", sys.executable, "-m", *args, *sets(speed)]
                machines.append((home, subprocess.Popen(cmd, cwd=home, env=env, text=True, stdout=subprocess.PIPE,
                                                        stderr=subprocess.PIPE)))
            results = [finish(proc, 600) for _, proc in machines]
            for code, out, err in results:
                assert code == 0, err[-3000:]
                assert "Traceback" not in err and "IntegrityError" not in err
                assert "9/9 cells complete" in out

            from mlflow import MlflowClient

            os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = auth
            try:
                client = MlflowClient(uri)
                experiment = client.get_experiment_by_name("sweep/fusion-dropout-count")
                runs = client.search_runs([experiment.experiment_id], max_results=100)
                parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
                children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
                assert len(parents) == 1 and parents[0].info.status == "FINISHED"
                assert len(children) == 9 and all(r.info.status == "FINISHED" for r in children)
                assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
                # The report is logged once: the parent's summary metric has one value, not one per machine.
                assert len(client.get_metric_history(parents[0].info.run_id, "best_val_f1")) == 1
                assert "charts/report.html" in {a.path for a in client.list_artifacts(parents[0].info.run_id, "charts")}
            finally:
                del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]

            import optuna

            from mmsearch.search import open_storage

            storage = open_storage(optuna_db).optuna
            (name,) = optuna.study.get_all_study_names(storage)
            trials = optuna.load_study(study_name=name, storage=storage).get_trials()
            cells = [(t.params["level"], t.user_attrs["repeat"]) for t in trials]
            assert len(cells) == 9 and len(set(cells)) == 9 and all(t.state.name == "COMPLETE" for t in trials)
            hosts = {t.user_attrs["owner"]["pidns"] for t in trials}
            assert len(hosts) >= 2  # the cells really were shared between machines
        finally:
            os.killpg(server.pid, 15)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, 9)
            time.sleep(0.5)
