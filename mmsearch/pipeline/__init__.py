"""The paper's pipeline: a workspace per resolved experiment, one registered Stage per network
(image, text, fusion) with its caches, and tracked training runs."""

from mmsearch._lazy import lazy_exports

__all__ = ["STAGES", "DatasetReport", "ImageRows", "Stage", "StageResult", "TrainOutcome", "Workspace", "eval_image_batches",
           "run_stage", "stage_features", "stage_key", "train_experiment", "inspect_dataset", "uses_backbone_cache"]
__getattr__, __dir__ = lazy_exports(__name__, {
    **dict.fromkeys(["STAGES", "ImageRows", "Stage", "StageResult", "eval_image_batches", "run_stage",
                     "stage_features", "stage_key", "uses_backbone_cache"], "._stages"),
    **dict.fromkeys(["TrainOutcome", "train_experiment"], "._train"),
    "Workspace": "._workspace",
    **dict.fromkeys(["DatasetReport", "inspect_dataset"], "._inspect"),
})
