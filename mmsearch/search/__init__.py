"""Named sweeps: sweep files, Optuna studies, coordinators, workers and their MLflow runs."""

from mmsearch._lazy import lazy_exports

__all__ = ["StudyPlace", "Runner", "assign_workers", "begin_run", "decode_images", "Coordinator", "UpstreamFailed", "WorkerDiskFull",
           "ready_context", "warm_workers", "worker_threads", "DEFAULT_GRACE_S", "DEFAULT_HEARTBEAT_S", "Heartbeat", "level_cells", "CHARTS", "METRICS", "PRUNERS", "SAMPLERS", "SWEEPS_DIR", "Dimension", "Level", "STORAGE_KINDS",
           "StorageError", "StudyStorage", "SweepContext", "SweepInterrupted", "SweepRequest", "SweepSpec", "looks_of",
           "SweepStudy", "SweepSummary", "available_sweeps", "default_storage", "find_study", "load_sweep",
           "open_storage", "open_study", "power_statement", "records", "resolve", "run_sweep", "selecting_flags", "summarize",
           "sweep_charts", "sweep_oov", "sweep_status", "versus_base"]
__getattr__, __dir__ = lazy_exports(__name__, {
    **dict.fromkeys(["CHARTS", "METRICS", "PRUNERS", "SAMPLERS", "SWEEPS_DIR", "Dimension", "Level", "SweepSpec",
                     "available_sweeps", "load_sweep"], "._spec"),
    **dict.fromkeys(["STORAGE_KINDS", "StorageError", "StudyStorage", "default_storage", "open_storage"], "._storage"),
    **dict.fromkeys(["StudyPlace", "SweepContext", "SweepInterrupted", "SweepRequest", "find_study", "open_study", "resolve",
                     "selecting_flags"], "._context"),
    **dict.fromkeys(["SweepStudy", "looks_of", "sweep_status"], "._study"),
    **dict.fromkeys(["Runner", "assign_workers", "begin_run", "decode_images", "run_sweep"], "._runner"),
    **dict.fromkeys(["Coordinator", "UpstreamFailed", "WorkerDiskFull"], "._coordinator"),
    **dict.fromkeys(["ready_context", "warm_workers", "worker_threads"], "._worker"),
    **dict.fromkeys(["DEFAULT_GRACE_S", "DEFAULT_HEARTBEAT_S", "Heartbeat"], "._liveness"),
    "level_cells": "._summary",
    **dict.fromkeys(["SweepSummary", "power_statement", "records", "summarize", "sweep_charts", "sweep_oov", "versus_base"], "._summary"),
})
