"""``python -m benchmarks.scale``: what mmsearch costs at the paper's size (COMP5329: 30,000
training and 10,000 test images, COCO photos of ~640x480 and ~160 KB), measured at N = 1,000,
5,000 and 40,000 images on this machine.

For each N, in a fresh cache folder, each step runs in a process of its own (its wall time, its
peak resident memory: ``VmHWM``, which counts the pages of a memory-mapped cache it touched, and
the peak of its anonymous memory, ``RssAnon``, which is what it cannot give back):

* **synth**: ``mmsearch data synth --coco`` writes the N images (every core) and the CSVs;
* **validate**: ``Dataset.open`` (the CSVs, every image present) and the images' fingerprint and
  the split, what every sweep does before it starts;
* **decode 64 / 224**: the decoded-image cache (``load_images``) at the cpu profile's 64 px and
  the paper's 224 px: images/s per core, bytes on disk;
* **extract**: one frozen-feature pass of the cpu profile's backbone (mobilenet_v2, 64 px);
* **augment 224**: one fine-tuning epoch's input pipeline alone (the paper's ``paper-final``
  augmentation at 224 px over the training rows, batches of 64, no model);
* **plan**: ``mmsearch reproduce --plan`` (its calibration trains the base configuration's stages
  once, then every sweep is priced), then again with the calibration cached;
* **sweep**: ``mmsearch sweep run fusion-dropout-count`` (fusion epochs cut to 3; its upstream
  stages the plan's calibration cached): the coordinator's and a trial worker's peak memory.

Each figure's growth from the smallest N to the largest is printed beside it (per image: 1.00x
is linear). The table goes to BENCHMARKS.md (section ``scale``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = (1000, 5000, 40000)


# -- inside a step's own process -------------------------------------------------------------
def _status_kb(pid: int | str, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class _AnonPeak:
    """The peak ``RssAnon`` of a process, sampled every 50 ms (the kernel keeps no peak of it)."""

    def __init__(self, pid: int | str = "self") -> None:
        self.pid, self.peak_kb, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, _status_kb(self.pid, "RssAnon"))
            self._stop.wait(0.05)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_kb / 1024


def _workspace(data: Path, overrides: dict[str, object] | None = None):  # type: ignore[no-untyped-def]
    from mmsearch.config import load_experiment
    from mmsearch.pipeline import Workspace

    return Workspace(load_experiment("cpu", {"data.path": str(data), **(overrides or {})}))


def _step_validate(data: Path) -> dict[str, float]:
    from mmsearch.data import Dataset

    ds = Dataset.open(data)
    ds.images_fingerprint  # noqa: B018  (what a sweep's cache keys read)
    ds.split(0.2, 42)
    return {"items": len(ds.image_ids)}


def _step_decode(data: Path, size: int) -> dict[str, float]:
    from mmsearch.data import Dataset, load_images

    images = load_images(Dataset.open(data), size)
    return {"items": images.shape[0], "bytes": float(images.nbytes)}


def _step_extract(data: Path) -> dict[str, float]:
    from mmsearch.pipeline._stages import ImageStage

    ws = _workspace(data)
    ws.images()  # decoded before the clock that matters: the pass below is the backbone's
    started = time.perf_counter()
    feats, _ = ImageStage().backbone_features(ws)
    return {"items": feats.shape[0], "inner_s": time.perf_counter() - started, "bytes": float(feats.nbytes)}


def _step_augment(data: Path) -> dict[str, float]:
    import numpy as np

    from mmsearch.data import ImageBatches, build_transform

    ws = _workspace(data, {"data.image_size": 224, "image.augmentation": "paper-final"})
    images = ws.images()
    rows = ws.split.train
    transform = build_transform("paper-final", 224, train=True)
    started = time.perf_counter()
    seen = 0
    for (x,), _ in ImageBatches(images, rows, ws.targets, 64, transform, ws.runtime, shuffle=True, seed=0,
                                prefetch=ws.prefetch):
        seen += int(x.shape[0])
    assert seen == len(rows) and np.isfinite(float(x.float().mean()))
    return {"items": seen, "inner_s": time.perf_counter() - started}


STEPS: dict[str, Callable[..., dict[str, float]]] = {
    "validate": _step_validate, "decode64": lambda d: _step_decode(d, 64), "decode224": lambda d: _step_decode(d, 224),
    "extract": _step_extract, "augment224": _step_augment,
}


def _run_step(name: str, data: Path) -> None:
    anon = _AnonPeak()
    started = time.perf_counter()
    out = STEPS[name](data)
    out["wall_s"] = time.perf_counter() - started
    out["anon_mb"] = anon.stop()
    out["hwm_mb"] = _status_kb("self", "VmHWM") / 1024
    print("STEP " + json.dumps(out), flush=True)


# -- the benchmark's own process ---------------------------------------------------------------
def _child(args: list[str], env: dict[str, str], log: Path) -> tuple[dict[str, float], float]:
    started = time.perf_counter()
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(args)}\n")
        out.flush()
        proc = subprocess.run(args, env=env, stdout=subprocess.PIPE, stderr=out, text=True, check=False)
    wall = time.perf_counter() - started
    with open(log, "a") as out:
        out.write(proc.stdout)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {proc.returncode}; see {log}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("STEP ")]
    return (json.loads(lines[-1][5:]) if lines else {}), wall


def _watched(args: list[str], env: dict[str, str], log: Path) -> tuple[float, float, float]:
    """Run a command, sampling its own memory (the coordinator): wall s, peak VmHWM MB, peak RssAnon MB."""
    started = time.perf_counter()
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(args)}\n")
        out.flush()
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        anon, hwm = _AnonPeak(proc.pid), 0
        while proc.poll() is None:
            hwm = max(hwm, _status_kb(proc.pid, "VmHWM"))
            time.sleep(0.05)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {proc.returncode}; see {log}")
    return time.perf_counter() - started, hwm / 1024, anon.stop()


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure(n: int, workdir: Path, log: Path) -> dict[str, dict[str, float]]:
    cpus = len(os.sched_getaffinity(0))
    data, cache = workdir / f"coco-{n}", workdir / f"cache-{n}"
    env = {**os.environ, "MMSEARCH_CACHE_DIR": str(cache), "MMSEARCH_PROGRESS": "0",
           "MLFLOW_TRACKING_URI": f"sqlite:///{workdir}/mlflow-{n}.db",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    mmsearch = [sys.executable, "-m", "mmsearch"]
    rows: dict[str, dict[str, float]] = {}
    n_test = n // 4
    _, wall = _child([*mmsearch, "data", "synth", str(data), "--n-train", str(n - n_test), "--n-test", str(n_test),
                      "--coco"], env, log)
    rows["synth"] = {"wall_s": wall, "items": n, "bytes": float(_du(data / "data"))}
    for step in STEPS:
        out, wall = _child([sys.executable, "-m", "benchmarks.scale", "--step", step, "--data", str(data)], env, log)
        out["process_s"] = wall
        rows[step] = out
        print(f"  N={n} {step}: {out}", flush=True)
    for big in (cache / "images").glob("*-224px"):  # 6 GB at 40k, and nothing below reads it
        shutil.rmtree(big, ignore_errors=True)
    wall, _, _ = _watched([*mmsearch, "reproduce", "--plan", "--data", str(data), "--experiment", "cpu"], env, log)
    again, _, _ = _watched([*mmsearch, "reproduce", "--plan", "--data", str(data), "--experiment", "cpu"], env, log)
    rows["plan"] = {"wall_s": wall, "again_s": again}
    storage = workdir / f"journal-{n}.log"
    wall, hwm, anon = _watched([*mmsearch, "sweep", "run", "fusion-dropout-count", "--experiment", "cpu", "--data",
                                str(data), "--storage", str(storage), "--set", "fusion.optim.epochs=3"], env, log)
    rows["sweep"] = {"wall_s": wall, "hwm_mb": hwm, "anon_mb": anon, "worker_mb": _worker_peak(storage)}
    rows["cpus"] = {"n": cpus}
    print(f"  N={n} plan/sweep: {rows['plan']} {rows['sweep']}", flush=True)
    return rows


def _worker_peak(storage: Path) -> float:
    import optuna

    from mmsearch.search import open_storage

    backend = open_storage(str(storage)).optuna
    peaks = [t.user_attrs.get("worker_peak_rss_mb", 0.0) for s in optuna.get_all_study_summaries(backend)
             for t in optuna.load_study(study_name=s.study_name, storage=backend).trials]
    return max(peaks, default=0.0)


def _mb(x: float) -> str:
    return f"{x / 2**30:.2f} GB" if x >= 2**30 else f"{x / 2**20:.0f} MB"


def table(results: dict[int, dict[str, dict[str, float]]]) -> str:
    sizes = sorted(results)
    small, big = sizes[0], sizes[-1]
    cpus = int(results[big]["cpus"]["n"])

    def growth(get: Callable[[int], float]) -> str:
        """Per image, the largest N against the smallest: 1.00x is linear, below is better."""
        a, b = get(small) / small, get(big) / big
        return f"{b / a:.2f}x" if a > 0 else "-"

    def rate(step: str, key: str = "wall_s") -> Callable[[int], str]:
        return lambda n: f"{results[n][step]['items'] / results[n][step].get(key, results[n][step]['wall_s']):,.0f}/s"

    lines = ["| step | " + " | ".join(f"N = {n:,}" for n in sizes) + " | per image, "
             f"{big:,} vs {small:,} |", "|---|" + "---|" * len(sizes) + "---|"]

    def row(name: str, cell: Callable[[int], str], get: Callable[[int], float]) -> None:
        lines.append(f"| {name} | " + " | ".join(cell(n) for n in sizes) + f" | {growth(get)} |")

    r = results
    row("synth: wall (images/s); image bytes on disk",
        lambda n: f"{r[n]['synth']['wall_s']:.0f} s ({n / r[n]['synth']['wall_s']:.0f}/s); {_mb(r[n]['synth']['bytes'])}",
        lambda n: r[n]["synth"]["wall_s"])
    row("validate (CSVs, every image present, fingerprint, split): wall; peak anon",
        lambda n: f"{r[n]['validate']['wall_s']:.2f} s; {r[n]['validate']['anon_mb']:.0f} MB",
        lambda n: r[n]["validate"]["wall_s"])
    for size in (64, 224):
        s = f"decode{size}"
        row(f"decoded-image cache at {size} px: wall (images/s per core); on disk; peak anon / VmHWM",
            lambda n, s=s: (f"{r[n][s]['wall_s']:.1f} s ({r[n][s]['items'] / r[n][s]['wall_s'] / cpus:.0f}/s/core); "
                            f"{_mb(r[n][s]['bytes'])}; {r[n][s]['anon_mb']:.0f} / {r[n][s]['hwm_mb']:.0f} MB"),
            lambda n, s=s: r[n][s]["wall_s"])
    row("frozen mobilenet_v2 features at 64 px: pass (images/s); peak anon",
        lambda n: f"{r[n]['extract']['inner_s']:.1f} s ({rate('extract', 'inner_s')(n)}); {r[n]['extract']['anon_mb']:.0f} MB",
        lambda n: r[n]["extract"]["inner_s"])
    row("a fine-tuning epoch's input pipeline at 224 px (paper-final, no model): images/s; peak anon",
        lambda n: f"{r[n]['augment224']['inner_s']:.1f} s ({rate('augment224', 'inner_s')(n)}); "
                  f"{r[n]['augment224']['anon_mb']:.0f} MB",
        lambda n: r[n]["augment224"]["inner_s"])
    row("`reproduce --plan`: first (calibration trains the base once) / again (cached)",
        lambda n: f"{r[n]['plan']['wall_s']:.0f} s / {r[n]['plan']['again_s']:.1f} s", lambda n: r[n]["plan"]["again_s"])
    row("`sweep run fusion-dropout-count` (3 fusion epochs): wall; coordinator peak anon / VmHWM; a worker's VmHWM",
        lambda n: (f"{r[n]['sweep']['wall_s']:.0f} s; {r[n]['sweep']['anon_mb']:.0f} / {r[n]['sweep']['hwm_mb']:.0f} MB; "
                   f"{r[n]['sweep']['worker_mb']:.0f} MB"),
        lambda n: r[n]["sweep"]["worker_mb"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="image counts N to measure")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md as it is")
    parser.add_argument("--keep", action="store_true", help="keep the generated datasets and caches")
    parser.add_argument("--step", choices=sorted(STEPS), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        _run_step(args.step, args.data)
        return 0
    from benchmarks.__main__ import _environment, replace_section

    workdir = Path(tempfile.mkdtemp(prefix="mmsearch-scale-"))
    _environment(workdir)
    log = workdir / "scale.log"
    print(f"working in {workdir}; every command's output in {log}", flush=True)
    results: dict[int, dict[str, dict[str, float]]] = {}
    try:
        for n in sorted(args.sizes):
            results[n] = measure(n, workdir, log)
    finally:
        if not args.keep:
            for n in args.sizes:
                shutil.rmtree(workdir / f"coco-{n}", ignore_errors=True)
                shutil.rmtree(workdir / f"cache-{n}", ignore_errors=True)
    text = table(results)
    print(text)
    if not args.no_write:
        command = "python -m benchmarks.scale" + (f" --sizes {' '.join(map(str, args.sizes))}"
                                                  if list(args.sizes) != list(SIZES) else "")
        replace_section(ROOT / "BENCHMARKS.md", "scale", "\n".join([
            "## scale: the paper's size on this machine",
            "",
            f"`{command}` on {dt.date.today().isoformat()}, {len(os.sched_getaffinity(0))} CPU cores, "
            "COCO-sized synthetic photos (`mmsearch data synth --coco`: 640 px on the long side, JPEG q90), "
            "the cpu profile. Every step in a process of its own; *anon* is the peak of its anonymous memory "
            "(what it cannot give back), *VmHWM* its peak resident memory including the cache pages it mapped.",
            "",
            text]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
