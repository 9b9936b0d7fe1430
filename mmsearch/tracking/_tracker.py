"""MLflow tracking through an explicit ``MlflowClient`` and run ids passed around.

No code path relies on MLflow's thread-local active run: that stack breaks with worker threads
and nested runs. Every run is ended by a context manager, whatever ends its body, so no run
stays RUNNING after a crash, a pruned trial or Ctrl-C. Writes are retried while SQLite says
"database is locked" (several worker processes share one store), so ending a run at shutdown
never fails on a busy store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mmsearch._disk import on_disk_full
from mmsearch._interrupts import deferred
from mmsearch._paths import cache_root
from mmsearch._processes import describe_holder, holder_advice, lock_holders
from mmsearch._waits import STOPPING_WAIT_S, WaitBudget, report_due
from mmsearch.errors import MmsearchError, TrackingStoreLocked
from mmsearch.tracking._outbox import QUEUED_PREFIX, QUEUED_TAG, Outbox, queued_id, unreachable

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger("mmsearch.tracking")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # our summaries name the runs

T = TypeVar("T")
# MLflow's own defaults (3.7+): runs and registry in ./mlflow.db, artifacts under ./mlruns, so
# `mlflow ui`, `mlflow models serve` and `mlflow.search_runs()` find mmsearch's runs without flags.
DEFAULT_DB = "mlflow.db"
DEFAULT_DIR = "mlruns"
PARENT_TAG = "mlflow.parentRunId"
# MLflow's UI opens an experiment without this tag in its GenAI (traces) view.
KIND_TAG, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"
DESCRIPTION_TAG = "mlflow.note.content"
# MLflow's shared runs-table views live in experiment tags under this prefix; mmsearch writes one.
SHARED_VIEW_TAG, VIEW_KEY = "mlflow.sharedViewState.", "mmsearch"
# An exception class -> (MLflow status, our ``state`` tag) for how a run ended.
EndStates = Mapping[type[BaseException], tuple[str, str]]
DEFAULT_END_STATES: EndStates = {KeyboardInterrupt: ("KILLED", "interrupted"), SystemExit: ("KILLED", "interrupted")}


class TrackingError(MmsearchError):
    """The tracking store cannot be used (unreachable server, refused credentials, unwritable folder)."""


def default_tracking_uri(root: Path | None = None) -> str:
    """MLflow's default store in ``root`` (the current folder): ``sqlite:///ROOT/mlflow.db``. A
    store of an earlier mmsearch (``ROOT/mlruns/mlflow.db``) is moved there once, with a message;
    its artifacts stay where they are (their locations are in the store)."""
    root = (root or Path.cwd()).resolve()
    db, legacy = root / DEFAULT_DB, root / DEFAULT_DIR / DEFAULT_DB
    try:
        (root / DEFAULT_DIR).mkdir(parents=True, exist_ok=True)
        if legacy.is_file() and not db.exists():
            _move_legacy_store(legacy, db)
    except OSError as exc:
        raise TrackingError(f"cannot use the default MLflow store {db} ({exc.strerror}): run from a writable "
                            "folder or set --tracking-uri / MLFLOW_TRACKING_URI") from None
    if legacy.is_file():
        log.warning("two MLflow stores here: %s (used: MLflow's default) and %s (an earlier mmsearch's, not read); "
                    "pass --tracking-uri sqlite:///%s to read the old one", db, legacy, legacy)
    return f"sqlite:///{db}"


def _move_legacy_store(legacy: Path, db: Path) -> None:
    if any(legacy.with_name(legacy.name + suffix).exists() for suffix in ("-journal", "-wal")):
        return  # a process is writing it now (or died mid-write): move it on a later, quiet start
    try:
        os.link(legacy, db)  # no-clobber: of two processes starting together one moves it
    except FileExistsError:
        return
    legacy.unlink()
    log.warning("moved the MLflow store %s to %s, where MLflow itself looks (`mlflow ui`, `mlflow models serve`, "
                "notebooks); its artifacts stay under %s", legacy, db, legacy.parent)


def resolve_tracking_uri(uri: str | None = None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def ui_link(uri: str, experiment_id: str, run_id: str | None = None, local_ui: str = "http://127.0.0.1:5000") -> str:
    """Where a run (or an experiment's runs table) opens in the MLflow UI: the server itself for
    an http(s) store, else ``mmsearch ui``'s default address. MLflow 3 opens experiments in its
    GenAI (traces) view unless the link asks for the model-training view; the table opens with the
    columns ``Tracker.share_view`` chose (the sweep's metric, the level) where the sweep wrote them."""
    base = uri.rstrip("/") if urllib.parse.urlsplit(uri).scheme in ("http", "https") else local_ui
    if run_id:
        return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"


def artifact_root(uri: str) -> str | None:
    """Where the experiments of a SQLite store keep their artifacts (None: the server decides)."""
    db = _sqlite_path(uri)
    if db is None:
        return None
    return str(db.parent / ("artifacts" if db.parent.name == DEFAULT_DIR else DEFAULT_DIR))


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


STORE_LOCK_WAIT_S = 120.0  # how long a write waits for a locked SQLite store where no --grace says


class _StoreWait:
    """How long this process waits for a locked SQLite store, by the policy every lock of a run
    follows (:mod:`mmsearch._waits`): SQLite's own lock has no holder that ever lets go if it was
    stopped mid-write (SIGSTOP, Ctrl-Z), so each wait says who holds it (``/proc/locks``) and how
    to free it, and gives up after ``give_up_s`` with :class:`TrackingStoreLocked` (exit 3,
    nothing lost). Once the waits are short (stopping, or one gave up), a write first asks
    without blocking whether the store is free: MLflow's sessions wait 20 s on a locked file."""

    def __init__(self, db: Path | None, give_up_s: float) -> None:
        self.db = db
        self.give_up_s = give_up_s
        self.budget = WaitBudget(TrackingStoreLocked)

    def turn(self, started: float, reported: float, what: str) -> float:
        """One turn of a wait begun at ``started`` (monotonic) for ``what``: raise a held
        interrupt, or give up; returns when the stall was last reported."""
        waited = self.budget.check(started, self.give_up_s,
                                   lambda: f"the MLflow store {self.db} ({what}), {self.holder()}")
        if report_due(waited, reported):
            holder = self._holder()
            log.warning("waiting %.0f s for the MLflow store %s (%s), locked by %s: %s; this process gives up after "
                        "%.0f s", waited, self.db, what, describe_holder(holder), holder_advice(holder),
                        STOPPING_WAIT_S if self.budget.deadline is not None else self.give_up_s)
            return waited
        return reported

    def locked(self) -> bool:
        """Whether another process holds the store's write lock now (asked without waiting)."""
        if self.db is None or not self.db.exists():
            return False
        import sqlite3

        try:
            con = sqlite3.connect(self.db, timeout=0)
            try:
                con.execute("BEGIN IMMEDIATE")
                con.rollback()
            finally:
                con.close()
        except sqlite3.OperationalError as exc:
            return "locked" in str(exc)
        return False

    def holder(self) -> str:
        """"locked by ...: what frees it", for a message that ends a run."""
        holder = self._holder()
        return (f"locked by {describe_holder(holder)}. Nothing is lost: {holder_advice(holder)}, then rerun the "
                "same command to resume")

    def _holder(self) -> int | None:
        holders = lock_holders(self.db) if self.db is not None else []
        return holders[0] if holders else None


@contextlib.contextmanager
def _schema_lock(uri: str, wait: _StoreWait) -> Iterator[None]:
    """One process at a time opens a SQLite store: ``flock`` on the database file itself (SQLite's
    own locks are POSIX record locks, which ``flock`` does not touch); waited for as any lock of
    the store is."""
    db = _sqlite_path(uri)
    if db is None:
        yield
        return
    import fcntl

    fd = os.open(db, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        started, reported = time.monotonic(), 0.0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                reported = wait.turn(started, reported, "open it")
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def _retry(call: Callable[[], T], what: str, wait: _StoreWait) -> T:
    """Run ``call``, retrying while another process holds the SQLite store's write lock, as long
    as ``wait`` allows; after the first "locked", the store is asked without waiting until it is
    free (each blocked MLflow call would wait 20 s)."""
    started, reported, attempt = time.monotonic(), 0.0, 0
    blocked = wait.budget.short
    while True:
        if blocked and wait.locked():
            reported = wait.turn(started, reported, what)
            time.sleep(min(0.05 * 2**attempt, 1.0))
            attempt += 1
            continue
        try:
            with deferred():  # an interrupt mid-write could leave the store locked for our own clean-up
                return call()
        except Exception as exc:
            if "database is locked" not in str(exc):
                on_disk_full(exc)  # frees the space that ending this process's runs needs
                raise
            log.debug("MLflow store busy (%s), retrying %s", exc, what)
            blocked = True
            reported = wait.turn(started, reported, what)


def _register_version(client: MlflowClient, run_id: str, args: dict[str, Any]) -> str:
    from mlflow.exceptions import MlflowException

    name = args["name"]
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="mmsearch final model")
    source = f"{client.get_run(run_id).info.artifact_uri}/{args['artifact_path']}"
    version = client.create_model_version(name, source, run_id=run_id, tags=args["tags"],
                                          description=args["description"][:5000])
    client.set_registered_model_alias(name, args["alias"], version.version)
    return str(version.version)


class Tracker:
    def __init__(self, tracking_uri: str | None = None, lock_wait_s: float = STORE_LOCK_WAIT_S) -> None:
        """``lock_wait_s``: how long a write waits for a SQLite store another process keeps
        locked before it gives up (:class:`TrackingStoreLocked`); sweeps pass their --grace."""
        from mlflow.tracking import MlflowClient

        self.uri = resolve_tracking_uri(tracking_uri)
        check_store(self.uri)
        self._wait = _StoreWait(_sqlite_path(self.uri), lock_wait_s)
        self.outbox: Outbox | None = None
        if urllib.parse.urlsplit(self.uri).scheme in ("http", "https"):
            # Fail a write to a down server at once (it is queued, see _outbox), not after MLflow's
            # ~4 minutes of retries with a warning each.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
            folder = cache_root() / "mlflow-outbox" / hashlib.sha256(self.uri.encode()).hexdigest()[:12]
            self.outbox = Outbox(self.uri, folder, self._apply, lambda: check_store(self.uri, 3.0, 10.0))
        with _schema_lock(self.uri, self._wait):
            # Opening a SQLite store reads its tables, which a process holding the store's lock blocks.
            self.client = self._call(lambda: MlflowClient(tracking_uri=self.uri), "open the tracking store")
            # The stores create and migrate their tables when first used; two processes doing it
            # at once on a fresh SQLite file collide ("table alembic_version already exists").
            self._call(lambda: self.client.search_experiments(max_results=1), "open the tracking store")
            try:
                self._call(lambda: self.client.search_registered_models(max_results=1), "open the model registry")
            except TrackingStoreLocked:
                raise
            except Exception:  # a server without the registry still tracks
                pass
        if self.outbox is not None:
            with contextlib.suppress(Exception):  # queued by processes that ended during an outage
                self.outbox.send_left_behind()

    def _call(self, call: Callable[[], T], what: str) -> T:
        return _retry(call, what, self._wait)

    def store_lock_holder(self) -> str:
        """Who keeps the SQLite store locked and what frees it ("locked by ...")."""
        return self._wait.holder()

    def give_up_waiting(self) -> None:
        """From now on a locked store gets STOPPING_WAIT_S, not the whole wait: the run is
        stopping because a lock stayed held, and its clean-up must not wait for it again."""
        self._wait.budget.give_up()

    def _artifact_root(self) -> str | None:
        # Artifacts live beside the SQLite store the user chose, under mlruns/ as MLflow's default
        # layout has them; without a location MLflow would use ./mlruns of whatever folder the
        # process runs in. A store that is itself in a mlruns/ folder (an earlier mmsearch's
        # layout) keeps artifacts/ beside it.
        return artifact_root(self.uri)

    def experiment(self, name: str, description: str | None = None) -> str:
        found = self._call(lambda: self.client.get_experiment_by_name(name), "get_experiment")
        if found is None:
            root = self._artifact_root()
            location = f"{root}/{name.replace('/', '_')}" if root else None
            try:
                experiment_id = self._call(lambda: self.client.create_experiment(
                    name, artifact_location=location, tags={KIND_TAG: TRAINING_KIND}), "create_experiment")
            except Exception:  # another worker created it first
                found = self._call(lambda: self.client.get_experiment_by_name(name), "get_experiment")
                if found is None:
                    raise
                experiment_id = found.experiment_id
        else:
            experiment_id = found.experiment_id
        if description is not None and (found is None or found.tags.get(DESCRIPTION_TAG) != description):
            self._call(lambda: self.client.set_experiment_tag(experiment_id, DESCRIPTION_TAG, description), "describe")
        return experiment_id

    def create_run(self, experiment_id: str, name: str, parent_run_id: str | None = None,
                   tags: Mapping[str, str] | None = None) -> str:
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags[PARENT_TAG] = parent_run_id
        return self._write("create_run", experiment_id=experiment_id, name=name, tags=all_tags) or ""

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
        self._write("update_run", run_id=run_id, status="RUNNING")

    def end(self, run_id: str, status: str, state: str, reason: str | None = None) -> None:
        tags = {"state": state, **({"ended_because": reason} if reason else {})}
        self.set_tags(run_id, tags)
        self._write("set_terminated", run_id=run_id, status=status)

    def status(self, run_id: str) -> str:
        if self.outbox is not None and (self.outbox.active or run_id.startswith(QUEUED_PREFIX)):
            return "RUNNING"  # as far as the queued writes know
        return self._call(lambda: self.client.get_run(self._resolve(run_id)), "get_run").info.status

    # -- logging -------------------------------------------------------------------------------
    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:

        items = [(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self._write("log_batch", run_id=run_id, params=dict(items[start : start + 100]))

    def describe_experiment(self, experiment_id: str, text: str) -> None:
        """The experiment's description (markdown, shown above its runs table)."""
        self._write("set_experiment_tag", experiment_id=experiment_id, key=DESCRIPTION_TAG, value=text[:5000])

    def share_view(self, experiment_id: str, columns: Sequence[str]) -> None:
        """The runs table's columns for links that ask for ``VIEW_KEY`` (MLflow's own shared
        views: an experiment tag the UI reads when a link carries ``viewStateShareKey``). MLflow
        shows no metric column by default, so without it a sweep's answer is one click away."""
        state = {"selectedColumns": list(columns)}
        self._write("set_experiment_tag", experiment_id=experiment_id, key=f"{SHARED_VIEW_TAG}{VIEW_KEY}",
                    value=json.dumps(state))

    def log_dataset(self, run_id: str, name: str, digest: str, source: str, profile: Mapping[str, Any],
                    context: str = "training") -> None:
        """The dataset a run trained on, in MLflow's Dataset column (``mlflow.log_input``): its
        name, content digest, folder and size."""
        self._write("log_input", run_id=run_id, name=name, digest=digest[:36],
                    source=json.dumps({"uri": source}), profile=json.dumps(dict(profile)), context=context)

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.log_metric_steps(run_id, [(step or 0, metrics)])

    def log_metric_steps(self, run_id: str, steps: Sequence[tuple[int, Mapping[str, float]]]) -> None:
        """Several steps' metrics in as few writes as MLflow allows (1,000 metrics per batch)."""

        now = int(time.time() * 1000)
        items = [(k, float(v), now, step) for step, metrics in steps for k, v in metrics.items() if v is not None]
        for start in range(0, len(items), 1000):
            self._write("log_batch", run_id=run_id, metrics=items[start : start + 1000])

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:

        self._write("log_batch", run_id=run_id, tags={k: str(v)[:8000] for k, v in tags.items()})

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self._write("log_text", run_id=run_id, text=text, artifact_file=artifact_file)

    def log_artifacts(self, run_id: str, local_dir: Path, artifact_path: str) -> None:
        """Upload a folder as the run's ``artifact_path`` (queued as a copy while the server is away)."""
        self._write("log_artifacts", run_id=run_id, local_dir=str(local_dir), artifact_path=artifact_path)

    def register_version(self, name: str, run_id: str, artifact_path: str, tags: Mapping[str, str], description: str,
                         alias: str) -> str | None:
        """A new version of registered model ``name`` (created on first use) from the run's
        ``artifact_path``, given ``alias``. Returns its version, or None when it is queued (the
        server is away): it is registered when the queue is sent."""
        result = self._write("register_version", run_id=run_id, name=name, artifact_path=artifact_path,
                             tags=dict(tags), description=description, alias=alias)
        return None if result is None else str(result)

    # -- writes, straight or through the outbox ------------------------------------------------
    def _write(self, op: str, **args: Any) -> Any:
        """One MLflow write: now, or (an http server that cannot be reached) queued in this
        process's outbox, which sends it when the server is back. A queued ``create_run``
        returns a placeholder id that the later queued writes use."""
        box = self.outbox
        if box is None:
            return self._call(lambda: self._apply(op, args), op)
        with box.lock:
            if not box.active:
                try:
                    return self._call(lambda: self._apply(op, args), op)
                except Exception as exc:
                    if not unreachable(exc):
                        raise
                    box.begin(exc)
            if op == "log_artifacts":  # the caller's folder may be gone by the time the queue is sent
                args["local_dir"] = box.keep(Path(args["local_dir"]))
            if op == "create_run":
                args["queued_as"] = placeholder = queued_id()
                box.queue(op, args)
                return placeholder
            box.queue(op, args)
            return None

    def _resolve(self, run_id: str) -> str:
        if self.outbox is None or not run_id.startswith(QUEUED_PREFIX):
            return run_id
        return self.outbox._find_queued(run_id)

    def _apply(self, op: str, args: dict[str, Any]) -> Any:
        from mlflow.entities import Metric, Param, RunTag

        client = self.client
        run_id = self._resolve(args["run_id"]) if "run_id" in args else None
        if op == "create_run":
            tags = dict(args["tags"]) | ({QUEUED_TAG: args["queued_as"]} if args.get("queued_as") else {})
            return client.create_run(args["experiment_id"], run_name=args["name"], tags=tags).info.run_id
        if op == "log_batch":
            client.log_batch(run_id, metrics=[Metric(*m) for m in args.get("metrics", [])],
                             params=[Param(k, v) for k, v in args.get("params", {}).items()],
                             tags=[RunTag(k, v) for k, v in args.get("tags", {}).items()])
        elif op == "set_terminated":
            client.set_terminated(run_id, status=args["status"])
        elif op == "update_run":
            client.update_run(run_id, status=args["status"])
        elif op == "log_text":
            client.log_text(run_id, args["text"], args["artifact_file"])
        elif op == "log_artifacts":
            client.log_artifacts(run_id, args["local_dir"], args["artifact_path"])
            if self.outbox is not None:
                self.outbox.forget(args["local_dir"])  # a copy kept while queued: sent, so no longer needed
        elif op == "register_version":
            return _register_version(client, run_id, args)
        elif op == "set_experiment_tag":
            client.set_experiment_tag(args["experiment_id"], args["key"], args["value"])
        elif op == "log_input":
            from mlflow.entities import Dataset, DatasetInput, InputTag

            dataset = Dataset(name=args["name"], digest=args["digest"], source_type="local", source=args["source"],
                              profile=args["profile"])
            client.log_inputs(run_id, datasets=[DatasetInput(dataset, [InputTag("mlflow.data.context", args["context"])])])
        elif op == "find_queued":
            ids = [e.experiment_id for e in client.search_experiments(max_results=10000)]
            found = client.search_runs(ids, f"tags.`{QUEUED_TAG}` = '{args['queued_as']}'", max_results=1)
            return found[0].info.run_id if found else None
        else:
            raise ValueError(f"unknown MLflow write {op!r}")
        return None

    def alias_version(self, name: str, alias: str) -> str | None:
        """The version of registered model ``name`` that ``alias`` names; None while the server is
        away (its queued writes unsent) or when there is none."""
        from mlflow.exceptions import MlflowException

        if self.outbox is not None and self.outbox.active:
            return None
        try:
            return str(self._call(lambda: self.client.get_model_version_by_alias(name, alias), "get_model_version").version)
        except MlflowException:
            return None

    def close(self, wait_s: float = 0.0) -> None:
        """Send what this process queued during an outage and what ended processes left queued,
        waiting up to ``wait_s`` seconds for the server while anything is queued."""
        if self.outbox is not None:
            self.outbox.close(wait_s)

    def running_children(self, parent_run_id: str) -> list[Any]:
        if self.outbox is not None and self.outbox.active:
            return []  # unknown until the server is back; the next repair looks again
        experiment_id = self._call(lambda: self.client.get_run(self._resolve(parent_run_id)), "get_run").info.experiment_id
        return self._search(experiment_id, f"tags.{PARENT_TAG} = '{parent_run_id}' and attributes.status = 'RUNNING'")

    def children(self, experiment_id: str, parent_run_id: str) -> list[Any]:
        return self._search(experiment_id, f"tags.{PARENT_TAG} = '{parent_run_id}'")

    def _search(self, experiment_id: str, filter_string: str) -> list[Any]:
        return self._call(lambda: self.client.search_runs([experiment_id], filter_string=filter_string, max_results=5000),
                      "search_runs")
