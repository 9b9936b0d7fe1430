"""Charts: pure data functions (with their statistics) and thin plotly drawers."""

from mmsearch.charts._data import (
    DEGENERATE_MARGIN,
    TrialRecord,
    ablation_bars_data,
    best_level,
    bubble_data,
    curves_data,
    length_data,
    mean_ci,
    oov_data,
    ranked_levels,
    verdict,
    welch_diff,
)
from mmsearch.charts._plot import (
    ablation_figure,
    bubble_figure,
    curves_figure,
    history_figure,
    length_figure,
    oov_figure,
    page_html,
    report_html,
)

__all__ = [
    "DEGENERATE_MARGIN", "TrialRecord", "ablation_bars_data", "best_level", "bubble_data", "curves_data", "length_data",
    "mean_ci", "oov_data", "ranked_levels", "verdict", "welch_diff", "ablation_figure", "bubble_figure", "curves_figure",
    "history_figure", "length_figure", "oov_figure", "page_html", "report_html",
]
