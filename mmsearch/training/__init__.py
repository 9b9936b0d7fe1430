"""The shared training engine: the loop, its callbacks, metrics and per-epoch history."""

from mmsearch._lazy import lazy_exports

__all__ = ["Batches", "Callback", "EarlyStopping", "EpochLog", "EpochProgress", "EPOCH_METRICS", "FINAL_ONLY_METRICS", "FitResult",
           "FitState", "LoaderBatches", "RestoreBest", "TensorBatches", "fit", "history_columns", "predict",
           "seed_everything", "always_label1_f1", "most_frequent_label_f1", "macro_f1", "micro_f1", "samples_f1",
           "scores", "tune_thresholds", "validation_scores"]
__getattr__, __dir__ = lazy_exports(__name__, {
    **dict.fromkeys(["Batches", "EarlyStopping", "FitResult", "LoaderBatches", "RestoreBest",
                     "TensorBatches", "fit", "predict", "seed_everything"], "._engine"),
    **dict.fromkeys(["Callback", "EpochLog", "EpochProgress", "EPOCH_METRICS", "FINAL_ONLY_METRICS", "FitState", "history_columns"],
                    "._history"),
    **dict.fromkeys(["always_label1_f1", "most_frequent_label_f1", "macro_f1", "micro_f1", "samples_f1", "scores",
                     "tune_thresholds", "validation_scores"], "._metrics"),
})
