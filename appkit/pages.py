"""Page plumbing: the entry point, the shared selection, the method picker, the heatmap grid and the
cells that show a job of the compute service while it waits, runs and finishes.

A page never computes: it submits jobs (:mod:`appkit.compute`) and draws them with
:func:`show_jobs`, which polls the service from the script thread and updates each job's cell: its
place in the queue, a progress bar with the elapsed and expected time, then the result. A rerun or
a page switch interrupts only this loop (Streamlit raises in the script thread at its next element
update); the jobs keep running in the service.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import streamlit as st

import camlib
from camlib.methods import Cost

#: The methods shown by default (camlib's default set: single pass) and those that evaluate the
#: network or its tail once per map, per ordering or per sample (a click, with their cost shown).
DEFAULT_METHODS: tuple[str, ...] = tuple(camlib.default_methods())
SLOW_METHODS = frozenset(k for k, m in camlib.methods.METHODS.items() if m.cost is not Cost.ONE_PASS)
#: Session-state flag set by app.py on every run (see :func:`run_from_entrypoint`).
ENTRYPOINT_SEEN = "_entrypoint_seen"
#: Session-state key of the job keys this session asked to start (slow methods, by a click).
REQUESTED = "_requested_jobs"
#: Seconds between two looks at the running jobs.
POLL = 0.2


def method_title(key: str) -> str:
    return camlib.get_method(key).title


def methods_in_menu() -> list[str]:
    """Every method camlib has, in its order (new methods appear here by themselves)."""
    return camlib.list_methods()


def method_summary(key: str) -> str:
    return camlib.get_method(key).summary


def is_slow(method: str) -> bool:
    return camlib.get_method(method).cost is not Cost.ONE_PASS


def ordered_for_compute(methods: Sequence[str]) -> list[str]:
    """Fast methods first, slow ones last, so that most maps appear within seconds."""
    return sorted(methods, key=is_slow)


def methods_help() -> str:
    """The method picker's help, from the methods' own metadata: what each slow one costs."""
    slow = [f"{m.title} ({m.cost.value})" for m in camlib.methods.METHODS.values() if m.cost is not Cost.ONE_PASS]
    fast = [m.title for m in camlib.methods.METHODS.values() if m.cost is Cost.ONE_PASS]
    return (f"One pass each: {', '.join(fast)}. Many passes (started by a click, with the expected time shown): "
            f"{', '.join(slow)}.")


def progress_bar(container, label: str) -> Callable[[float], None]:
    """A ``progress=`` callback drawing ``label`` and a bar in ``container`` (call it from the script
    thread; at most ~100 updates)."""
    bar = container.progress(0.0, text=f"{label}: starting…")
    state = {"last": -1}

    def update(fraction: float) -> None:
        fraction = min(max(float(fraction), 0.0), 1.0) if math.isfinite(fraction) else 0.0
        step = int(fraction * 100)
        if step != state["last"]:
            state["last"] = step
            bar.progress(fraction, text=f"{label}: {step}%")

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


#: Cells per row of the heatmap grid (the first row starts with the image).
GRID = 5


def grid_columns(n: int) -> int:
    """Columns of a heatmap grid of ``n`` cells: all in one row up to :data:`GRID`, then rows of GRID."""
    return max(1, min(n, GRID))


def grid(n: int, gap: str = "small") -> list:
    """``n`` cells (containers) in rows of :func:`grid_columns` equal columns."""
    columns = grid_columns(n)
    cells = []
    for i in range(n):
        if i % columns == 0:
            row = st.columns(columns, gap=gap)
        cells.append(row[i % columns])
    return cells


def method_cells(methods: Sequence[str], cells: Sequence | None = None, suffix: str = "") -> dict:
    """A titled, empty placeholder per method, in ``cells`` (default: a new grid): {method: st.empty()}."""
    cells = list(cells) if cells is not None else grid(len(methods))
    out = {}
    for method, cell in zip(methods, cells):
        with cell:
            st.markdown(f"**{method_title(method)}**{suffix}")
            out[method] = st.empty()
    return out


#: The largest integer a browser's number input holds exactly.
JS_INTEGER = 2**53 - 1
#: The app's upper bound of options whose library bound is far beyond a lesson's patience.
APP_MAXIMUM = {"permutations": 200, "samples": 4096}


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
            top = APP_MAXIMUM.get(option.name)
            if top is not None and isinstance(option.default, int) and option.minimum is not None:
                top = min(top, option.maximum) if option.maximum is not None else top
                start = min(max(int(start), int(option.minimum)), int(top))
                values[option.name] = container.slider(label, int(option.minimum), int(top), start,
                                                       key=widget, persist_state="session")
            else:  # bounds within what the browser's numbers hold exactly (2^53 - 1)
                low = None if option.minimum is None else max(option.minimum, -JS_INTEGER)
                high = None if option.maximum is None else min(option.maximum, JS_INTEGER)
                values[option.name] = container.number_input(label, low, high, start,
                                                             format="%g" if isinstance(option.default, float) else None,
                                                             key=widget, persist_state="session")
        if values:
            chosen[key] = values
    return chosen


# -- jobs on screen ---------------------------------------------------------------------------------

def ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    if seconds < 10:
        return f"{seconds:.1f} s" if seconds >= 0.95 else f"{seconds:.2f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


def status_text(job, position: int) -> tuple[float, str]:
    """(fraction, text) of a job that is not finished: its place in the queue, or its progress with
    the elapsed and the expected time."""
    if position > 0:
        ahead = position - 1
        return 0.0, ("In the queue: next to start" if ahead == 0 else
                     f"In the queue: {ordinal(position)} ({ahead} computation{'s' if ahead > 1 else ''} first)")
    expected = f" of ≈ {duration(job.expected)}" if job.expected else ""
    if job.started is None:
        return 0.0, "starting…"
    return job.progress, f"{int(100 * job.progress)}% · {duration(job.elapsed())}{expected}"


def time_caption(job, cached: bool) -> str:
    """'computed in 0.05 s', or '0.05 s to compute · cached' when it was finished before this run."""
    seconds = job.seconds
    if cached:
        return f"{duration(seconds)} to compute · cached"
    return f"computed in {duration(seconds)}"


def show_jobs(entries: dict, on_done: Callable[[str, object, bool], None], service, timeout: float | None = None) -> None:
    """Draw each pending job's status in its placeholder until it finishes, then ``on_done(name, job,
    cached)`` (in the script thread). ``entries``: {name: (job, placeholder)}; a job already finished
    is drawn at once with ``cached=True``."""
    pending = {}
    for name, (job, cell) in entries.items():
        if job.done.is_set():
            on_done(name, job, True)
        else:
            pending[name] = (job, cell)
    shown: dict = {}
    deadline = None if timeout is None else time.monotonic() + timeout
    while pending:
        for name, (job, cell) in list(pending.items()):
            if job.done.is_set():
                del pending[name]
                on_done(name, job, False)
                continue
            fraction, text = status_text(job, service.position(job))
            if shown.get(name) != text:
                shown[name] = text
                cell.progress(min(max(fraction, 0.0), 1.0), text=text)
        if pending:
            if deadline is not None and time.monotonic() > deadline:
                return
            service.wait_any([job for job, _ in pending.values()], POLL)


def requested(key) -> bool:
    return key in st.session_state.get(REQUESTED, set())


def request(key) -> None:
    st.session_state.setdefault(REQUESTED, set()).add(key)


def start_cell(cell, model, layer: str, method: str, options: dict | None, key, seconds: float | None,
               model_name: str, button_key: str) -> None:
    """In ``cell``: what the method costs, its expected time here, and a button that starts it."""
    from appkit import costs

    options = camlib.get_method(method).resolve_options(dict(options or {}))
    words = costs.cost_words(model, layer, method, options)
    how = "measured" if costs.estimate_known(model_name, layer, method) else "estimated"
    expected = "" if seconds is None else f" · ≈ {duration(seconds)} here ({how})"
    with cell.container():
        st.caption(words + expected)
        st.button("Compute", key=button_key, on_click=request, args=(key,), icon=":material/play_arrow:",
                  type="primary", help="This method evaluates the network (or its tail) many times; the "
                                       "expected time is this server's.")


def footer() -> None:
    """The sidebar's last line, drawn when a run is over: the compute service's state (its container,
    key ``run_done``, marks a finished run for the browser tests and the benchmark)."""
    from appkit.service import service

    stats = service().stats()
    with st.sidebar.container(key="run_done"):
        st.caption(f"Compute service: {stats['workers']} workers, {stats['threads_per_job']} torch thread(s) per "
                   f"job, {stats['cores']} cores · now {stats['running']} running, {stats['queued']} queued · "
                   f"{stats['finished']} results kept for every visitor.")


#: Session-state keys of :func:`deferred_chart`.
CHART_READY, CHART_TICKS = "_charts_ready", "_charts_ticks"
#: Timer runs after which :func:`deferred_chart` draws the chart whatever their gaps.
CHART_PATIENCE = 8


def browser_free(ticks: Sequence[float], delay: float, on_time: float = 1.6, patience: int = 8) -> bool:
    """Whether a browser looks free to load a chart, from the server's clock at each run of its
    timer fragment (``ticks``, oldest first; the first is the page's own run): the last two came at
    most ``on_time`` × ``delay`` apart. A browser whose main thread is busy drawing the page (a
    first load on a slow or loaded CPU) fires its timer late, and the gap grows. After ``patience``
    runs it is taken as free anyway, so that a chart is never held back for good."""
    if len(ticks) >= patience:
        return True
    return len(ticks) >= 2 and ticks[-1] - ticks[-2] <= on_time * delay


def sync_map_picker(picker: str, chart_key: str, choices, maps) -> int | None:
    """The activation map to show, kept the same in a coefficient chart and its map picker.

    A bar clicked in the chart (its selection, from the previous run: ``state[chart_key]``)
    becomes the picker's value (``state[picker]``), once per click; a value not among ``choices``
    is replaced by the first map that is not zero on the image (:func:`appkit.first_varying`).
    Call it before drawing the chart and the picker; returns the map index."""
    from appkit.compute import first_varying
    from appkit.figures import selected_map

    state = st.session_state
    seen = f"_chart_pick_{picker}"
    clicked = selected_map(state.get(chart_key))
    if clicked is not None and clicked != state.get(seen) and clicked in choices:
        state[picker] = clicked
    state[seen] = clicked
    if state.get(picker) not in choices:
        state[picker] = first_varying(choices, maps)
    return state[picker]


def interactive_work() -> bool:
    """Whether the compute service has single-pass work (maps, predictions) queued or running: some
    session is waiting for its first maps."""
    from appkit.service import Lane, service

    return service().busy(Lane.INTERACTIVE)


def deferred_chart(draw: Callable[[], object], height: int = 280, delay: float = 0.5) -> None:
    """Draw an interactive chart, but in a new session only once the browser has shown the rest,
    and not while another session waits for its maps (:func:`interactive_work`).

    A plotly chart makes the browser load and compile plotly.js (megabytes of script) on its main
    thread, which holds back the heatmaps drawn above it (measured in headless Chromium: a new
    session's maps took about twice as long with the chart on the page). So the session's first
    run draws a placeholder of the chart's height in a fragment that the *browser* reruns after
    ``delay`` seconds (its timer runs once the page is drawn); the first rerun that comes on time
    (:func:`browser_free`: the browser is no longer busy drawing) lets every later run of the
    session draw the chart at once (``st.rerun``), so it appears right after the maps. While
    single-pass work is queued or running the fragment waits another ``delay``: with several new
    sessions at once on one machine their browsers then draw everyone's maps before any chart
    (measured: docs/APP.md). Without the on-time test, a first load on a loaded CPU got plotly.js
    before its maps had been drawn in 3 of 7 loads, and those took about twice as long.
    """
    state = st.session_state
    if state.get(CHART_READY):
        draw()
        return

    @st.fragment(run_every=delay)
    def later() -> None:
        ticks = state.setdefault(CHART_TICKS, [])
        ticks.append(time.monotonic())
        del ticks[:-CHART_PATIENCE]  # browser_free reads the last two and the count up to its patience
        if browser_free(ticks, delay, patience=CHART_PATIENCE) and not interactive_work():
            state[CHART_READY] = True
            st.rerun(scope="app")
        st.container(height=height, border=False).caption("The chart is on its way…")

    later()
