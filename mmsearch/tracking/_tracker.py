"""MLflow tracking through an explicit ``MlflowClient`` and run ids passed around.

No code path relies on MLflow's thread-local active run: that stack breaks with worker threads
and nested runs. Every run is ended by a context manager, whatever ends its body, so no run
stays RUNNING after a crash, a pruned trial or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("mmsearch.tracking")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

DEFAULT_DIR = "mlruns"
PARENT_TAG = "mlflow.parentRunId"
# An exception class -> (MLflow status, our ``state`` tag) for how a run ended.
EndStates = Mapping[type[BaseException], tuple[str, str]]
DEFAULT_END_STATES: EndStates = {KeyboardInterrupt: ("KILLED", "interrupted"), SystemExit: ("KILLED", "interrupted")}


def default_tracking_uri(root: Path | None = None) -> str:
    folder = (root or Path.cwd()) / DEFAULT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder.resolve()}/mlflow.db"


def resolve_tracking_uri(uri: str | None = None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


class Tracker:
    def __init__(self, tracking_uri: str | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = resolve_tracking_uri(tracking_uri)
        self.client = MlflowClient(tracking_uri=self.uri)

    def _artifact_root(self) -> str | None:
        # With the default SQLite store, artifacts live beside it in ./mlruns/artifacts.
        if self.uri.startswith("sqlite:///") and self.uri.endswith(f"{DEFAULT_DIR}/mlflow.db"):
            return str(Path(self.uri[len("sqlite:///"):]).parent / "artifacts")
        return None

    def experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        root = self._artifact_root()
        location = f"{root}/{name.replace('/', '_')}" if root else None
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except Exception:  # another worker created it first
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def create_run(self, experiment_id: str, name: str, parent_run_id: str | None = None,
                   tags: Mapping[str, str] | None = None) -> str:
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags[PARENT_TAG] = parent_run_id
        run = self.client.create_run(experiment_id, run_name=name, tags=all_tags)
        return run.info.run_id

    @contextlib.contextmanager
    def run(self, experiment_id: str, name: str, parent_run_id: str | None = None,
            tags: Mapping[str, str] | None = None, run_id: str | None = None,
            end_states: EndStates = DEFAULT_END_STATES) -> Iterator[str]:
        """Create (or reopen) a run and always end it: FINISHED; the status ``end_states`` gives
        the exception that ended it (KILLED when interrupted); FAILED for any other (tag
        ``state`` says which, tag ``error`` why)."""
        if run_id is None:
            run_id = self.create_run(experiment_id, name, parent_run_id, tags)
        else:
            self.client.update_run(run_id, status="RUNNING")
        status, state = "FINISHED", "finished"
        try:
            yield run_id
        except BaseException as exc:
            status, state = next((v for k, v in end_states.items() if isinstance(exc, k)), ("FAILED", "failed"))
            if status == "FAILED":
                self.set_tags(run_id, {"error": f"{type(exc).__name__}: {exc}"[:4000]})
            raise
        finally:
            try:
                self.end(run_id, status, state)
            except Exception:  # never mask the original error
                log.exception("could not end MLflow run %s", run_id)

    def end(self, run_id: str, status: str, state: str) -> None:
        self.set_tags(run_id, {"state": state})
        self.client.set_terminated(run_id, status=status)

    # -- logging -------------------------------------------------------------------------------
    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start : start + 100])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.log_metric_steps(run_id, [(step or 0, metrics)])

    def log_metric_steps(self, run_id: str, steps: list[tuple[int, Mapping[str, float]]]) -> None:
        """Several steps' metrics in as few writes as MLflow allows (1,000 metrics per batch)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for step, metrics in steps for k, v in metrics.items() if v is not None]
        for start in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[start : start + 1000])

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def log_file(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_html(self, run_id: str, html: str, artifact_file: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            path.write_text(html, encoding="utf-8")
            parent = str(Path(artifact_file).parent)
            self.client.log_artifact(run_id, str(path), None if parent == "." else parent)

    def children(self, experiment_id: str, parent_run_id: str) -> list[Any]:
        return self.client.search_runs([experiment_id], filter_string=f"tags.{PARENT_TAG} = '{parent_run_id}'",
                                       max_results=5000)
