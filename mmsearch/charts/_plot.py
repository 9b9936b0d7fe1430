"""Thin plotly drawers over the chart data, and a self-contained HTML report writer."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from mmsearch.stats import LevelStats

HEIGHT = 420  # a chart fits beside its neighbours on a laptop screen; the report scrolls
PALETTE = qualitative.D3 + qualitative.Set2


def _colours(groups: Sequence[str]) -> dict[str, str]:
    order = list(dict.fromkeys(groups))
    return {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(order)}


def curves_figure(curves: Sequence[Mapping[str, Any]], title: str, y_title: str) -> go.Figure:
    """Per-epoch curves, one colour per level (repeats share it; pruned trials dotted)."""
    colours = _colours([c["group"] for c in curves])
    fig, shown = go.Figure(), set()
    for c in curves:
        fig.add_trace(go.Scatter(
            x=c["epochs"], y=c["values"], mode="lines", name=c["label"], legendgroup=c["group"],
            showlegend=c["group"] not in shown, line={"color": colours[c["group"]],
                                                      "dash": "dot" if c["state"] == "PRUNED" else "solid"},
            hovertemplate=f"{html.escape(c['label'])} (trial {c['trial']}"
                          + (f", repeat {c['repeat']}" if c["repeat"] is not None else "")
                          + ")<br>epoch %{x}: %{y:.4f}<extra></extra>"))
        shown.add(c["group"])
    fig.update_layout(title=title, xaxis_title="epoch", yaxis_title=y_title, height=HEIGHT, legend_title_text="level")
    return fig


def ablation_figure(levels: Sequence[LevelStats], factor: str, metric: str = "validation samples-F1") -> go.Figure:
    """Mean per level with its 95% CI, on an axis zoomed to the data; base and best marked, each
    level's verdict against the base in its label."""
    shown = [s for s in levels if s.n > 0]
    x = [str(s.level) for s in levels]
    y = [None if math.isnan(s.mean) else s.mean for s in levels]
    up = [0 if math.isnan(s.ci_high) else s.ci_high - s.mean for s in levels]
    down = [0 if math.isnan(s.ci_low) else s.mean - s.ci_low for s in levels]
    colours = ["#d62728" if s.is_base else "#1f77b4" for s in levels]
    text = [("★ " if s.is_best else "") + ("base " if s.is_base else "" if s.comparison is None else f"{s.vs_base} ")
            + (f"n={s.n}" + (f", {s.failed} failed" if s.failed else "")) for s in levels]
    fig = go.Figure(go.Scatter(
        x=x, y=y, mode="markers+text", text=text, textposition="top center",
        marker={"size": [16 if s.is_best else 11 for s in levels], "color": colours,
                "symbol": ["star" if s.is_best else "circle" for s in levels]},
        error_y={"type": "data", "symmetric": False, "array": up, "arrayminus": down, "thickness": 1.5, "width": 6},
        hovertext=[f"{factor}={s.level}: mean {s.mean:.4f} (95% CI {s.ci_low:.4f}..{s.ci_high:.4f}), vs base: "
                   + (s.comparison.describe() if s.comparison is not None else s.vs_base) for s in levels],
        hoverinfo="text", showlegend=False))
    lows = [s.ci_low if not math.isnan(s.ci_low) else s.mean for s in shown]
    highs = [s.ci_high if not math.isnan(s.ci_high) else s.mean for s in shown]
    if shown:
        pad = max(0.002, 0.15 * (max(highs) - min(lows)))
        fig.update_yaxes(range=[min(lows) - pad, max(highs) + 2 * pad])
    fig.update_layout(title=f"{factor}: mean {metric} per level, 95% CI over repeats (red = base, ★ = best mean); "
                            "labels: verdict vs base", xaxis_title=factor, yaxis_title=metric, xaxis_type="category",
                      height=HEIGHT)
    return fig


def bubble_figure(points: Sequence[Mapping[str, Any]]) -> go.Figure:
    largest = max((p["params"] for p in points), default=1) or 1
    fig = go.Figure(go.Scatter(
        x=[p["size_mb"] for p in points], y=[p["f1"] for p in points], mode="markers+text",
        text=[p["level"] for p in points], textposition="top center",
        marker={"size": [p["params"] for p in points], "sizemode": "area", "sizeref": 2.0 * largest / 60**2},
    ))
    fig.update_layout(title="Model size vs F1 (bubble area = parameters)", xaxis_title="size (MB)",
                      yaxis_title="validation samples-F1", height=HEIGHT)
    return fig


def length_figure(data: Mapping[str, Any]) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Caption length histogram", "Box plot"))
    hist = data["histogram"]
    fig.add_trace(go.Bar(x=list(hist), y=list(hist.values()), name="captions"), row=1, col=1)
    box = data["box"]
    fig.add_trace(go.Box(q1=[box["q1"]], median=[box["median"]], q3=[box["q3"]], lowerfence=[box["min"]],
                         upperfence=[box["max"]], mean=[box["mean"]], name="words"), row=1, col=2)
    fig.update_layout(title="Words per caption after preprocessing", showlegend=False, height=HEIGHT)
    return fig


def oov_figure(rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    fig = go.Figure(go.Bar(x=[r["corpus"] for r in rows], y=[r["oov_words"] if r["available"] else 0 for r in rows],
                           text=[str(r["oov_words"]) if r["available"] else "unavailable" for r in rows]))
    fig.update_layout(title="Words without embeddings per corpus", yaxis_title="out-of-vocabulary words", height=HEIGHT)
    return fig


def history_figure(data: Mapping[str, list[float]], title: str) -> go.Figure:
    """One run's train and validation loss and F1 per epoch (the paper's Figs 19-21)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "samples-F1"))
    for key, name, col, dash in (("train_loss", "train loss", 1, "dot"), ("val_loss", "validation loss", 1, "solid"),
                                 ("train_f1", "train F1", 2, "dot"), ("val_f1", "validation F1", 2, "solid")):
        if data.get(key):
            fig.add_trace(go.Scatter(x=data["epoch"], y=data[key], name=name, line={"dash": dash}), row=1, col=col)
    fig.update_layout(title=title, height=HEIGHT)
    return fig


def report_html(title: str, figures: Sequence[tuple[str, go.Figure]], intro: str = "") -> str:
    """One self-contained page of charts: plotly.js is embedded once, so it renders offline."""
    return page_html(title, [("", intro, None)] + [(name, "", fig) for name, fig in figures])


def page_html(title: str, blocks: Sequence[tuple[str, str, go.Figure | None]]) -> str:
    """A self-contained page of (heading, HTML, chart or None) blocks, plotly.js embedded once."""
    parts = [f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}td,th{text-align:left}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    embedded = False
    for heading, text, fig in blocks:
        if heading:
            parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(text)
        if fig is not None:
            parts.append(fig.to_html(full_html=False, include_plotlyjs=not embedded, default_height=f"{HEIGHT}px"))
            embedded = True
    parts.append("</body></html>")
    return "\n".join(parts)
