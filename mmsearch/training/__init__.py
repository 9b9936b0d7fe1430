"""The shared training engine, metrics, losses and the stage pipeline with its caches."""

from mmsearch.training._engine import (
    Callback, EarlyStopping, EpochLog, FitResult, FitState, LoaderBatches, TensorBatches, fit, predict,
    resolve_device, seed_everything,
)
from mmsearch.training._losses import LOSSES, SCHEDULERS, class_weight_vector
from mmsearch.training._metrics import (
    always_label1_f1, binarize, macro_f1, micro_f1, samples_f1, scores, tune_thresholds,
)
from mmsearch.training._stages import (
    STAGES, StageResult, Workspace, backbone_features, fusion_inputs, run_stage, stage_features, stage_key,
    stats, uses_backbone_cache,
)

__all__ = [
    "Callback", "EarlyStopping", "EpochLog", "FitResult", "FitState", "LoaderBatches", "TensorBatches", "fit",
    "predict", "resolve_device", "seed_everything", "LOSSES", "SCHEDULERS", "class_weight_vector",
    "always_label1_f1", "binarize", "macro_f1", "micro_f1", "samples_f1", "scores", "tune_thresholds", "STAGES",
    "StageResult", "Workspace", "backbone_features", "fusion_inputs", "run_stage", "stage_features", "stage_key",
    "stats", "uses_backbone_cache",
]
