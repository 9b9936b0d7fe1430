"""MLflow tracking through an explicit ``MlflowClient`` and run ids passed around.

No code path relies on MLflow's thread-local active run: that stack breaks with worker threads
and nested runs. Every run is ended by a context manager, whatever ends its body, so no run
stays RUNNING after a crash, a pruned trial or Ctrl-C. Writes are retried while SQLite says
"database is locked" (several worker processes share one store), so ending a run at shutdown
never fails on a busy store.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from mmsearch._disk import on_disk_full
from mmsearch._interrupts import deferred
from mmsearch.errors import MmsearchError

log = logging.getLogger("mmsearch.tracking")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # our summaries name the runs

T = TypeVar("T")
DEFAULT_DIR = "mlruns"
PARENT_TAG = "mlflow.parentRunId"
# MLflow's UI opens an experiment without this tag in its GenAI (traces) view.
KIND_TAG, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"
DESCRIPTION_TAG = "mlflow.note.content"
# An exception class -> (MLflow status, our ``state`` tag) for how a run ended.
EndStates = Mapping[type[BaseException], tuple[str, str]]
DEFAULT_END_STATES: EndStates = {KeyboardInterrupt: ("KILLED", "interrupted"), SystemExit: ("KILLED", "interrupted")}


class TrackingError(MmsearchError):
    """The tracking store cannot be used (unreachable server, refused credentials, unwritable folder)."""


def default_tracking_uri(root: Path | None = None) -> str:
    folder = (root or Path.cwd()) / DEFAULT_DIR
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrackingError(f"cannot create the default MLflow store {folder} ({exc.strerror}): run from a writable "
                            "folder or set --tracking-uri / MLFLOW_TRACKING_URI") from None
    return f"sqlite:///{folder.resolve()}/mlflow.db"


def resolve_tracking_uri(uri: str | None = None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def ui_link(uri: str, experiment_id: str, run_id: str | None = None, local_ui: str = "http://127.0.0.1:5000") -> str:
    """Where a run (or experiment) opens in the MLflow UI: the server itself for an http(s) store,
    else ``mmsearch ui``'s default address. MLflow 3 opens experiments in its GenAI (traces) view
    unless the link asks for the model-training view."""
    base = uri.rstrip("/") if urllib.parse.urlsplit(uri).scheme in ("http", "https") else local_ui
    return f"{base}/#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "") + "?workflowType=machine_learning"


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def _tracking_schemes() -> set[str]:
    """The URI schemes this MLflow has a tracking store for (plugins included)."""
    try:
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry

        return set(_tracking_store_registry._registry) - {""}
    except (ImportError, AttributeError):  # a future MLflow moved it: let MLflow judge
        return {"file", "sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks"}


def check_store(uri: str, connect_timeout: float = 5.0, answer_timeout: float = 60.0) -> None:
    """Fail within seconds, naming the URI, when the store cannot be used; MLflow's own client
    would retry an unreachable server for minutes before saying anything. A server that took the
    connection is up: it gets longer to answer, as one busy with several machines' writes (and
    hashing each request's password) can be slow to."""
    db = _sqlite_path(uri)
    if db is not None:
        if not db.parent.is_dir():
            raise TrackingError(f"MLflow store {uri}: folder {db.parent} does not exist")
        if not os.access(db.parent, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
            raise TrackingError(f"MLflow store {uri}: {db if db.exists() else db.parent} is not writable")
        return
    scheme = urllib.parse.urlsplit(uri).scheme
    known = _tracking_schemes()
    if scheme and scheme not in known:  # a plain path is MLflow's file store, its own to judge
        raise TrackingError(f"MLflow tracking URI {uri}: unsupported scheme {scheme!r}; MLflow stores are "
                            f"{', '.join(sorted(known))} (e.g. sqlite:///mlflow.db or http://HOST:5000)")
    if scheme not in ("http", "https"):
        return
    import requests

    auth = None
    if os.environ.get("MLFLOW_TRACKING_USERNAME"):
        auth = (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ.get("MLFLOW_TRACKING_PASSWORD", ""))
    probe = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search"
    try:
        response = requests.post(probe, json={"max_results": 1}, timeout=(connect_timeout, answer_timeout), auth=auth)
    except requests.RequestException as exc:
        raise TrackingError(f"cannot reach the MLflow tracking server {uri} ({type(exc).__name__}): check "
                            "--tracking-uri / MLFLOW_TRACKING_URI and that the server runs") from None
    if response.status_code in (401, 403):
        raise TrackingError(f"the MLflow tracking server {uri} refused the credentials (HTTP {response.status_code}): "
                            "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
    if response.status_code >= 400:
        raise TrackingError(f"the MLflow tracking server {uri} answered HTTP {response.status_code} to {probe}")


@contextlib.contextmanager
def _schema_lock(uri: str) -> Iterator[None]:
    """One process at a time opens a SQLite store: ``flock`` on the database file itself (SQLite's
    own locks are POSIX record locks, which ``flock`` does not touch)."""
    db = _sqlite_path(uri)
    if db is None:
        yield
        return
    import fcntl

    fd = os.open(db, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _retry(call: Callable[[], T], what: str, attempts: int = 30) -> T:
    """Run ``call``, retrying while another process holds the SQLite store's write lock."""
    for attempt in range(attempts):
        try:
            with deferred():  # an interrupt mid-write could leave the store locked for our own clean-up
                return call()
        except Exception as exc:
            if "database is locked" not in str(exc) or attempt == attempts - 1:
                on_disk_full(exc)  # frees the space that ending this process's runs needs
                raise
            time.sleep(min(0.05 * 2**attempt, 1.0))
            log.debug("MLflow store busy (%s), retrying %s", exc, what)
    raise AssertionError("unreachable")


class Tracker:
    def __init__(self, tracking_uri: str | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = resolve_tracking_uri(tracking_uri)
        check_store(self.uri)
        with _schema_lock(self.uri):
            self.client = MlflowClient(tracking_uri=self.uri)
            # The stores create and migrate their tables when first used; two processes doing it
            # at once on a fresh SQLite file collide ("table alembic_version already exists").
            _retry(lambda: self.client.search_experiments(max_results=1), "open the tracking store")
            with contextlib.suppress(Exception):  # a server without the registry still tracks
                _retry(lambda: self.client.search_registered_models(max_results=1), "open the model registry")

    def _artifact_root(self) -> str | None:
        # Artifacts live beside the SQLite store the user chose; without a location MLflow would
        # put them under ./mlruns of whatever folder the process runs in.
        db = _sqlite_path(self.uri)
        return str(db.parent / "artifacts") if db is not None else None

    def experiment(self, name: str, description: str | None = None) -> str:
        found = _retry(lambda: self.client.get_experiment_by_name(name), "get_experiment")
        if found is None:
            root = self._artifact_root()
            location = f"{root}/{name.replace('/', '_')}" if root else None
            try:
                experiment_id = _retry(lambda: self.client.create_experiment(
                    name, artifact_location=location, tags={KIND_TAG: TRAINING_KIND}), "create_experiment")
            except Exception:  # another worker created it first
                found = _retry(lambda: self.client.get_experiment_by_name(name), "get_experiment")
                if found is None:
                    raise
                experiment_id = found.experiment_id
        else:
            experiment_id = found.experiment_id
        if description is not None and (found is None or found.tags.get(DESCRIPTION_TAG) != description):
            _retry(lambda: self.client.set_experiment_tag(experiment_id, DESCRIPTION_TAG, description), "describe")
        return experiment_id

    def create_run(self, experiment_id: str, name: str, parent_run_id: str | None = None,
                   tags: Mapping[str, str] | None = None) -> str:
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags[PARENT_TAG] = parent_run_id
        run = _retry(lambda: self.client.create_run(experiment_id, run_name=name, tags=all_tags), "create_run")
        return run.info.run_id

    @contextlib.contextmanager
    def run(self, experiment_id: str, name: str, parent_run_id: str | None = None,
            tags: Mapping[str, str] | None = None, run_id: str | None = None,
            end_states: EndStates = DEFAULT_END_STATES, on_open: Callable[[str], Any] | None = None) -> Iterator[str]:
        """Create (or reopen) a run and always end it: FINISHED; the status ``end_states`` gives
        the exception that ended it (KILLED when interrupted); FAILED for any other (tag
        ``state`` says which, tag ``error`` why). ``on_open(run_id)`` records the run elsewhere
        in the same step that creates it, which no interrupt splits."""
        status, state = "FINISHED", "finished"
        opened: str | None = None
        try:
            with deferred():  # an interrupt waits until the run is known here, so it is ended below
                if run_id is None:
                    opened = self.create_run(experiment_id, name, parent_run_id, tags)
                else:
                    self.reopen(run_id)
                    opened = run_id
                if on_open is not None:
                    on_open(opened)
            yield opened
        except BaseException as exc:
            on_disk_full(exc)
            status, state = next((v for k, v in end_states.items() if isinstance(exc, k)), ("FAILED", "failed"))
            if status == "FAILED" and opened is not None:
                self.set_tags(opened, {"error": f"{type(exc).__name__}: {exc}"[:4000]})
            raise
        finally:
            try:
                if opened is not None:
                    try:
                        self.end(opened, status, state)
                    except Exception as exc:
                        if not on_disk_full(exc):
                            raise
                        self.end(opened, status, state)  # once more, in the space the reserve left
            except Exception as exc:  # never mask the original error; `sweep status` ends it later
                log.error("could not end MLflow run %s: %s", opened, exc)

    def reopen(self, run_id: str) -> None:
        _retry(lambda: self.client.update_run(run_id, status="RUNNING"), "reopen")

    def end(self, run_id: str, status: str, state: str, reason: str | None = None) -> None:
        tags = {"state": state, **({"ended_because": reason} if reason else {})}
        self.set_tags(run_id, tags)
        _retry(lambda: self.client.set_terminated(run_id, status=status), "set_terminated")

    def status(self, run_id: str) -> str:
        return _retry(lambda: self.client.get_run(run_id), "get_run").info.status

    # -- logging -------------------------------------------------------------------------------
    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            _retry(functools.partial(self.client.log_batch, run_id, params=items[start : start + 100]), "log_params")

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.log_metric_steps(run_id, [(step or 0, metrics)])

    def log_metric_steps(self, run_id: str, steps: Sequence[tuple[int, Mapping[str, float]]]) -> None:
        """Several steps' metrics in as few writes as MLflow allows (1,000 metrics per batch)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for step, metrics in steps for k, v in metrics.items() if v is not None]
        for start in range(0, len(items), 1000):
            _retry(functools.partial(self.client.log_batch, run_id, metrics=items[start : start + 1000]), "log_metrics")

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        _retry(lambda: self.client.log_batch(run_id, tags=[RunTag(k, str(v)[:8000]) for k, v in tags.items()]),
               "set_tags")

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        _retry(lambda: self.client.log_text(run_id, text, artifact_file), "log_text")

    def running_children(self, parent_run_id: str) -> list[Any]:
        experiment_id = _retry(lambda: self.client.get_run(parent_run_id), "get_run").info.experiment_id
        return self._search(experiment_id, f"tags.{PARENT_TAG} = '{parent_run_id}' and attributes.status = 'RUNNING'")

    def children(self, experiment_id: str, parent_run_id: str) -> list[Any]:
        return self._search(experiment_id, f"tags.{PARENT_TAG} = '{parent_run_id}'")

    def _search(self, experiment_id: str, filter_string: str) -> list[Any]:
        return _retry(lambda: self.client.search_runs([experiment_id], filter_string=filter_string, max_results=5000),
                      "search_runs")
