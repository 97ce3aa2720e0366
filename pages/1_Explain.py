"""Explain an image: the CAM methods side by side on one image, with their coefficients α."""

import streamlit as st

import appkit
from appkit import teaching, urlstate

state = st.session_state
sel = appkit.selection()
model, layer, target, image, name = sel["model"], sel["layer"], sel["target"], sel["image"], sel["model_name"]
svc = appkit.service()

# A compact first view: on a 1366×768 screen the image and the heatmaps are above the fold.
st.html("<style>[data-testid='stMainBlockContainer']{padding-top:2.2rem;padding-bottom:2rem}"
        "[data-testid='stMainBlockContainer'] h1{padding-top:0;padding-bottom:.2rem;font-size:2rem}</style>")
st.title("Explain an image")
st.caption("Every class activation map is L = ReLU(Σₖ αₖ Aₖ): the same activation maps Aₖ of a layer, weighted "
           "by coefficients αₖ. The methods differ only in α.")
messages = st.container()  # the URL's values that did not apply (read below, shown here)
result = state.get("upload_result")
if result is not None and result.error:
    st.error(f"{result.error} The maps below are still those of the previous image, “{image.title}”.",
             icon=":material/error:")

# -- controls ----------------------------------------------------------------------------------------

all_methods = list(appkit.methods_in_menu())
wanted = urlstate.take("methods")
if wanted is not None:
    keys, unknown = urlstate.parse_methods(wanted)
    if unknown:
        urlstate.complain(urlstate.methods_message(unknown))
    if keys:
        state["methods"] = [m for m in all_methods if m in keys]
state.setdefault("methods", list(appkit.DEFAULT_METHODS))
st.sidebar.divider()
methods = st.sidebar.pills("Methods", all_methods, selection_mode="multi", key="methods",
                           format_func=appkit.method_title, persist_state="session", help=appkit.methods_help())
methods = [m for m in all_methods if m in (methods or [])]  # menu order
alpha = st.sidebar.slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05, key="alpha", persist_state="session")
top_k = st.sidebar.slider("Maps in the coefficient chart", 5, 100, 20, 5, key="top_k", persist_state="session")
method_options = appkit.option_controls(methods, "explain")

other = appkit.contrast_layer(model, layer)
wanted = urlstate.take("compare")
if wanted:
    state["compare_layer"] = wanted[0]
compare = state.get("compare_layer")
if compare is not None and (compare == layer or not appkit.has_layer(model, compare)):
    if compare != layer:
        urlstate.complain(f"The link compares with no layer '{compare}' of {model.title}.")
    compare = state["compare_layer"] = None
layers = [layer] + ([compare] if compare else [])
urlstate.write({"methods": ",".join(methods) or None, "compare": compare})
for message in urlstate.messages():
    messages.warning(message, icon=":material/link:")
if urlstate.messages():
    messages.button("Dismiss", key="url_dismiss", on_click=urlstate.dismiss, icon=":material/close:")

if not methods:
    st.image(appkit.inline(image.image), caption=image.title, width=320)
    st.info("Choose at least one method in the sidebar.")
    st.stop()

# -- the jobs: single-pass maps start now; the others on a click (or when quick, or started by anyone) ------

jobs, plans = {}, {}  # (layer, method) -> job (None: waits for a click; ValueError: bad options)
for lay in layers:
    planned = appkit.plan_explanations(name, image.key, image.image, appkit.ordered_for_compute(methods), lay,
                                       target, method_options, with_activations=lay == layer)
    for method, plan in planned.items():
        if isinstance(plan, ValueError):  # an option out of its bounds
            jobs[(lay, method)] = plan
            continue
        job, key, seconds = plan
        jobs[(lay, method)], plans[(lay, method)] = job, (key, seconds)
maps_job = appkit.submit_activations(name, image.key, image.image, layer)  # queued with the maps (one pass)

# -- the grid: the image, then one cell per method (per layer when comparing) -----------------------------

cells = {}
for row, lay in enumerate(layers):
    info = model.layer_info(lay)
    if compare:
        st.markdown(f"**Layer {lay}** · {info.shape[0]} maps of {info.shape[1]}×{info.shape[2]} · "
                    f"{'linear' if info.linear_tail else 'nonlinear'} tail")
    grid = appkit.grid(1 + len(methods))
    with grid[0]:
        if row == 0:
            st.markdown(f"**{image.title}**")
            st.image(appkit.inline(image.image), width="stretch")
            top = sel["probabilities"].argmax()
            st.caption(f"The model says **{model.class_names[top]}** ({appkit.fmt_percent(sel['probabilities'][top])})")
        else:
            st.markdown("**The same image**")
            st.caption(appkit.tail_note(model, lay))
    placed = appkit.method_cells(methods, grid[1:])
    for method, cell in placed.items():
        cells[(lay, method)] = cell
        job = jobs[(lay, method)]
        if isinstance(job, ValueError):
            cell.warning(str(job))
        elif job is None:
            key, seconds = plans[(lay, method)]
            appkit.start_cell(cell, model, lay, method, method_options.get(method), key, seconds, name,
                              f"start_{lay}_{method}")

results: dict = {}


def draw(name_, job, cached: bool) -> None:
    lay, method = name_
    cell = cells[name_]
    if job.state is appkit.State.FAILED:
        if job.kept:
            cell.warning(job.error)
        else:
            cell.error(f"{appkit.method_title(method)} failed: {job.error}")
        return
    res = job.result
    results[name_] = res
    key = f"cam_{method}" if lay == layer else f"cmp_{method}"
    with cell.container(key=key):
        st.image(appkit.inline(appkit.overlay_image(image.image, res["saliency"], alpha)), width="stretch")
        note = " · map is all zero (every α·A ≤ 0)" if res["constant"] else ""
        st.caption(appkit.time_caption(job, cached) + note)


fast = {k: (j, cells[k]) for k, j in jobs.items() if j is not None and not isinstance(j, ValueError)
        and j.lane is appkit.Lane.INTERACTIVE}
slow = {k: (j, cells[k]) for k, j in jobs.items() if j is not None and not isinstance(j, ValueError)
        and j.lane is not appkit.Lane.INTERACTIVE}
appkit.show_jobs(fast, draw, svc)
finished_slow = {k: j for k, (j, _) in slow.items() if j.done.is_set()}
appkit.show_jobs({k: slow[k] for k in finished_slow}, draw, svc)

# -- why the maps agree (or not), and the layer that shows the other case ---------------------------------

def agreement(lay: str) -> float | None:
    return appkit.saliency_agreement([results[(lay, m)]["saliency"] for m in methods if (lay, m) in results])


with st.container(border=True):
    text = teaching.why(model, layer, agreement(layer), compare, agreement(compare) if compare else None)
    st.markdown(text, unsafe_allow_html=True)
    if other is not None and compare != other:
        st.button(teaching.compare_button(model, layer, other), key="compare_on", icon=":material/compare:",
                  on_click=lambda: state.update(compare_layer=other), type="primary")
    elif compare:
        st.button("Hide the comparison", key="compare_off", icon=":material/close:",
                  on_click=lambda: state.update(compare_layer=None))

# -- the other methods, one click away, with their cost ---------------------------------------------------

more = [m for m in appkit.methods_in_menu() if m not in methods]
if more:
    def add(method: str) -> None:
        state["methods"] = [m for m in appkit.methods_in_menu() if m in {*state.get("methods", []), method}]
        appkit.request(appkit.explanation_key(name, image.key, method, layer, target))

    st.markdown("**More methods**, one click each (they evaluate the network or its tail many times; the time is "
                "this server's):")
    for col, method in zip(st.columns(len(more)), more):
        seconds = appkit.expected_seconds(name, model, layer, method, {}, wait=True)
        cost = appkit.cost_words(model, layer, method, {})
        label = appkit.method_title(method) + ("" if seconds is None else f" · ≈ {appkit.duration(seconds)}")
        col.button(label, key=f"add_{method}", on_click=add, args=(method,), icon=":material/add:", width="stretch",
                   help=appkit.method_summary(method) or None)
        col.caption(cost)

# -- predictions, local accuracy -------------------------------------------------------------------------

left, right = st.columns([1, 2], gap="large")
with left:
    st.markdown("**Top-5 predictions**")
    st.html(appkit.top5_html(appkit.top_classes(sel["probabilities"], model.class_names)))
    st.caption(f"Source: {image.source}")
    for note in image.notes:
        st.info(note)
with right:
    st.markdown(f"Explaining class **{sel['target_name']}** (index {target}) with **{model.title}** at layer "
                f"**{layer}** ({'×'.join(map(str, model.layer_info(layer).shape))}).")
    lift = results.get((layer, "liftcam"))
    if lift is not None and lift["local_accuracy"] is not None:
        total, delta = lift["local_accuracy"]
        st.markdown("**LIFT-CAM local accuracy** (Eq. 8): the coefficients add up to the change of the target "
                    "logit between the real maps and all-zero maps.")
        a, b, c = st.columns(3)
        a.metric("Σ α (LIFT-CAM)", appkit.fmt(total, 6))
        b.metric("F^c(A) − F^c(0)", appkit.fmt(delta, 6))
        c.metric("difference", appkit.fmt(abs(total - delta), 2))

# -- coefficients ----------------------------------------------------------------------------------------

shown = [m for m in methods if (layer, m) in results]
if shown:
    st.subheader("Coefficients α: which activation maps matter")
    main = {m: results[(layer, m)] for m in shown}
    if state.get("coef_method") not in shown:
        state["coef_method"] = shown[0]
    method = st.segmented_control("Coefficients of", shown, key="coef_method", format_func=appkit.method_title,
                                  required=True)
    res = main[method]
    maps = appkit.result_of(maps_job)
    choices = appkit.top_maps(res["coefficients"], top_k)
    picker, chart_key = f"map_{method}", f"coef_{method}"
    # the picker, the outline in the chart and the map beside it always name the same A_k
    appkit.sync_map_picker(picker, chart_key, choices, maps)
    chart, panel = st.columns([3, 2], gap="medium")
    with chart:
        st.caption("Maps sorted by |α|. Click a bar (or pick a map on the right) to see that activation map "
                   "A_k over the image.")
        appkit.deferred_chart(lambda: st.plotly_chart(
            appkit.coefficient_figure(res["coefficients"], top_k, selected=state[picker]), key=chart_key,
            on_select="rerun", selection_mode="points", config={"displayModeBar": False}), height=280)
    with panel:
        k = st.selectbox("Activation map", choices, key=picker, format_func=lambda i: f"A{i}",
                         help="The first choice is the map with the largest |α| that is not zero on this image.")
        table = appkit.coefficient_table(res["coefficients"])
        a_k, flat = appkit.activation_map(maps, k)
        st.image(appkit.inline(appkit.activation_overlay(image.image, a_k)), width="stretch",
                 caption=f"A{k} over the image ({'all zero on this image' if flat else 'min–max scaled'})")
        a, b = st.columns(2)
        a.metric(f"α of A{k}", appkit.fmt(table.alpha[k]), help=f"rank by |α| among all maps: {int(table['rank'][k])}")
        b.metric("share of Σ|α|", appkit.fmt_percent(table.share[k], 2),
                 help="|α_k| / Σ_j |α_j|: how much of the total weight this map carries (signs aside).")
        if flat:
            st.caption("A map that is zero on this image adds nothing to L, whatever its α: gradient-based "
                       "methods can still give it a large weight.")
    st.download_button("All coefficients (CSV)",
                       lambda: appkit.coefficients_csv(main, name, model.class_names),
                       file_name=f"coefficients-{name}-{layer}.csv", mime="text/csv", key="csv", on_click="ignore",
                       icon=":material/download:")
    png = {m: results[(layer, m)]["saliency"] for m in shown}
    cols = st.columns(min(len(shown), 6))
    for i, m in enumerate(shown):
        cols[i % len(cols)].download_button(
            f"{appkit.method_title(m)} PNG", lambda s=png[m]: appkit.overlay_png(image.image, s, alpha),
            file_name=f"{image.title}-{m}-{layer}.png".replace(" ", "_"), mime="image/png", key=f"png_{m}",
            on_click="ignore", icon=":material/download:")

# -- slow methods still running: their cells fill in; then the page redraws with them ------------------------

running = {k: v for k, v in slow.items() if k not in finished_slow}
if running:
    appkit.show_jobs(running, draw, svc)
    st.rerun()
