"""Helpers for tests that run ``mmsearch sweep run`` as real processes and read what they left."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379/14"

FAULT_SWEEP = """name: faults
description: fault injection over a small fusion ablation
paper: test
stage: fusion
mode: ablation
factor: fusion.dropout_p
levels: [0.05, 0.2]
repeats: 2
"""


def write_sweep(folder: Path, text: str = FAULT_SWEEP, name: str = "faults") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(text.replace("name: faults", f"name: {name}"))
    return path


def sets(overrides: dict[str, Any]) -> list[str]:
    out = []
    for key, value in overrides.items():
        out += ["--set", f"{key}={'null' if value is None else value}"]
    return out


def sweep_env(folder: Path, **extra: str) -> dict[str, str]:
    """A machine of its own for MLflow (SQLite in ``folder``); caches as the caller's, unless given."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlruns/mlflow.db", "PYTHONUNBUFFERED": "1", **extra}
    (folder / "mlruns").mkdir(parents=True, exist_ok=True)
    return env


def start(args: list[str], cwd: Path, env: dict[str, str], prefix: list[str] | None = None) -> subprocess.Popen[str]:
    """``mmsearch ARGS`` in its own session (so a test can signal its whole process group)."""
    return subprocess.Popen([*(prefix or []), sys.executable, "-m", "mmsearch", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"sweep did not finish in {timeout}s; stderr tail:\n{err[-3000:]}")
    return proc.returncode, out, err


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.2,
             watched: subprocess.Popen[str] | None = None) -> Any:
    """Poll ``predicate`` until it is truthy; on a timeout fail, with the stderr of ``watched``
    (killed first: a process that hangs has not said why otherwise)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    told = ""
    if watched is not None:
        if watched.poll() is None:
            os.killpg(watched.pid, signal.SIGKILL)
        told = f"; stderr tail of process {watched.pid}:\n{watched.communicate()[1][-4000:]}"
    pytest.fail(f"timed out after {timeout}s waiting for {what}{told}")


def stop_outside_locks(pid: int, *paths: str | Path, tries: int = 200) -> None:
    """SIGSTOP ``pid`` at a moment it holds no lock on ``paths`` (an ``flock`` or a POSIX record
    lock, as ``/proc/locks`` lists them). A process stopped inside the journal's lock or an SQLite
    write stops every other writer until --grace ends their wait: a case of its own (see
    test_infra_faults), which a test about a stopped *worker* must not land in by chance."""
    from mmsearch._processes import lock_holders, process_state

    for _ in range(tries):
        os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: process_state(pid).startswith("stopped"), 10, f"process {pid} to stop", every=0.01)
        if not any(pid in lock_holders(p) for p in paths):
            return
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.05)
    pytest.fail(f"process {pid} held a lock on {[str(p) for p in paths]} at each of {tries} stops")


def sweep_lock_files(storage: str, tracking_db: Path) -> list[Path]:
    """The files a sweep's processes lock for a moment to write: the journal's lock, the study
    locks beside it (a journal file storage), the MLflow SQLite store and its rollback journal."""
    files = [tracking_db, tracking_db.with_name(tracking_db.name + "-journal")]
    journal = Path(storage)
    if "://" not in storage:
        files.append(journal.with_name(journal.name + ".flock"))
        study_locks = journal.with_name(f".{journal.name}.locks")
        files += sorted(study_locks.glob("*.lock")) if study_locks.is_dir() else []
    return files


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(proc: subprocess.Popen[bytes], url: str, what: str, every: float = 0.5) -> None:
    """Wait until the server ``proc`` started answers ``url``/health; fail with its stderr if it dies."""
    import requests

    def healthy() -> bool:
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:] if proc.stderr else ""
        try:
            return requests.get(f"{url}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_for(healthy, 120, what, every)


def open_study(storage: str, sweep: str = "faults") -> Any:
    """The only study of ``sweep`` in ``storage`` (None until a coordinator created it)."""
    import optuna

    from mmsearch.search import open_storage

    st = open_storage(storage).optuna
    names = [n for n in optuna.study.get_all_study_names(st) if n.startswith(f"{sweep}@")]
    assert len(names) <= 1, names
    return optuna.load_study(study_name=names[0], storage=st) if names else None


def running_owner(storage: str, sweep: str = "faults") -> dict[str, Any] | None:
    """The owner record of a RUNNING trial that has one (its process started training)."""
    study = open_study(storage, sweep)
    if study is None:
        return None
    for t in study.get_trials(deepcopy=False):
        if t.state.name == "RUNNING" and t.user_attrs.get("owner") and t.user_attrs.get("mlflow_run_id"):
            return t.user_attrs["owner"]
    return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def runs(tracking_uri: str, sweep: str = "faults") -> list[Any]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(f"sweep/{sweep}")
    return client.search_runs([experiment.experiment_id], max_results=1000) if experiment else []


def outcome(storage: str, tracking_uris: list[str], sweep: str = "faults") -> dict[str, Any]:
    """What a sweep left behind, in numbers."""
    study = open_study(storage, sweep)
    trials = study.get_trials(deepcopy=False)
    complete = Counter((t.params.get("level"), t.user_attrs.get("repeat")) for t in trials if t.state.name == "COMPLETE")
    all_runs = [r for uri in tracking_uris for r in runs(uri, sweep)]
    parents = [r for r in all_runs if "mlflow.parentRunId" not in r.data.tags]
    return {"states": Counter(t.state.name for t in trials), "complete_cells": complete,
            "errors": [t.user_attrs.get("error") for t in trials if t.state.name == "FAIL"],
            "failed_runs": sum(1 for t in trials if t.state.name == "FAIL" and t.user_attrs.get("mlflow_run_id")),
            "runs": Counter((r.info.status, r.data.tags.get("state")) for r in all_runs),
            "running_runs": sum(r.info.status == "RUNNING" for r in all_runs), "parents": parents,
            "reports": sum(1 for r in parents if r.data.tags.get("best_level") is not None)}


def assert_every_cell_once(result: dict[str, Any], cells: int = 4) -> None:
    assert len(result["complete_cells"]) == cells and set(result["complete_cells"].values()) == {1}, result
    assert result["states"].get("RUNNING", 0) == 0 and result["states"].get("WAITING", 0) == 0, result
    assert result["running_runs"] == 0, result


@contextmanager
def fresh_postgres() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test, dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    name = f"mmsearch_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN}: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_redis() -> Iterator[str]:
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS, socket_connect_timeout=3)
    try:
        client.flushdb()
    except redis.RedisError as exc:
        pytest.skip(f"Redis not reachable at {REDIS}: {exc}")
    try:
        yield REDIS
    finally:
        client.flushdb()


def record(fault: str, storage: str, result: dict[str, Any], codes: list[int], errs: list[str], cells: int | None = 4,
           note: str = "") -> None:
    """Add this scenario's figures to the fault table when MMSEARCH_FAULT_TABLE names a file
    (``python -m benchmarks.faults`` renders it into BENCHMARKS.md)."""
    path = os.environ.get("MMSEARCH_FAULT_TABLE")
    if not path:
        return
    import json

    counts = result["complete_cells"]
    row = {"fault": fault, "storage": "PostgreSQL" if storage.startswith("postgresql") else "journal file",
           "exit": codes, "complete_once": sum(1 for n in counts.values() if n == 1), "cells": cells,
           "duplicates": sum(n - 1 for n in counts.values() if n > 1),
           "lost": None if cells is None else cells - len(counts),  # None: an interrupted run completes nothing
           "running_trials": result["states"].get("RUNNING", 0), "running_runs": result["running_runs"],
           "tracebacks": sum("Traceback" in e for e in errs), "note": note}
    with open(path, "a") as handle:
        handle.write(json.dumps(row) + "\n")
