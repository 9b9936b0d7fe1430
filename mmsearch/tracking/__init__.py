"""MLflow tracking with explicit run ids: runs that always end, per-epoch metrics, artifacts."""

from mmsearch._lazy import lazy_exports

__all__ = ["DEFAULT_DIR", "DEFAULT_END_STATES", "OWNER_TAG", "end_abandoned_exports", "PARENT_TAG", "MlflowEpochLogger", "Tracker", "TrackingError", "check_store",
           "default_tracking_uri", "resolve_tracking_uri", "serve_ui", "ui_link"]
__getattr__, __dir__ = lazy_exports(__name__, {
    **dict.fromkeys(["DEFAULT_DIR", "DEFAULT_END_STATES", "PARENT_TAG", "Tracker", "TrackingError", "check_store",
                     "default_tracking_uri", "resolve_tracking_uri", "ui_link"], "._tracker"),
    "MlflowEpochLogger": "._callbacks",
    **dict.fromkeys(["OWNER_TAG", "end_abandoned_exports"], "._abandoned"),
    "serve_ui": "._ui",
})
