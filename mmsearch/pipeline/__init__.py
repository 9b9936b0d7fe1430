"""The paper's pipeline: a workspace per resolved experiment, one registered Stage per network
(image, text, fusion) with its caches, and tracked training runs."""

from mmsearch._lazy import lazy_exports

__all__ = ["uses_backbone_cache", "STAGES", "DatasetReport", "Stage", "StageResult", "TrainOutcome", "Workspace", "run_stage",
           "train_experiment", "inspect_dataset", "foreground_threads", "missing_assets"]
__getattr__, __dir__ = lazy_exports(__name__, {
    **dict.fromkeys(["STAGES", "Stage", "StageResult", "run_stage", "uses_backbone_cache"], "._stages"),
    **dict.fromkeys(["TrainOutcome", "train_experiment"], "._train"),
    **dict.fromkeys(["Workspace", "foreground_threads"], "._workspace"),
    **dict.fromkeys(["DatasetReport", "inspect_dataset"], "._inspect"),
    "missing_assets": "._assets",
})
