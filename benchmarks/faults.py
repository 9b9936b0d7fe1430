"""``python -m benchmarks.faults``: run the fault-injection tests on both storages (real
processes, real signals) and write what each left behind into BENCHMARKS.md's fault table."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def table(rows: list[dict]) -> str:
    lines = ["| fault | storage | exit | every cell COMPLETE once | duplicates | lost | RUNNING trials | RUNNING MLflow runs "
             "| tracebacks | what happened |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        once = "interrupted" if r["cells"] is None else f"{r['complete_once']}/{r['cells']}"
        lines.append(f"| {r['fault']} | {r['storage']} | {', '.join(map(str, r['exit']))} | {once} | {r['duplicates']} "
                     f"| {'-' if r['lost'] is None else r['lost']} | {r['running_trials']} | {r['running_runs']} "
                     f"| {r['tracebacks']} | {r['note']} |")
    return "\n".join(lines)


def main() -> int:
    out = Path(tempfile.mkdtemp()) / "faults.jsonl"
    env = {**os.environ, "MMSEARCH_FAULT_TABLE": str(out)}
    started = dt.datetime.now(dt.timezone.utc)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/test_faults.py", "tests/test_infra_faults.py",
                           "-m", "slow or not slow"], cwd=ROOT, env=env)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    from benchmarks.__main__ import replace_section

    replace_section(ROOT / "BENCHMARKS.md", "faults", "\n".join([
        f"Written by `python -m benchmarks.faults` on {started:%Y-%m-%d %H:%M} UTC: tests/test_faults.py (signals, on "
        "a journal file and on PostgreSQL) and tests/test_infra_faults.py (a real tmpfs filled up, a real SIGSTOP "
        "inside the journal's lock, real `pg_terminate_backend`, a real `mlflow server` killed and restarted), each "
        "injected into real `mmsearch sweep run` processes, then Optuna and MLflow read back (pytest exit status "
        f"{proc.returncode}). The exit column lists every command's status in order.", "", table(rows)]))
    print(table(rows))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
