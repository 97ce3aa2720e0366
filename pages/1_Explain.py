"""Explain an image: every selected CAM method side by side, with its coefficients α."""

import camlib
import streamlit as st

import appkit
from camlib.images import ALLOWED_EXTENSIONS, MAX_BYTES

state = st.session_state
sel = appkit.selection()
model, layer, target = sel["model"], sel["layer"], sel["target"]

st.title("Explain an image")
st.markdown("Every class activation map is **L = ReLU(Σ<sub>k</sub> α<sub>k</sub> A<sub>k</sub>)**: the same "
            "activation maps A<sub>k</sub>, weighted by coefficients α<sub>k</sub>. The methods differ only in α.",
            unsafe_allow_html=True)


# -- the image -------------------------------------------------------------------------------------

def use_sample(key: str) -> None:
    state["image"] = appkit.sample_image(key)
    state.pop("upload_result", None)


def use_upload() -> None:
    file = state.get("upload")
    if file is None:
        return
    current, result = appkit.upload_to_current(file.getvalue(), file.name)
    state["upload_result"] = result
    if current is not None:
        state["image"] = current


image = sel["image"]
with st.expander("Choose an image", expanded=True):
    gallery, upload = st.tabs(["Sample gallery", "Upload your own"])
    with gallery:
        samples = appkit.sample_list()
        for col, sample in zip(st.columns(len(samples)), samples):
            with col:
                st.image(appkit.thumbnail(appkit.sample_image(sample.key).image), width="stretch")
                st.button(sample.title, key=f"sample_{sample.key}", on_click=use_sample, args=(sample.key,),
                          type="primary" if image.sample == sample.key else "secondary", width="stretch")
        st.caption("The samples are photos bundled with scikit-image (offline); each shows its source below.")
    with upload:
        st.file_uploader("JPEG, PNG, WebP, BMP, GIF or TIFF", type=list(ALLOWED_EXTENSIONS), key="upload",
                         on_change=use_upload, max_upload_size=MAX_BYTES // (1024 * 1024))

result = state.get("upload_result")
if result is not None and result.error:
    st.error(result.error)

left, right = st.columns([1, 2], gap="large")
with left:
    st.image(image.image, caption=image.title, width="stretch")
    st.caption(f"Source: {image.source}")
    for note in image.notes:
        st.info(note)
with right:
    st.subheader("Top-5 predictions")
    top5 = appkit.top_classes(sel["probabilities"], model.class_names)
    st.plotly_chart(appkit.probability_figure(top5), key="top5", config={"displayModeBar": False})
    st.markdown(f"Explaining class **{sel['target_name']}** (index {target}) with **{model.title}** at layer "
                f"**{layer}** ({'×'.join(map(str, model.layer_info(layer).shape))}).")

# -- controls ----------------------------------------------------------------------------------------

st.sidebar.divider()
methods = st.sidebar.multiselect("Methods", camlib.list_methods(), default=list(appkit.DEFAULT_METHODS), key="methods",
                                 format_func=appkit.method_title, persist_state="session", bind="query-params",
                                 help="Score-CAM, Ablation-CAM and SHAP-CAM evaluate the network once per map: "
                                      "they run last, with a progress bar.")
alpha = st.sidebar.slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05, key="alpha", persist_state="session")
top_k = st.sidebar.slider("Maps in the coefficient charts", 5, 100, 20, 5, key="top_k", persist_state="session")
method_options = appkit.option_controls(methods, "explain")

# -- the maps ----------------------------------------------------------------------------------------

st.subheader("Class activation maps")
if not methods:
    st.info("Choose at least one method in the sidebar.")
    st.stop()

cells = appkit.method_cells(methods)

results: dict[str, dict] = {}
for method in appkit.ordered_for_compute(methods):
    cell = cells[method]
    with cell.container():
        progress = None
        if method in appkit.SLOW_METHODS:
            progress = appkit.progress_bar(st, f"{appkit.method_title(method)} · {model.layer_info(layer).shape[0]} maps")
        else:
            st.caption("computing…")
    try:
        res = appkit.explanation(sel["model_name"], image.key, image.image, method, layer, target,
                                 method_options.get(method), _progress=progress)
    except (ValueError, FloatingPointError) as exc:
        cell.warning(str(exc))
        continue
    except Exception as exc:  # never a traceback on screen
        cell.error(f"{appkit.method_title(method)} failed: {type(exc).__name__}: {exc}")
        continue
    results[method] = res
    with cell.container(key=f"cam_{method}"):
        st.image(appkit.overlay_image(image.image, res["saliency"], alpha), width="stretch")
        note = " · map is all zero (every α·A ≤ 0)" if res["constant"] else ""
        st.caption(f"computed in {res['seconds']:.2f} s{note}")
        st.download_button("PNG", appkit.overlay_png(image.image, res["saliency"], alpha),
                           file_name=f"{image.title}-{method}-{layer}.png".replace(" ", "_"), mime="image/png",
                           key=f"png_{method}", on_click="ignore", icon=":material/download:")

if "liftcam" in results and results["liftcam"]["local_accuracy"] is not None:
    total, delta = results["liftcam"]["local_accuracy"]
    st.markdown("**LIFT-CAM local accuracy** (Eq. 8): the coefficients add up to the change of the target "
                "logit between the real maps and all-zero maps.")
    a, b, c = st.columns(3)
    a.metric("Σ α (LIFT-CAM)", appkit.fmt(total, 6))
    b.metric("F^c(A) − F^c(0)", appkit.fmt(delta, 6))
    c.metric("difference", appkit.fmt(abs(total - delta), 2))

if results:
    st.download_button("All coefficients (CSV)", appkit.coefficients_csv(results, sel["model_name"], model.class_names),
                       file_name=f"coefficients-{sel['model_name']}-{layer}.csv", mime="text/csv",
                       key="csv", on_click="ignore", icon=":material/download:")

# -- coefficients --------------------------------------------------------------------------------------

if results:
    st.subheader("Coefficients α: which activation maps matter")
    st.caption("Maps sorted by |α|. Click a bar (or pick a map below) to see that activation map A_k over the image.")
    maps = appkit.activations(sel["model_name"], image.key, image.image, layer)
    shown = [m for m in methods if m in results]  # grid order
    tabs = st.tabs([appkit.method_title(m) for m in shown])
    for tab, method in zip(tabs, shown):
        res = results[method]
        with tab:
            chart_key = f"coef_{method}"
            event = st.plotly_chart(appkit.coefficient_figure(res["coefficients"], top_k),
                                    key=chart_key, on_select="rerun", selection_mode="points",
                                    config={"displayModeBar": False})
            picked = appkit.selected_map(event)
            if picked is not None:
                st.caption(f"Picked in the chart: A{picked}. Click the chart's empty space or double-click to clear.")
            choices = appkit.top_maps(res["coefficients"], top_k)
            left, right = st.columns([1, 1])
            with left:
                fallback = st.selectbox("Activation map", choices, key=f"map_{method}",
                                        format_func=lambda k: f"A{k}", disabled=picked is not None,
                                        help="Or click a bar in the chart.")
            k = picked if picked is not None else fallback
            if k is None:
                continue
            table = appkit.coefficient_table(res["coefficients"])
            with left:
                st.metric(f"α of A{k}", appkit.fmt(table.alpha[k]),
                          help="rank by |α| among all maps: " + str(int(table["rank"][k])))
                st.metric("share of Σα", appkit.fmt_percent(table.share[k], 2))
            with right:
                a_k, flat = appkit.activation_map(maps, k)
                st.image(appkit.activation_overlay(image.image, a_k),
                         caption=f"A{k} over the image ({'all zero on this image' if flat else 'min–max scaled'})",
                         width="stretch")
                if flat:
                    st.caption("A map that is zero on this image adds nothing to L, whatever its α: gradient-based "
                               "methods can still give it a large weight.")
