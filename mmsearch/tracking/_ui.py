"""``mmsearch ui``: the MLflow UI as a child process group that never outlives this command.

``mlflow server`` starts a web server that starts workers; a plain ``subprocess.call`` leaves all
of them running, port open, when this process is stopped with ``kill``. Here the server runs in
its own session: SIGTERM, SIGINT or SIGHUP to this process stops the whole group (SIGTERM, then
SIGKILL after a few seconds), and the kernel sends the server SIGTERM if this process dies
without a chance to clean up.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from typing import Any

from mmsearch._net import masked

STOP_WAIT_S = 10.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the signal handlers below still stop it
        pass


def check_port_free(host: str, port: int) -> None:
    """Fail before printing a link to a server that could never start there."""
    import errno
    import socket

    from mmsearch.tracking._tracker import TrackingError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no conflict
        try:
            probe.bind((host, port))
        except OSError as exc:
            hint = (f"another program (perhaps an earlier `mmsearch ui`) listens there; pass --port {port + 1}"
                    if exc.errno == errno.EADDRINUSE else "pass another --host or --port")
            raise TrackingError(f"cannot serve the MLflow UI on {host}:{port} ({exc.strerror}): {hint}") from None


def serve_ui(uri: str, host: str, port: int) -> int:
    from mmsearch.tracking._tracker import artifact_root

    check_port_free(host, port)
    # The store's URI goes in the environment: it may hold a password, and arguments are public (ps).
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": uri}
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port)]
    if uri.startswith("sqlite:///"):  # artifacts beside the store, where Tracker writes them
        cmd += ["--default-artifact-root", str(artifact_root(uri))]
    print(f"MLFLOW_BACKEND_STORE_URI={masked(uri)} " + " ".join(cmd), flush=True)
    # MLflow 3 opens an experiment in its GenAI view unless asked for the model-training one.
    print(f"open http://{host}:{port}/#/experiments?workflowType=machine_learning (Ctrl-C or `kill` stops the server)",
          flush=True)
    server = subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=_die_with_parent)
    stopping: list[float] = []

    def stop(signum: int, frame: Any) -> None:  # only signals here: waiting belongs to the loop below
        if not stopping:
            stopping.append(time.monotonic())
            _signal_group(server, signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    try:
        while True:
            try:
                code = server.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if stopping and time.monotonic() - stopping[0] > STOP_WAIT_S:
                    _signal_group(server, signal.SIGKILL)
    finally:
        _signal_group(server, signal.SIGKILL)  # whatever of the group is left: the server's own workers
    return 0 if stopping else code


def _signal_group(server: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, sig)
