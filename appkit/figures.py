"""The plotly figures: coefficient bars, convergence, insertion/deletion curves, top-5."""

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


def log_ticks(maximum: int) -> list[int]:
    """Ticks of a log axis from 1 to ``maximum``: 1, 2, 5, 10, 20, 50, ... (and the maximum)."""
    ticks, decade = [], 1
    while decade <= maximum:
        ticks += [t for t in (decade, 2 * decade, 5 * decade) if t <= maximum]
        decade *= 10
    if ticks[-1] != maximum and maximum / ticks[-1] >= 1.5:
        ticks.append(int(maximum))
    return ticks


def convergence_figure(result: dict, reference: str, lines: dict[str, float]) -> go.Figure:
    """Cosine similarity of SHAP-CAM_|Π| to ``reference`` ("lift" or "pooled") against |Π|: the mean
    over seeds with a ±1 std band, and a dashed level for each other method, named in the legend
    (labels in the legend never overprint each other). A log axis has ticks 1, 2, 5, 10, ..."""
    curves = result["cos_lift"] if reference == "lift" else result["cos_pooled"]
    perms = result["perms"]
    mean, std = curves.mean(0), curves.std(0)
    seeds = curves.shape[0]
    name = "LIFT-CAM" if reference == "lift" else f"SHAP-CAM pooled ({seeds}×{perms[-1]} orderings)"
    fig = go.Figure()
    if seeds > 1:
        fig.add_trace(go.Scatter(x=np.concatenate([perms, perms[::-1]]), y=np.concatenate([mean + std, (mean - std)[::-1]]),
                                 fill="toself", fillcolor="rgba(232,89,60,0.25)", line={"width": 0},
                                 hoverinfo="skip", name=f"± 1 std over {seeds} seeds"))
    fig.add_trace(go.Scatter(x=perms, y=mean, mode="lines", line={"color": POSITIVE, "width": 2},
                             name=f"SHAP-CAM<sub>|Π|</sub> (mean of {seeds} seed{'s' if seeds > 1 else ''})",
                             hovertemplate="|Π| = %{x}<br>cos = %{y:.4f}<extra></extra>"))
    palette = ["#7fc97f", "#beaed4", "#fdc086", "#ffff99", "#4c8ef5", "#f0027f"]
    ends = [float(perms[0]), float(perms[-1])]
    for i, (label, value) in enumerate(lines.items()):
        fig.add_trace(go.Scatter(x=ends, y=[value, value], mode="lines", name=f"{label}: {value:.3f}",
                                 line={"dash": "dash", "color": palette[i % len(palette)], "width": 1.5},
                                 hovertemplate=f"{label}: {value:.4f}<extra></extra>"))
    log = perms[-1] >= 20
    xaxis = {"title": "number of orderings |Π|", "type": "log" if log else "linear"}
    if log:
        ticks = log_ticks(int(perms[-1]))
        xaxis |= {"tickmode": "array", "tickvals": ticks, "ticktext": [f"{t:,}" for t in ticks]}
    fig.update_layout(height=420, margin={"l": 10, "r": 10, "t": 30, "b": 10}, xaxis=xaxis,
                      yaxis={"title": f"cosine similarity to {name}"},
                      legend={"orientation": "h", "y": -0.25})
    return fig


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
