"""The plotly figures: coefficient bars, insertion/deletion curves, top-5 (the estimators page's
figure is in :mod:`appkit.estimators`)."""

from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from appkit.compute import coefficient_table
from appkit.format import fmt_percent


POSITIVE, NEGATIVE = "#e8593c", "#4c8ef5"


#: At most this many category labels under the coefficient bars (every n-th bar is named beyond it).
MAX_BAR_LABELS = 20


def bar_labels(names, limit: int = MAX_BAR_LABELS) -> list:
    """The category labels to show under bars: all up to ``limit``, else every n-th, so that labels
    never overlap (the hover still names every bar)."""
    names = list(names)
    step = max(1, math.ceil(len(names) / limit))
    return names[::step]


def coefficient_figure(coefficients: np.ndarray, top_k: int, title: str = "", selected: int | None = None) -> go.Figure:
    """Bars of the top-``top_k`` maps by |α|, coloured by sign; hover: map index, α, share of Σ|α|.
    ``selected``: the map shown beside the chart, outlined."""
    table = coefficient_table(coefficients)
    top = table.sort_values("rank").head(max(1, int(top_k)))
    colors = [POSITIVE if a >= 0 else NEGATIVE for a in top["alpha"]]
    names = [f"A{m}" for m in top["map"]]
    outline = ["#ffffff" if int(m) == selected else "rgba(0,0,0,0)" for m in top["map"]]
    fig = go.Figure(go.Bar(
        x=names, y=top["alpha"], marker={"color": colors, "line": {"color": outline, "width": 2.5}},
        customdata=np.stack([top["map"], top["alpha"], 100 * top["share"]], axis=1),
        hovertemplate="map A<sub>%{customdata[0]:d}</sub><br>α = %{customdata[1]:.4g}"
                      "<br>%{customdata[2]:.2f}% of Σ|α|<extra></extra>",
    ))
    shown = bar_labels(names)
    fig.update_layout(title=title or None, height=280, margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
                      xaxis={"title": f"top {len(top)} of {len(table)} maps by |α| (red: α > 0, blue: α < 0)",
                             "type": "category", "tickmode": "array", "tickvals": shown, "ticktext": shown,
                             "tickangle": 0 if len(shown) <= 12 else -60},
                      yaxis={"title": "α"}, showlegend=False, clickmode="event+select")
    return fig


def selected_map(event) -> int | None:
    """The map index of the bar picked in a coefficient chart (plotly selection event), if any.

    Reads the bar's category label ("A17"), else the first entry of its customdata (a list, or a dict
    keyed by position as the browser sends it); anything unexpected counts as no selection.
    """
    try:
        points = event.selection.points if hasattr(event, "selection") else event["selection"]["points"]
    except (KeyError, TypeError, AttributeError):
        return None
    for point in points or []:
        try:
            label = str(point.get("x", ""))
            if label.startswith("A") and label[1:].isdigit():
                return int(label[1:])
            data = point.get("customdata")
            if isinstance(data, dict):
                data = [data[key] for key in sorted(data, key=lambda key: int(key))]
            first = float(data[0]) if isinstance(data, (list, tuple)) and data else float("nan")
            if math.isfinite(first):
                return int(first)
        except (TypeError, ValueError, KeyError, AttributeError):
            continue
    return None


def insertion_deletion_figure(result: dict) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=result["deltas"], y=result["ins"], mode="lines+markers", name=f"insertion (AUC {result['ins_auc']:.3f})",
                             line={"color": POSITIVE}, fill="tozeroy", fillcolor="rgba(232,89,60,0.15)"))
    fig.add_trace(go.Scatter(x=result["deltas"], y=result["del"], mode="lines+markers", name=f"deletion (AUC {result['del_auc']:.3f})",
                             line={"color": NEGATIVE}, fill="tozeroy", fillcolor="rgba(76,142,245,0.15)"))
    fig.update_layout(height=360, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      xaxis={"title": "δ: fraction of pixels kept (insertion) / removed (deletion), most salient first"},
                      yaxis={"title": "target probability", "rangemode": "tozero"},
                      legend={"orientation": "h", "y": -0.3})
    return fig


def probability_figure(table: pd.DataFrame) -> go.Figure:
    fig = go.Figure(go.Bar(x=table["probability"][::-1], y=table["class"][::-1], orientation="h",
                           marker={"color": POSITIVE}, text=[fmt_percent(p) for p in table["probability"][::-1]],
                           textposition="auto", hovertemplate="%{y}: %{x:.2%}<extra></extra>"))
    fig.update_layout(height=220, margin={"l": 10, "r": 10, "t": 10, "b": 10}, xaxis={"range": [0, 1], "tickformat": ".0%"})
    return fig


def top5_html(table: pd.DataFrame) -> str:
    """The top-5 predictions as small bars (HTML: lighter than a chart, for the first view)."""
    rows = []
    for name, p in zip(table["class"], table["probability"]):
        width = max(0.0, min(100.0, 100 * float(p))) if np.isfinite(p) else 0.0
        rows.append(
            "<div style='display:flex;align-items:center;gap:.5em;font-size:.85em;line-height:1.3'>"
            f"<span style='flex:0 0 9em;overflow:hidden;text-overflow:ellipsis;white-space:nowrap' title='{html.escape(str(name))}'>"
            f"{html.escape(str(name))}</span>"
            f"<span style='flex:1 1 auto;background:#1b2027;height:.7em'><span style='display:block;height:100%;"
            f"width:{width:.1f}%;background:{POSITIVE}'></span></span>"
            f"<span style='flex:0 0 3.5em;text-align:right'>{fmt_percent(p)}</span></div>")
    return "".join(rows)
