"""Statistics of an ablation: per-level results, paired differences on matched seeds, one
error rate per family of comparisons, a margin of practical equivalence and four verdicts
(better, worse, equivalent, inconclusive); the power a sweep has before it runs."""

from mmsearch.stats._differences import NONE, PAIRED, WELCH, Difference, difference, mean_ci
from mmsearch.stats._levels import (
    DEGENERATE_MARGIN,
    LevelStats,
    SweepLevels,
    TrialRecord,
    best_level,
    judge_across,
    level_stats,
    level_values,
    next_round,
    pooled_spread,
    ranked_levels,
)
from mmsearch.stats._verdicts import (
    ALPHA,
    DEFAULT_MARGIN,
    POWER,
    PRIOR_PAIR_SD,
    Comparison,
    Design,
    Looks,
    Verdict,
    comparisons_level,
    detectable_difference,
    judge,
    margin_for,
    repeats_to_decide,
    verdict_of,
)

__all__ = [
    "ALPHA", "DEFAULT_MARGIN", "DEGENERATE_MARGIN", "NONE", "PAIRED", "POWER", "PRIOR_PAIR_SD", "WELCH", "Comparison", "Design", "Difference",
    "LevelStats", "Looks", "SweepLevels", "TrialRecord", "Verdict", "best_level", "comparisons_level", "detectable_difference", "difference",
    "judge", "judge_across", "level_stats", "level_values", "margin_for", "next_round", "mean_ci", "pooled_spread", "ranked_levels",
    "repeats_to_decide", "verdict_of",
]
