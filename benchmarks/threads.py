"""``python -m benchmarks.threads``: a foreground training (``export``, ``train``) on a machine a
sweep keeps busy, with every core (what ``export`` used: the cpu profile's ``run.threads: 2`` on
2 cores) against the threads ``foreground_threads`` picks (the CPUs the load leaves idle).

The load is one busy process per core, as a sweep with that many workers is; the case lets it
settle (``foreground_threads`` measures the busy CPUs over half a second), then trains the text stage on
the real captions with each thread count in turn, several times, and compares the median
seconds per epoch. The table goes to BENCHMARKS.md (section ``threads``).
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def _epoch_seconds(cfg: object, threads: int) -> float:
    import torch

    from mmsearch.config import with_overrides
    from mmsearch.pipeline import Workspace, run_stage

    ws = Workspace(with_overrides(cfg, {"run.threads": threads}))  # type: ignore[arg-type]
    torch.set_num_threads(threads)
    history = run_stage(ws, "text").fit.history
    return statistics.median(e.seconds for e in history[1:] or history)  # the first epoch warms up


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.threads", description=__doc__)
    parser.add_argument("--rows", type=int, default=8000, help="real caption rows to train on")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from benchmarks.__main__ import _environment, replace_section

    workdir = Path(tempfile.mkdtemp(prefix="mmsearch-threads-"))
    _environment(workdir)
    from mmsearch.config import load_experiment
    from mmsearch.pipeline import foreground_threads

    real = SHARED / "data" / "comp5329-captions"
    data = workdir / "captions"
    data.mkdir()
    lines = (real / "train.csv").read_text().splitlines(keepends=True)
    (data / "train.csv").write_text("".join(lines[: args.rows + 1]))
    cfg = load_experiment("cpu", {"data.path": str(data), "text.optim.epochs": 4, "text.optim.early_stopping": None})
    cpus = len(os.sched_getaffinity(0))
    from mmsearch.runtime import idle_cpu_threads

    idle, _, idle_busy = idle_cpu_threads()
    _epoch_seconds(cfg, cpus)  # vocabulary, vectors and tokens cached before anything is timed
    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cpus)]
    try:
        time.sleep(5)  # every load process past its start-up
        chosen = foreground_threads(cfg).run.threads or cpus
        _, _, busy = idle_cpu_threads()
        default, ours = [], []
        for _ in range(args.repeats):
            default.append(_epoch_seconds(cfg, cpus))
            ours.append(_epoch_seconds(cfg, chosen))
    finally:
        for p in load:
            p.kill()
    base, mine = statistics.median(default), statistics.median(ours)
    table = "\n".join([
        "| case | every core (as before) | foreground_threads | ratio | target | met |",
        "|---|---|---|---|---|---|",
        f"| T1 a foreground text-stage epoch under a {cpus}-process load ({args.rows} real captions) | {cpus} threads: "
        f"{base:.2f} s/epoch | {chosen} thread(s): {mine:.2f} s/epoch | {base / mine:.2f}x | >= 1.0x (never slower "
        f"than every core under load) | {'yes' if base / mine >= 1.0 else 'no'} |"])
    report = "\n".join([
        f"Written by `python -m benchmarks.threads --rows {args.rows} --repeats {args.repeats}` on "
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC: {cpus} CPUs, {busy:.1f} busy under the load "
        f"(as foreground_threads measures it); before it, {idle_busy:.1f} busy and {idle} thread(s) picked. Medians of {args.repeats} alternating runs of "
        "4 epochs each (the first epoch of each run left out).", "", table])
    print(report)
    replace_section(ROOT / "BENCHMARKS.md", "threads", report)
    print(f"wrote {ROOT / 'BENCHMARKS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
