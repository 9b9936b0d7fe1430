"""``python -m benchmarks [--quick]``: run every case, print the table, write BENCHMARKS.md."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def _environment(workdir: Path) -> None:
    # Importing mmsearch makes relative cache folders (the README's `TORCH_HOME=../shared/...`)
    # absolute; it must happen before the chdir below, or they would name folders under workdir.
    import mmsearch  # noqa: F401

    for var, sub in (("TORCH_HOME", "torch"), ("GENSIM_DATA_DIR", "gensim-data"), ("NLTK_DATA", "nltk_data")):
        if (SHARED / "cache" / sub).exists():
            os.environ.setdefault(var, str(SHARED / "cache" / sub))
    os.environ.setdefault("MMSEARCH_OFFLINE", "1")
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ["MMSEARCH_CACHE_DIR"] = str(workdir / "cache")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir}/mlflow.db"
    os.chdir(workdir)


def replace_section(path: Path, name: str, content: str) -> None:
    """Put ``content`` between this section's markers in ``path``, keeping the rest of the file
    (the fault table, the readings written beside the numbers)."""
    begin, end = f"<!-- {name}: begin -->", f"<!-- {name}: end -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{begin}\n{content}\n{end}"
    if begin in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


GPU_SKIPPED: list[str] = []


def _gpu_cases(workdir: Path) -> list:  # type: ignore[type-arg]
    """G1 and G2 where a CUDA GPU is visible; elsewhere one line saying why, in the table's notes."""
    from benchmarks import gpu

    why = gpu.cuda_or_none()
    if why:
        GPU_SKIPPED.append(f"G1/G2 (GPU input pipeline, workers per GPU) could not run here: {why}.")
        print(GPU_SKIPPED[-1], flush=True)
        return []
    return gpu.g1_input_pipeline() + gpu.g2_sweep_workers(workdir)


def _table(rows: list) -> str:  # type: ignore[type-arg]
    lines = ["| case | baseline | mmsearch | ratio | target | met | notes |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.case} | {r.baseline}: {r.baseline_value:.3g} {r.unit} | {r.ours}: {r.ours_value:.3g} {r.unit} "
                     f"| {r.ratio:.2f}x | {r.target} | {'yes' if r.met else 'NO'} | {r.note} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and trials (< 5 minutes); numbers printed")
    parser.add_argument("--only", nargs="*", help="run only these cases, e.g. B1 B7")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md", help="where to write the table")
    parser.add_argument("--ray-env", type=Path, default=ROOT / ".venv-ray",
                        help="Ray Tune's own environment for B8 (built there on first use; --quick only uses an existing one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix="mmsearch-bench-"))
    _environment(workdir)
    from mmsearch.config import load_experiment
    from mmsearch.data import SynthSpec, demo_dataset, synthesize

    from benchmarks import _cases as c

    quick = args.quick
    reps = 2 if quick else 3
    rounds = 1 if quick else 2
    # --quick uses a smaller demo so the whole harness stays under 5 minutes in CI.
    data = str(synthesize(workdir / "quick-demo", SynthSpec(n_train=600, n_test=100, image_size=48, seed=0))
               if quick else demo_dataset())
    cfg = load_experiment("cpu", {"data.path": data, **({"data.image_size": 48} if quick else {})})
    # B4/B5 trials of about 10 s on 2 cores (the B5 target is stated for ~10 s trials).
    text_quick = {"text.optim.epochs": 4 if quick else 40}
    cases = {
        # As the paper's notebook did: the CNN is fine-tuned (here mobilenet_v2 at 64 px) ...
        "B1": lambda: c.b1_stage_cache(load_experiment("cpu", {
            "data.path": data, "data.image_size": cfg.data.image_size, "image.freeze_backbone": False,
            "image.augmentation": "paper-final", "image.optim.epochs": 1 if quick else 3, "image.optim.lr": 1e-3,
            "image.optim.early_stopping": None}), 1 if quick else 3,
            note="fine-tuned mobilenet_v2 CNN (3 epochs, as the paper fine-tuned ResNet50) + Bi-LSTM upstream"),
        # ... and the laptop profile, whose frozen backbone makes the upstream cheap to re-run.
        "B1b": lambda: c.b1_stage_cache(cfg, 1 if quick else 3, "B1b stage cache (cpu profile)",
                                        "frozen mobilenet_v2 features + Bi-LSTM upstream"),
        "B2": lambda: c.b2_image_cache(SHARED / "data" / "coco-mini", reps, 2 if quick else 10),
        "B3": lambda: c.b3_pruning(data, workdir, 8 if quick else 20, rounds),
        "B4": lambda: c.b4_workers(data, workdir, {**text_quick, "text.optim.early_stopping": None}, rounds),
        "B5": lambda: c.b5_bookkeeping(load_experiment("cpu", {"data.path": data, **text_quick,
                                                               "text.optim.early_stopping": None}),
                                       data, workdir, {**text_quick, "text.optim.early_stopping": None}, reps),
        # B6 sides take ~4 s each and this machine varies ~20% run to run: more repetitions.
        "B6": lambda: c.b6_extraction(cfg, 3 if quick else 7),
        "B7": lambda: c.b7_word_vectors(cfg, 1 if quick else 3),
        "B8": lambda: c.b8_peers(SHARED / "data" / "comp5329-captions", workdir, 2000 if quick else 8000,
                                 4 if quick else 12, 2 if quick else 6, 1 if quick else 2,
                                 None if quick and not (args.ray_env / "bin" / "python").exists() else args.ray_env),
        "B9": lambda: c.b9_pruners(data, workdir, 8 if quick else 20, rounds),
        "S1": lambda: c.s1_startup(data, workdir, 2 if quick else 5),
        "C1": lambda: c.c1_cli(2 if quick else 5),
        "G": lambda: _gpu_cases(workdir),
        "M1": lambda: c.m1_memory(workdir, data, ("fusion-dropout-count",) if quick else
                                  ("fusion-dropout-count", "cnn-augmentation")),
    }
    rows = []
    started = time.perf_counter()
    for name, run in cases.items():
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        result = run()
        for row in result if isinstance(result, list) else [result]:
            rows.append(row)
            print(f"{row.case}: {row.ratio:.2f}x (target {row.target}; {'met' if row.met else 'MISSED'}) "
                  f"[{time.perf_counter() - t0:.0f}s] {row.note}", flush=True)
    table = _table(rows)
    print(table)
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in ("torch", "torchvision", "optuna", "mlflow", "gensim", "numpy"))
    command = "python -m benchmarks" + (" --quick" if quick else "") + (f" --only {' '.join(args.only)}" if args.only else "")
    report = "\n".join([
        f"Written by `{command}` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{time.perf_counter() - started:.0f} s in all.", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}, Python {platform.python_version()}; "
        f"{versions}.", "",
        "Both sides of each case ran in this one run, alternating, several times; times are medians.", "", table,
        *(["", *GPU_SKIPPED] if GPU_SKIPPED else [])])
    if not quick or args.out != parser.get_default("out"):
        replace_section(args.out, "harness", report)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
