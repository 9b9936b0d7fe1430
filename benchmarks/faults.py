"""``python -m benchmarks.faults [--only faults|faults-infra]``: run the fault-injection tests
(real processes: signals on both storages; a full disk, a stopped lock holder, dropped database
connections, a dead tracking server) and write what each left behind into BENCHMARKS.md's
fault tables."""

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


SUITES = {
    # section -> (tests, what the section's first line says was injected)
    "faults": ("tests/test_faults.py", "tests/test_faults.py on a journal file and on PostgreSQL, each fault injected "
               "into real `mmsearch sweep run` processes with real signals"),
    "faults-infra": ("tests/test_infra_faults.py", "tests/test_infra_faults.py: faults that are not signals (a real "
                     "tmpfs filled up, a real SIGSTOP inside the journal's lock and inside the MLflow SQLite store's lock, "
                     "real `pg_terminate_backend`, a real "
                     "`mlflow server` killed and restarted, two runs racing a fresh store, kill -9 of `export`)"),
}


def render(section: str, rows: list[dict], started: dt.datetime, status: int) -> None:
    from benchmarks.__main__ import replace_section

    replace_section(ROOT / "BENCHMARKS.md", section, "\n".join([
        f"Written by `python -m benchmarks.faults` on {started:%Y-%m-%d %H:%M} UTC: {SUITES[section][1]}, then Optuna "
        f"and MLflow read back (pytest exit status {status}). The exit column lists every command's status in order.",
        "", table(rows)]))


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.faults", description=__doc__)
    parser.add_argument("--only", choices=sorted(SUITES), action="append", help="one section (repeatable; default all)")
    args = parser.parse_args(argv)
    worst = 0
    for section in args.only or list(SUITES):
        out = Path(tempfile.mkdtemp()) / "faults.jsonl"
        env = {**os.environ, "MMSEARCH_FAULT_TABLE": str(out)}
        started = dt.datetime.now(dt.timezone.utc)
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", SUITES[section][0], "-m", "slow or not slow"],
                              cwd=ROOT, env=env)
        rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
        render(section, rows, started, proc.returncode)
        print(table(rows))
        worst = worst or proc.returncode
    return worst


if __name__ == "__main__":
    sys.exit(main())
