"""The estimators page's computation and figure: how close each estimator of the maps' SHAP values
gets to them for its number of tail evaluations (:func:`camlib.estimators.compare_estimators`).

:func:`estimator_comparison` returns plain numpy arrays and dicts, computed once per key by the
compute service (:mod:`appkit.service`, its slow lane) for every session;
:func:`estimators_figure` draws them (plotly: curves with a band across seeds, points, a log axis
read in decades 1, 10, 100, 1k, ...); :func:`reading` puts the result in plain words;
:func:`snapshot_budget` picks the budget whose maps the page shows.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from appkit.compute import BATCH_SIZE, _result
from appkit.format import finite
from appkit.models import get_model
import camlib
from camlib import estimators

#: Choices of the reference's orderings (SHAP-CAM_|Π|) offered by the page.
REFERENCE_CHOICES = (100, 200, 500, 1000, 2000)
#: The largest budget of the coalition estimators on the page, in orderings: each of their budgets is
#: a run of its own and each coalition a tail evaluation (no prefix shortcut), so they stop earlier.
SAMPLED_ORDERINGS = 10
#: One colour per sampling estimator (in the order of camlib.estimators.sampling_methods()), then
#: one per point.
CURVE_COLORS = ("#e8593c", "#2a9d8f", "#7b4fd6", "#e9a23b", "#3d7bd9", "#8c564b")
POINT_COLORS = ("#f59f00", "#3d7bd9", "#2f9e44", "#e8590c", "#e64980", "#845ef7", "#868e96")  # light and dark themes
POINT_SYMBOLS = ("diamond", "circle", "square", "triangle-up", "star", "triangle-down", "cross")
#: The y axis shows the cosine on a scale of "nines": y = 1 - cos on a reversed log axis, so that
#: 0.9, 0.99, 0.999 are equally spaced (cosines near 1 are where the estimators differ). 1 - cos is
#: floored at this value (a cosine of 1 to float precision).
DISTANCE_FLOOR = 1e-6
NINES = ((2.0, "−1"), (1.0, "0"), (0.5, "0.5"), (0.1, "0.9"), (0.01, "0.99"), (1e-3, "0.999"), (1e-4, "0.9999"),
         (1e-5, "0.99999"), (1e-6, "1"))


def estimator_comparison(model_name: str, image_key: str, _image, layer: str, target: int, orderings: int,
                         seeds: int, reference_permutations: int, _progress=None,
                         question: str | None = None) -> dict:
    """:func:`camlib.estimators.compare_estimators` for the page, as plain data.

    Keys: ``layer``, ``target``, ``n_maps``, ``linear_tail``, ``reference`` (K,),
    ``reference_permutations``, ``reference_evaluations``, ``reference_seconds``, ``curves``
    {key: {title, cost ("orderings" or "samples"), evaluations (n,), cosine (S, n), seconds (S, n),
    estimates (S, n, K)}}, ``points`` {key: {title, evaluations, cosine, seconds}}, ``skipped``
    {key: message}. Every number finite.
    """
    from appkit.service import Lane, service

    key = ("estimators", model_name, image_key, layer, int(target), int(orderings), int(seeds),
           int(reference_permutations), question)
    job = service().submit(key, lambda progress: _comparison(model_name, _image, layer, target, orderings, seeds,
                                                             reference_permutations, progress, question),
                           label=f"estimators · {layer}", lane=Lane.SLOW)
    return _result(job, _progress)


def _comparison(model_name, image, layer, target, orderings, seeds, reference_permutations, progress,
                question) -> dict:
    from camlib.images import to_tensor01

    model = get_model(model_name)
    x = to_tensor01(image, model.input_size)
    inputs = {} if question is None else {"question": question}
    result = estimators.compare_estimators(model, x, layer, int(target), orderings=int(orderings), seeds=int(seeds),
                                           reference_permutations=int(reference_permutations),
                                           sampled_orderings=min(int(orderings), SAMPLED_ORDERINGS),
                                           batch_size=BATCH_SIZE, progress=progress, **inputs)
    methods = camlib.methods.METHODS
    return {
        "layer": result.layer, "target": result.target, "n_maps": result.n_maps, "linear_tail": result.linear_tail,
        "reference": finite(result.reference.numpy()), "reference_permutations": result.reference_permutations,
        "reference_evaluations": result.reference_evaluations, "reference_seconds": result.reference_seconds,
        "curves": {key: {"title": c.title,
                         "cost": "orderings" if methods[key].cost is camlib.methods.Cost.PER_ORDERING else "samples",
                         "evaluations": finite(c.evaluations.numpy()), "cosine": finite(c.cosine.numpy()),
                         "seconds": finite(c.seconds.numpy()), "estimates": finite(c.estimates.numpy())}
                   for key, c in result.curves.items()},
        "points": {key: {"title": p.title, "evaluations": int(p.evaluations), "cosine": float(finite(p.cosine)),
                         "seconds": float(finite(p.seconds))} for key, p in result.points.items()},
        "skipped": dict(result.skipped),
    }


def decade_ticks(largest: float) -> tuple[list[float], list[str]]:
    """Tick positions and labels of a log axis from 1 to ``largest``: 1, 10, 100, 1k, 10k, 100k, 1M, ...
    (at least 1 and 10; a decade above ``largest`` only when it is the second one)."""
    top = max(1, math.floor(math.log10(max(float(largest), 1.0)) + 1e-9))
    values = [10.0 ** e for e in range(top + 1)]
    names = {0: "", 3: "k", 6: "M", 9: "G"}
    labels = [f"{10 ** (e % 3)}{names[e - e % 3]}" for e in range(top + 1)]
    return values, labels


def distance(cosine) -> np.ndarray:
    """1 - cos, floored at :data:`DISTANCE_FLOOR`: the figure's y coordinate of a cosine."""
    return np.maximum(1.0 - np.asarray(cosine, dtype=np.float64), DISTANCE_FLOOR)


def _band(x: np.ndarray, low: np.ndarray, high: np.ndarray, color: str, name: str) -> go.Scatter:
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return go.Scatter(x=np.concatenate([x, x[::-1]]), y=np.concatenate([high, low[::-1]]), fill="toself",
                      fillcolor=f"rgba({r},{g},{b},0.18)", line={"width": 0}, hoverinfo="skip", showlegend=False,
                      legendgroup=name, name=f"{name} (range over seeds)")


def estimators_figure(result: dict) -> go.Figure:
    """Cosine to the reference against tail evaluations (log axis): per sampling estimator the mean
    over seeds with the band of their range (min to max), per fixed-cost method a marker; hover:
    method, evaluations, cosine, seconds. Names are in the legend (nothing printed on the plot). The
    cosine axis is in "nines" (:data:`NINES`): 0, 0.9, 0.99, 0.999 equally spaced."""
    fig = go.Figure()
    largest, closest = 1.0, 1.0
    for i, (key, curve) in enumerate(result["curves"].items()):
        color = CURVE_COLORS[i % len(CURVE_COLORS)]
        x = np.asarray(curve["evaluations"], dtype=np.float64)
        cos, sec = np.asarray(curve["cosine"]), np.asarray(curve["seconds"])
        largest = max(largest, float(x.max()))
        seeds = cos.shape[0]
        closest = min(closest, float(distance(cos).min()))
        if seeds > 1:
            fig.add_trace(_band(x, distance(cos.min(0)), distance(cos.max(0)), color, curve["title"]))
        budget = np.arange(1, len(x) + 1) if curve["cost"] == "orderings" else x
        fig.add_trace(go.Scatter(
            x=x, y=distance(cos.mean(0)), mode="lines" if len(x) > 12 else "lines+markers", name=curve["title"],
            legendgroup=curve["title"], line={"color": color, "width": 2.5 if key == "shapcam" else 2},
            customdata=np.stack([budget, sec.mean(0), cos.min(0), cos.max(0), cos.mean(0)], axis=1),
            hovertemplate=(f"<b>{curve['title']}</b><br>"
                           + ("%{customdata[0]:.0f} orderings = " if curve["cost"] == "orderings" else "")
                           + "%{x:,.0f} tail evaluations<br>cos = %{customdata[4]:.4f}"
                           + (f" (range over {seeds} seeds %{{customdata[2]:.4f}} to %{{customdata[3]:.4f}})"
                              if seeds > 1 else "")
                           + "<br>%{customdata[1]:.2f} s<extra></extra>")))
    for i, (key, point) in enumerate(result["points"].items()):
        largest = max(largest, float(point["evaluations"]))
        closest = min(closest, float(distance(point["cosine"])))
        fig.add_trace(go.Scatter(
            x=[point["evaluations"]], y=[float(distance(point["cosine"]))], mode="markers", name=point["title"],
            marker={"color": POINT_COLORS[i % len(POINT_COLORS)], "size": 11,
                    "symbol": POINT_SYMBOLS[i % len(POINT_SYMBOLS)], "line": {"width": 1, "color": "white"}},
            customdata=[[point["seconds"], point["cosine"]]],
            hovertemplate=(f"<b>{point['title']}</b><br>%{{x:,.0f}} tail evaluation"
                           + ("s" if point["evaluations"] != 1 else "")
                           + "<br>cos = %{customdata[1]:.4f}<br>%{customdata[0]:.3f} s<extra></extra>")))
    ticks, labels = decade_ticks(largest)
    minor = [m * t for t in ticks for m in (2, 5) if m * t <= largest * 1.4]
    reference = f"SHAP-CAM with {result['reference_permutations']:,} orderings"
    nines = [(v, t) for v, t in NINES if v >= closest / 3 or v == 1.0]
    fig.update_layout(
        height=480, margin={"l": 70, "r": 10, "t": 30, "b": 10}, hovermode="closest",
        xaxis={"title": "tail evaluations per image (log scale)", "type": "log", "tickmode": "array",
               "tickvals": ticks, "ticktext": labels, "range": [-0.15, math.log10(max(largest, 10.0)) + 0.15],
               "showgrid": True, "minor": {"tickmode": "array", "tickvals": minor, "ticks": "outside", "ticklen": 4,
                                           "showgrid": True, "gridcolor": "rgba(128,128,128,0.12)"}},
        yaxis={"title": f"cosine similarity to {reference}", "type": "log", "autorange": "reversed",
               "tickmode": "array", "tickvals": [v for v, _ in nines], "ticktext": [t for _, t in nines],
               "automargin": True},
        legend={"orientation": "h", "y": -0.2})
    return fig


def _fmt_count(value: float) -> str:
    return f"{value:,.0f}"


def reading(result: dict, target_name: str) -> str:
    """The figure in plain words, for a classroom (one paragraph, numbers from ``result``)."""
    n, layer = result["n_maps"], result["layer"]
    if result["linear_tail"]:
        return (f"After layer **{layer}** the network is linear (for example average pooling and a fully connected layer), "
                f"so the contribution of each of the {n} maps does not depend on which other maps are there: "
                "every ordering estimator is exact, one ordering is as good as a thousand, and LIFT-CAM equals the "
                "SHAP values. The coalition estimators still need about as many coalitions as there are maps to pin "
                "the coefficients down (and LIME-CAM's penalty shrinks them). Pick an inner layer to see the "
                "estimators differ.")
    curves, points = result["curves"], result["points"]
    text = (f"Each coloured line is a way of *estimating* how much each of the {n} activation maps of layer "
            f"**{layer}** adds to the score of “{target_name}”, by switching maps off and re-running the rest of "
            "the network (a *tail evaluation*). To the right, more evaluations; upwards, closer to the "
            f"reference (1 = the same answer, SHAP-CAM with {result['reference_permutations']:,} orderings); "
            "the shaded band is how much the result depends on luck (random seeds).")
    plain = curves.get("shapcam")
    if plain is not None:
        goal = float(np.asarray(plain["cosine"]).mean(0)[-1])
        spent = float(np.asarray(plain["evaluations"])[-1])
        faster = []
        for key, curve in curves.items():
            if key == "shapcam":
                continue
            needed = estimators.budget_to_reach(curve["evaluations"], np.asarray(curve["cosine"]).mean(0), goal)
            if needed is not None and needed < spent:
                faster.append((spent / needed, curve["title"], needed))
        text += (f" Plain SHAP-CAM (random orderings) reaches {goal:.3f} after {_fmt_count(spent)} evaluations")
        if faster:
            best = max(faster)
            text += (f"; {best[1]} gets as close with {_fmt_count(best[2])}, {best[0]:.1f}× fewer, because it "
                     "chooses its orderings so that their errors cancel instead of adding up.")
        else:
            text += "."
    lift = points.get("liftcam")
    if lift is not None:
        text += f" LIFT-CAM needs a single pass and scores {lift['cosine']:.3f}"
        if plain is not None:
            needed = estimators.budget_to_reach(plain["evaluations"], np.asarray(plain["cosine"]).mean(0),
                                                lift["cosine"])
            text += (f": plain SHAP-CAM needs about {_fmt_count(needed)} evaluations to do as well." if needed
                     else f", better than plain SHAP-CAM with all its {_fmt_count(plain['evaluations'][-1])} "
                          "evaluations.")
        else:
            text += "."
    weak = [p for key, p in points.items() if key != "liftcam" and p["evaluations"] == 1 and p["cosine"] < 0.8]
    if weak:
        names = ", ".join(p["title"] for p in weak)
        text += (f" {names} also cost one pass but land far lower: the gradient alone does not say how much "
                 "a whole map adds.")
    return text


def snapshot_budget(result: dict, preferred: int = 10) -> int:
    """The budget (in orderings) whose maps the page shows: ``preferred``, or the largest if smaller."""
    curves = [c for c in result["curves"].values() if c["cost"] == "orderings"]
    largest = min((len(c["evaluations"]) for c in curves), default=1)
    return max(1, min(int(preferred), largest))
