"""``python -m benchmarks.reproduce``: ``mmsearch reproduce`` against its own plan and against the
same sweeps run one after another with ``mmsearch sweep run``.

* R1, the plan: the estimate the plan printed for everything after it (the sweeps' cells on the
  workers, the two final models) against the time that took in the same run. Target: within ±30%.
* R2, the schedule: the sweeps of that run on one cross-sweep schedule (the ``reproduce`` process
  from its start to the end of its last sweep, less the calibration) against the same sweeps run
  by ``mmsearch sweep run`` one after another with the same workers, in a folder of its own whose
  cache was warmed by the same calibration (``reproduce --plan``, not timed). Target: ≥ 1.2x.

Both on the generated demo data with the ``cpu`` profile, each in a fresh folder, storage and
MLflow store; the table goes to BENCHMARKS.md (section ``reproduce``).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOK = re.compile(r"took (\d+)s: planning (\d+)s \(calibration (\d+)s\), sweeps (\d+)s, final models (\d+)s, "
                  r"report (\d+)s; after the plan (\d+)s, which it estimated at (\d+)s")


def _run(args: list[str], cwd: Path, ok: tuple[int, ...] = (0,)) -> tuple[float, str]:
    env = {**os.environ, "MMSEARCH_CACHE_DIR": str(cwd / "cache"), "MLFLOW_TRACKING_URI": f"sqlite:///{cwd}/mlflow.db",
           "MMSEARCH_PROGRESS": "0"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mmsearch", *args], cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode not in ok:
        raise SystemExit(f"mmsearch {' '.join(args)} exited {done.returncode}:\n{done.stderr[-4000:]}")
    return seconds, done.stdout


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.reproduce", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", default=[], metavar="GLOB", help="as `reproduce --only` (default: all)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="members of each final model")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md as it is")
    args = parser.parse_args(argv)
    from benchmarks.__main__ import _environment, replace_section

    workdir = Path(tempfile.mkdtemp(prefix="mmsearch-reproduce-"))
    _environment(workdir)
    select = ["--experiment", "cpu", "--workers", str(args.workers)] + [f"--only={g}" for g in args.only]
    ours, sequential = workdir / "reproduce", workdir / "sweep-run"
    ours.mkdir()
    sequential.mkdir()

    wall, out = _run(["reproduce", *select, "--repeats", str(args.repeats)], ours)
    took = TOOK.search(out)
    if took is None:
        raise SystemExit(f"no timing line in the output of reproduce:\n{out[-3000:]}")
    total, _, calibration, sweeps_s, final_s, _, after, estimated = (int(x) for x in took.groups())
    names = [line.split(":")[0] for line in out.splitlines() if re.match(r"^[a-z][\w-]+: \d+/\d+ cells complete", line)]
    if not names:
        raise SystemExit(f"no sweep lines ('NAME: N/M cells complete') in the output of reproduce:\n{out[-3000:]}")
    schedule_s = total - calibration - final_s - int(took.group(6))

    _run(["reproduce", "--plan", *select], sequential)  # the same calibration into its cache: not timed
    one_by_one = []
    for name in names:
        # Exit 3 is a sweep with cells that cannot run offline (cnn-backbone's uncached weights), as in reproduce.
        seconds, _ = _run(["sweep", "run", name, "--experiment", "cpu", "--workers", str(args.workers)], sequential, (0, 3))
        one_by_one.append((name, seconds))
    sequential_s = sum(s for _, s in one_by_one)

    ratio_plan = after / max(1, estimated)
    speedup = sequential_s / max(1, schedule_s)
    rows = [
        "| case | measured | baseline | ratio | target | verdict |",
        "|---|---|---|---|---|---|",
        f"| R1 plan vs measured: everything after the plan ({len(names)} sweeps on {args.workers} workers, the two final "
        f"models with {args.repeats} members each) | {after} s measured | {estimated} s estimated | "
        f"{ratio_plan:.2f} | 0.70..1.30 | {'met' if 0.7 <= ratio_plan <= 1.3 else 'NOT met'} |",
        f"| R2 one schedule vs `sweep run` one after another ({len(names)} sweeps, {args.workers} workers) | "
        f"{schedule_s} s (reproduce, less calibration, final models and report) | {sequential_s:.0f} s (sum of "
        f"{len(names)} `sweep run`) | {speedup:.2f}x | ≥ 1.2x | {'met' if speedup >= 1.2 else 'NOT met'} |",
    ]
    detail = ", ".join(f"{n} {s:.0f}s" for n, s in one_by_one)
    text = "\n".join([
        f"Measured {dt.date.today().isoformat()} on {os.cpu_count()} CPU cores by `python -m benchmarks.reproduce"
        f"{''.join(f' --only {g}' for g in args.only)}` (demo data, `cpu` profile; fresh folders, stores and caches).",
        "", *rows, "",
        f"reproduce took {total} s in all: planning {took.group(2)} s (calibration {calibration} s), sweeps {sweeps_s} s, "
        f"final models {final_s} s, report {took.group(6)} s. The sweeps one by one: {detail}.",
    ])
    print(text)
    if not args.no_write:
        replace_section(ROOT / "BENCHMARKS.md", "reproduce", "## reproduce: the plan's estimate and the cross-sweep schedule\n\n"
                        + text)
    return 0 if 0.7 <= ratio_plan <= 1.3 and speedup >= 1.2 else 1


if __name__ == "__main__":
    raise SystemExit(main())
