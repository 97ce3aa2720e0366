"""Page plumbing: the entry point, the shared selection, progress bars, the heatmap grid.

Progress bars: the slow methods report a fraction done through ``progress=``. A cached function
must not touch Streamlit elements created outside it (``st.cache_data`` records element calls made
during the function to replay them on a cache hit, and an outside element cannot be replayed), so
:func:`progress_bar` returns a callback that updates the bar *outside* the cache's recording context.
"""

from __future__ import annotations

import contextvars
import math
from typing import Callable, Sequence

import streamlit as st

import camlib

#: The methods shown by default (camlib's default set: single pass) and those that evaluate the
#: network or its tail once per map or per ordering (a progress bar; they run last).
DEFAULT_METHODS: tuple[str, ...] = tuple(camlib.default_methods())
SLOW_METHODS = frozenset(k for k, m in camlib.methods.METHODS.items() if m.cost is not camlib.methods.Cost.ONE_PASS)
#: Session-state flag set by app.py on every run (see :func:`run_from_entrypoint`).
ENTRYPOINT_SEEN = "_entrypoint_seen"


def method_title(key: str) -> str:
    return camlib.get_method(key).title


def ordered_for_compute(methods: Sequence[str]) -> list[str]:
    """Fast methods first, slow ones last, so that most maps appear within seconds."""
    return sorted(methods, key=lambda m: m in SLOW_METHODS)


def progress_bar(container, label: str) -> Callable[[float], None]:
    """A ``progress=`` callback drawing ``label`` and a bar in ``container``.

    The callback runs the element update in the context captured here, outside any
    ``st.cache_data`` recording (see the module docstring), and draws at most ~100 updates.
    """
    bar = container.progress(0.0, text=f"{label}: starting…")
    outer = contextvars.copy_context()
    state = {"last": -1}

    def update(fraction: float) -> None:
        fraction = min(max(float(fraction), 0.0), 1.0) if math.isfinite(fraction) else 0.0
        step = int(fraction * 100)
        if step != state["last"]:
            state["last"] = step
            outer.run(bar.progress, fraction, text=f"{label}: {step}%")

    return update


def run_from_entrypoint() -> None:
    """Make sure ``app.py`` runs first; call at the top of every page.

    On a fresh server, a first request for a page's own URL (e.g. ``/Faithfulness``) runs the page file
    without ``app.py``: Streamlit treats a ``pages/`` folder as its legacy multipage app until the first
    ``st.navigation`` call of the process. Then the entry point is run here (it sets the page list and the
    sidebar and runs the requested page itself) and this run of the page stops.
    """
    state = st.session_state
    if state.get(ENTRYPOINT_SEEN) or state.get("_entrypoint_fallback"):
        return
    import pathlib
    import runpy

    state["_entrypoint_fallback"] = True
    try:
        runpy.run_path(str(pathlib.Path(__file__).resolve().parents[1] / "app.py"), run_name="__main__")
    finally:
        state["_entrypoint_fallback"] = False
    st.stop()


def selection() -> dict:
    """The shared choice of image, model, layer and target that ``app.py`` puts in the session state."""
    run_from_entrypoint()
    if "selection" not in st.session_state:
        st.error("This page works on the image chosen on the main page: open *Explain an image* first.")
        st.stop()
    return st.session_state["selection"]


def grid_columns(n: int) -> int:
    """Columns of the heatmap grid: one row up to 4 maps, then rows of 3 (5-6) or 4."""
    return n if n <= 4 else (3 if n <= 6 else 4)


def method_cells(methods: Sequence[str]) -> dict:
    """A grid with one titled, empty cell per method (``grid_columns`` wide): {method: st.empty()}."""
    columns = grid_columns(len(methods))
    cells = {}
    for i, method in enumerate(methods):
        if i % columns == 0:
            row = st.columns(columns)
        with row[i % columns]:
            st.markdown(f"**{method_title(method)}**")
            cells[method] = st.empty()
    return cells


#: The app's upper bound of options whose library bound is far beyond a lesson's patience.
APP_MAXIMUM = {"permutations": 200}


def option_controls(methods: Sequence[str], prefix: str, container=None, initial: dict | None = None) -> dict:
    """Controls for the options of the chosen methods, built from the methods' own metadata
    (name, default, bounds, help): {method: {option: value}}. ``initial``: start values by option
    name for this page (else the method's defaults); widget keys are ``{prefix}_{method}_{option}``."""
    container = st.sidebar if container is None else container
    chosen = {}
    for key in methods:
        method = camlib.get_method(key)
        values = {}
        for option in method.options:
            start = (initial or {}).get(option.name, option.default)
            label = f"{method.title}: {option.help or option.name}"
            widget = f"{prefix}_{key}_{option.name}"
            if option.name in APP_MAXIMUM and isinstance(option.default, int):
                values[option.name] = container.slider(label, int(option.minimum), APP_MAXIMUM[option.name], int(start),
                                                       key=widget, persist_state="session")
            else:
                values[option.name] = container.number_input(label, option.minimum, option.maximum, start,
                                                             format="%g" if isinstance(option.default, float) else None,
                                                             key=widget, persist_state="session")
        if values:
            chosen[key] = values
    return chosen
