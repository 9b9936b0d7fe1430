"""A short calibration of this machine and data: each stage of the base configuration trained
once, in a worker process with a worker's share of the threads (the coordinator never runs
torch). What it trains is not thrown away: the image and text networks are cached exactly as
the fusion sweeps' upstream job and the sweeps' base cells would train them. The measurement
is cached by data, configuration, stages and threads."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

from mmsearch._cache import cached, entry, stable_hash
from mmsearch.config import STAGE_INPUTS, STAGE_NAMES, ExperimentConfig, to_dict, with_overrides
from mmsearch.data import Dataset
from mmsearch.errors import MmsearchError
from mmsearch.reproduce._plan import Calibration, StageCost, slowdown

log = logging.getLogger("mmsearch.reproduce")
VERSION = 1


def calibrate(base: ExperimentConfig, dataset: Dataset, stages: list[str], workers: int) -> Calibration:
    from mmsearch.search import ready_context, worker_threads

    cfg = with_overrides(base, {"run.threads": worker_threads(base, workers)}, where="calibration")
    stages = [s for s in STAGE_NAMES if s in stages or any(s in STAGE_INPUTS[o] for o in stages)]
    key = stable_hash({"config": to_dict(cfg), "data": dataset.fingerprint, "stages": stages, "v": VERSION})
    path = entry("calibration", key, ".json")
    started = time.perf_counter()
    if not path.exists():
        log.warning("calibrating: training the %s stage(s) of the base configuration once on this data (%d "
                    "thread(s), as a worker has); what it trains is cached for the sweeps", ", ".join(stages),
                    cfg.run.threads)
        failure = path.with_name(path.name + ".error")
        failure.unlink(missing_ok=True)  # a killed run's
        process = ready_context().Process(target=_measure_main, args=(cfg, str(dataset.root), stages, str(path),
                                                                 dict(os.environ)), name="mmsearch-calibration")
        process.start()
        try:
            process.join()
        except BaseException:
            process.kill()
            process.join()
            raise
        if failure.exists():  # bad input the child named (weights not cached, bad data): its one message
            message = failure.read_text().rstrip(". ")
            failure.unlink()
            raise MmsearchError(f"calibrating the stages {', '.join(stages)}: {message}; nothing was planned or run")
        if process.exitcode != 0 or not path.exists():
            raise MmsearchError(f"calibrating the stages {', '.join(stages)} failed (exit code {process.exitcode}; its "
                                "message is above); nothing was planned or run")
    saved = json.loads(path.read_text())
    costs = {s: StageCost(**c) for s, c in saved["costs"].items()}
    seconds = time.perf_counter() - started
    return Calibration(costs, seconds if seconds > 1.0 else 0.0, key, **saved.get("load", {}))



def _measure_main(cfg: ExperimentConfig, root: str, stages: list[str], path: str, environ: dict[str, str]) -> None:
    os.environ.clear()
    os.environ.update(environ)
    os.environ["MMSEARCH_PROGRESS"] = "0"
    logging.basicConfig(level=logging.WARNING, force=True,
                        format="%(asctime)s [calibration] %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("mmsearch.progress").setLevel(logging.INFO)  # a decode or a feature pass: a line every 20 s
    from mmsearch.runtime import idle_cpu_threads

    _, cpus, busy = idle_cpu_threads()  # other processes' load, measured before this one adds its own
    try:
        costs = measure(cfg, Dataset.open(root), stages)
    except MmsearchError as exc:
        Path(path + ".error").write_text(str(exc))
        raise SystemExit(2) from None
    # Kept as a quiet machine would have measured them: the cache outlives the load it ran under.
    factor = slowdown(busy, cpus, cfg.run.threads or 1)
    costs = {s: replace(c, epoch_s=c.epoch_s / factor, loop_extract_s=c.loop_extract_s / factor)
             for s, c in costs.items()}

    def write(tmp: Path) -> None:
        tmp.write_text(json.dumps({"costs": {s: asdict(c) for s, c in costs.items()},
                                   "load": {"busy": round(busy, 2), "cpus": cpus, "factor": round(factor, 3)}}, indent=1))

    cached(Path(path), write, kind="calibration", what="calibration")


def measure(cfg: ExperimentConfig, dataset: Dataset, stages: list[str]) -> dict[str, StageCost]:
    """Train each stage once: its seconds per epoch and the epochs early stopping ran. A stage
    another one trains on is kept in (or read from) the stage cache, as the sweeps keep it."""
    from mmsearch.pipeline import Workspace, run_stage
    from mmsearch.training import EpochProgress

    ws = Workspace(cfg, dataset)
    out = {}
    for stage in stages:
        feeds = any(stage in STAGE_INPUTS[other] for other in stages)
        started = time.perf_counter()
        # A line at most every 20 s: at the paper's size a stage trains for minutes.
        progress = EpochProgress(f"calibrating {stage}", getattr(cfg, stage).optim.epochs, log_every_s=20.0)
        result = run_stage(ws, stage, [progress], reuse=feeds)
        wall = time.perf_counter() - started
        fit = result.fit
        epochs = max(1, len(fit.history))
        extract = 0.0
        if stage == "image" and wall > fit.seconds:
            # The backbone's pass over every row went into its feature cache now: one over the
            # training rows is what a level with random augmentations pays every epoch.
            extract = (wall - fit.seconds) * len(ws.split.train) / max(1, dataset.n_train + dataset.n_test)
        out[stage] = StageCost(stage, fit.seconds / epochs, epochs, getattr(cfg, stage).optim.epochs, extract)
    return out
