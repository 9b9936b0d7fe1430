"""Thin plotly drawers over the chart data, and a self-contained HTML report writer."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots


def curves_figure(curves: Sequence[Mapping[str, Any]], title: str = "Validation F1 per epoch") -> go.Figure:
    fig = go.Figure()
    for c in curves:
        fig.add_trace(go.Scatter(x=c["epochs"], y=c["f1"], mode="lines", name=c["label"],
                                 line={"dash": "dot" if c["state"] == "PRUNED" else "solid"}))
    fig.update_layout(title=title, xaxis_title="epoch", yaxis_title="validation samples-F1")
    return fig


def ablation_figure(bars: Sequence[Mapping[str, Any]], factor: str) -> go.Figure:
    fig = go.Figure(go.Bar(
        x=[b["level"] for b in bars],
        y=[0 if math.isnan(b["mean"]) else b["mean"] for b in bars],
        error_y={"type": "data", "array": [b["std"] for b in bars]},
        marker_color=["#d62728" if b["is_base"] else "#1f77b4" for b in bars],
        text=[f"n={b['n']}" + (f", {b['failed']} failed" if b["failed"] else "") for b in bars],
    ))
    fig.update_layout(title=f"Ablation of {factor} (mean ± std over repeats; red = base configuration)",
                      xaxis_title=factor, yaxis_title="validation samples-F1", xaxis_type="category")
    return fig


def bubble_figure(points: Sequence[Mapping[str, Any]]) -> go.Figure:
    largest = max((p["params"] for p in points), default=1) or 1
    fig = go.Figure(go.Scatter(
        x=[p["size_mb"] for p in points], y=[p["f1"] for p in points], mode="markers+text",
        text=[p["level"] for p in points], textposition="top center",
        marker={"size": [p["params"] for p in points], "sizemode": "area", "sizeref": 2.0 * largest / 60**2},
    ))
    fig.update_layout(title="Model size vs F1 (bubble area = parameters)", xaxis_title="size (MB)",
                      yaxis_title="validation samples-F1")
    return fig


def length_figure(data: Mapping[str, Any]) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Caption length histogram", "Box plot"))
    hist = data["histogram"]
    fig.add_trace(go.Bar(x=list(hist), y=list(hist.values()), name="captions"), row=1, col=1)
    box = data["box"]
    fig.add_trace(go.Box(q1=[box["q1"]], median=[box["median"]], q3=[box["q3"]], lowerfence=[box["min"]],
                         upperfence=[box["max"]], mean=[box["mean"]], name="words"), row=1, col=2)
    fig.update_layout(title="Words per caption after preprocessing", showlegend=False)
    return fig


def oov_figure(rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    fig = go.Figure(go.Bar(x=[r["corpus"] for r in rows], y=[r["oov_words"] if r["available"] else 0 for r in rows],
                           text=[str(r["oov_words"]) if r["available"] else "unavailable" for r in rows]))
    fig.update_layout(title="Words without embeddings per corpus", yaxis_title="out-of-vocabulary words")
    return fig


def history_figure(data: Mapping[str, list[float]], title: str) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "validation F1"))
    fig.add_trace(go.Scatter(x=data["epoch"], y=data["train_loss"], name="train loss"), row=1, col=1)
    fig.add_trace(go.Scatter(x=data["epoch"], y=data["val_loss"], name="val loss"), row=1, col=1)
    fig.add_trace(go.Scatter(x=data["epoch"], y=data["val_f1"], name="val F1"), row=1, col=2)
    fig.update_layout(title=title)
    return fig


def report_html(title: str, figures: Sequence[tuple[str, go.Figure]]) -> str:
    """One self-contained page: plotly.js is embedded once, so it renders offline."""
    parts = [f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for i, (name, fig) in enumerate(figures):
        parts.append(f"<h2>{html.escape(name)}</h2>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
    parts.append("</body></html>")
    return "\n".join(parts)
