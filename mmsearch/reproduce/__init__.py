"""The whole paper in one command: a costed plan, one schedule across sweeps, the measured final model."""

from mmsearch._lazy import lazy_exports

__all__ = ["FactorDecision", "FinalComparison", "FinalModel", "Plan", "ReproduceOutcome", "ReproduceRequest",
           "SweepPlan", "decide", "make_plan", "reproduce_paper", "select"]
__getattr__, __dir__ = lazy_exports(__name__, {
    **dict.fromkeys(["FactorDecision", "FinalComparison", "FinalModel", "decide"], "._final"),
    **dict.fromkeys(["Plan", "SweepPlan"], "._plan"),
    **dict.fromkeys(["ReproduceOutcome", "ReproduceRequest", "make_plan", "reproduce_paper", "select"], "._run"),
})
