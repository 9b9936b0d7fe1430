"""Export the best configuration of finished sweeps as a registered MLflow pyfunc model."""

from mmsearch.export._best import Decision, sweep_decisions
from mmsearch.export._export import (
           ALIAS,
           ExportRequest,
           ExportResult,
           base_overrides,
           export_config,
           export_model,
           final_config,
           register,
)
from mmsearch.export._predict import PredictOutcome, load_model, predict_csv

__all__ = ["PredictOutcome", "load_model", "predict_csv", "Decision", "sweep_decisions", "ALIAS", "ExportRequest",
           "ExportResult", "base_overrides", "export_config", "export_model", "final_config", "register"]
