"""One tracked training run of an experiment: ``mmsearch train``."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mmsearch.charts import history_figure, report_html
from mmsearch.config import STAGE_NAMES, dump_yaml, flatten, load_experiment, to_dict
from mmsearch.pipeline._stages import STAGES, StageResult, run_stage
from mmsearch.pipeline._workspace import Workspace, foreground_threads
from mmsearch.tracking import MlflowEpochLogger, Tracker
from mmsearch.training import EpochProgress, always_label1_f1, history_columns

log = logging.getLogger("mmsearch.train")


@dataclass
class TrainOutcome:
    run_id: str
    results: dict[str, StageResult]
    baseline_f1: float


def train_experiment(experiment: str, overrides: Mapping[str, Any] | None = None,
                     stages: Sequence[str] = STAGE_NAMES, tracking_uri: str | None = None,
                     experiment_name: str = "mmsearch-train") -> TrainOutcome:
    """Train ``stages`` of an experiment (upstream stages come from the cache or train first) as
    one MLflow run with per-epoch curves of every stage."""
    for stage in stages:
        STAGES.get(stage)  # an unknown stage is an error listing the registered ones, before anything runs
    cfg = load_experiment(experiment, overrides)
    tracker = Tracker(tracking_uri)
    dataset = Workspace(cfg).dataset  # bad data is one message, before anything about threads
    cfg = foreground_threads(cfg)
    ws = Workspace(cfg, dataset)
    experiment_id = tracker.experiment(experiment_name, "single training runs of `mmsearch train`")
    results: dict[str, StageResult] = {}
    with tracker.run(experiment_id, f"{cfg.name}:{'+'.join(stages)}", tags={"experiment": cfg.name}) as run_id:
        tracker.log_params(run_id, flatten(to_dict(cfg)))
        tracker.log_text(run_id, dump_yaml(cfg), "config.yaml")
        tracker.set_tags(run_id, {"dataset": str(ws.dataset.root), "dataset_fingerprint": ws.dataset.fingerprint})
        baseline = always_label1_f1(ws.targets[ws.split.val])
        tracker.log_metrics(run_id, {"baseline_label1_f1": baseline})
        figures = []
        for stage in stages:
            result = run_stage(ws, stage, [MlflowEpochLogger(tracker, run_id, prefix=f"{stage}/"),
                                           EpochProgress(f"train {stage}", getattr(cfg, stage).optim.epochs)])
            results[stage] = result
            tracker.log_metrics(run_id, {f"{stage}/final_{k}": v for k, v in result.metrics.items()})
            tracker.log_metrics(run_id, {f"{stage}/params": result.params, f"{stage}/size_mb": result.size_mb})
            figures.append((f"{stage} stage", history_figure(history_columns(result.fit.history), f"{stage} stage")))
            log.info("%s stage: val samples-F1 %.4f (baseline %.4f)", stage, result.metrics["val_f1"], baseline)
        tracker.log_text(run_id, report_html(f"{cfg.name}: training curves", figures), "charts/curves.html")
    return TrainOutcome(run_id, results, baseline)
