"""Screenshots of what a user sees, taken with headless Chromium (Debian's ``chromium``):

* the sweep's MLflow experiment (it must open on the runs table, not the GenAI traces view);
* one trial's per-epoch curves in the MLflow UI;
* the sweep's ``charts/report.html``;
* optuna-dashboard on the study, when it is installed.

    python scripts/screenshots.py fusion-dropout-count --out screens/
    (run where the sweep ran: ./mlflow.db and ./optuna-journal.log, or pass --tracking-uri/--storage)
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--run-all-compositor-stages-before-draw",
                  "--virtual-time-budget=40000"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{url} did not answer in {seconds:.0f} s")


WIDTH = 1440


def shoot(browser: str, url: str, out: Path, height: int = 1000) -> Path:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, *CHROMIUM_FLAGS, f"--window-size={WIDTH},{height}", f"--user-data-dir={profile}", f"--screenshot={out}", url],
                       capture_output=True, timeout=120, check=True)
    print(f"{out}  <- {url}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="the sweep whose experiment, runs and report to show")
    parser.add_argument("--out", type=Path, default=Path("screens"))
    parser.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    parser.add_argument("--storage", default="optuna-journal.log", help="the study's storage, for optuna-dashboard")
    parser.add_argument("--model", help="a registered model whose champion version page to show too")
    parser.add_argument("--width", type=int, default=1440, help="browser window width in px (the runs table's columns)")
    args = parser.parse_args()
    global WIDTH
    WIDTH = args.width
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("headless Chromium is needed: apt-get install chromium")
    from mlflow import MlflowClient

    from mmsearch.tracking import resolve_tracking_uri, ui_link

    uri = resolve_tracking_uri(args.tracking_uri)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(f"sweep/{args.sweep}")
    if experiment is None:
        raise SystemExit(f"no experiment sweep/{args.sweep} in {uri}: run the sweep first")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    child = next(r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id)
    args.out.mkdir(parents=True, exist_ok=True)
    port = _port()
    ui = subprocess.Popen([sys.executable, "-m", "mmsearch", "ui", "--port", str(port), "--tracking-uri", uri],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(f"{base}/health")
        # The links mmsearch prints: the runs table with the sweep's columns, a run's page.
        shoot(browser, ui_link(base, experiment.experiment_id), args.out / "1-sweep-experiment.png")
        shoot(browser, ui_link(base, experiment.experiment_id, child.info.run_id).replace("?", "/model-metrics?"),
              args.out / "2-trial-curves.png")
        if args.model:
            version = client.get_model_version_by_alias(args.model, "champion")
            shoot(browser, f"{base}/#/models/{args.model}/versions/{version.version}", args.out / "7-model-version.png")
        report = Path(client.download_artifacts(parent.info.run_id, "charts/report.html", tempfile.mkdtemp()))
        shoot(browser, report.as_uri(), args.out / "3-report.png")
    finally:
        ui.send_signal(signal.SIGTERM)
        ui.wait(30)
    dashboard = shutil.which("optuna-dashboard")
    if dashboard and Path(args.storage).exists():
        port = _port()
        server = subprocess.Popen([dashboard, args.storage, "--port", str(port)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, env={**os.environ})
        try:
            _wait(f"http://127.0.0.1:{port}/")
            shoot(browser, f"http://127.0.0.1:{port}/dashboard", args.out / "4-optuna-dashboard.png")
            import optuna

            from mmsearch.search import open_storage

            storage = open_storage(args.storage).optuna
            for summary in optuna.get_all_study_summaries(storage):
                if summary.study_name.startswith(f"{args.sweep}@"):  # its page: the note with the level table
                    shoot(browser, f"http://127.0.0.1:{port}/dashboard/studies/{summary._study_id}",
                          args.out / "5-optuna-dashboard-study.png")
                    shoot(browser, f"http://127.0.0.1:{port}/dashboard/studies/{summary._study_id}/note",
                          args.out / "6-optuna-dashboard-note.png")  # the level table and the best-level rule
                    break
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)


if __name__ == "__main__":
    main()
