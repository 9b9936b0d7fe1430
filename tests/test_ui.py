import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from _sweepproc import alive, free_port, wait_for, wait_until_serving


def _descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM])  # Ctrl-C takes the same handler
def test_stopping_mmsearch_ui_stops_the_server_it_started(tmp_path: Path, sig: int) -> None:
    pytest.importorskip("requests")
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    proc = subprocess.Popen([sys.executable, "-m", "mmsearch", "ui", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until_serving(proc, f"http://127.0.0.1:{port}", "the MLflow UI to answer")
        server = _descendants(proc.pid)
        assert server  # mlflow server and its web workers
        # The store's URI (which may hold a password) is in no process's arguments, which `ps` shows to all.
        for pid in server:
            with contextlib.suppress(OSError):
                assert "mlflow.db" not in Path(f"/proc/{pid}/cmdline").read_text(), pid
        proc.send_signal(sig)  # `kill PID` (or Ctrl-C) on mmsearch ui, not on its children
        proc.wait(30)
        wait_for(lambda: not _open(port), 20, "the port to close")
        wait_for(lambda: not any(alive(p) for p in server), 20, "every process of the server to exit")
    finally:
        for p in _descendants(proc.pid) | {proc.pid}:
            if alive(p):
                os.kill(p, signal.SIGKILL)
