"""Named sweeps: sweep files, Optuna studies, workers and their MLflow runs."""

from mmsearch.search._runner import (
    SweepContext, SweepRequest, SweepSummary, execute_trial, resolve, run_sweep, sweep_charts, sweep_status,
    trial_records, work,
)
from mmsearch.search._spec import (
    PRUNERS, SAMPLERS, SWEEPS_DIR, Dimension, Level, SweepSpec, available_sweeps, load_sweep,
)
from mmsearch.search._storage import default_storage, open_storage, study_lock

__all__ = [
    "SweepContext", "SweepRequest", "SweepSummary", "execute_trial", "resolve", "run_sweep", "sweep_charts",
    "sweep_status", "trial_records", "work", "PRUNERS", "SAMPLERS", "SWEEPS_DIR", "Dimension", "Level", "SweepSpec",
    "available_sweeps", "load_sweep", "default_storage", "open_storage", "study_lock",
]
