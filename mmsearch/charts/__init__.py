"""Charts: pure data functions (with their statistics) and thin plotly drawers."""

from mmsearch.charts._data import bubble_data, curves_data, length_data, oov_data
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
    "bubble_data", "curves_data", "length_data", "oov_data", "ablation_figure", "bubble_figure", "curves_figure",
    "history_figure", "length_figure", "oov_figure", "page_html", "report_html",
]
