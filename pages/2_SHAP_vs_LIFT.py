"""SHAP-CAM vs LIFT-CAM: how fast sampled orderings approach the SHAP values, and how close LIFT-CAM is."""

import streamlit as st

import appkit

state = st.session_state
sel = appkit.selection()
model, layer, target, image = sel["model"], sel["layer"], sel["target"], sel["image"]
name = sel["model_name"]
info = model.layer_info(layer)

st.title("SHAP-CAM vs LIFT-CAM")
st.markdown(
    "SHAP-CAM<sub>|Π|</sub> averages each map's marginal contribution over |Π| random orderings of the maps "
    "(Algorithm 1); the curve shows how similar (cosine) those running estimates are to LIFT-CAM's coefficients, "
    "which cost a single backward pass, with a band for the spread across random seeds. "
    "When the network after the layer is linear every ordering gives the same, exact answer, so the curve is flat "
    "at 1 from the first ordering: LIFT-CAM *is* the SHAP value there.", unsafe_allow_html=True)
st.caption(f"{image.title} · {model.title} · layer {layer} ({'×'.join(map(str, info.shape))}) · "
           f"class {sel['target_name']}")


def go_inner_layer(name: str) -> None:
    state["layer"] = name


suggestion = next((n for n in model.preset_layers if not model.layer_info(n).linear_tail), None)
if info.linear_tail:
    st.info(f"The tail after **{layer}** is linear, so SHAP-CAM is exact with one ordering and the curve is flat at 1. "
            "Pick an inner layer to see it converge.")
    if suggestion:
        st.button(f"Use layer {suggestion}", on_click=go_inner_layer, args=(suggestion,), type="primary")

with st.sidebar.form("shap_form"):
    perms = st.slider("Largest |Π| (orderings)", 1, 500, 50, key="shap_perms", persist_state="session",
                      help="Each ordering costs one pass of the tail per map (fewer with camlib's incremental "
                           "evaluation).")
    seeds = st.slider("Seeds (for the band)", 1, 5, 3, key="shap_seeds", persist_state="session")
    st.form_submit_button("Apply", type="primary")

status = st.empty()  # progress bars while computing, cleared afterwards
with status.container():
    bar = appkit.progress_bar(st, f"SHAP-CAM: {seeds} seed(s) × {perms} orderings of {info.shape[0]} maps")
    try:
        result = appkit.shap_convergence(name, image.key, image.image, layer, target, perms, seeds, _progress=bar)
        others = {}
        for method in ("gradcam", "xgradcam", "ablationcam", "liftcam"):
            progress = appkit.progress_bar(st, appkit.method_title(method)) if method in appkit.SLOW_METHODS else None
            others[method] = appkit.explanation(name, image.key, image.image, method, layer, target,
                                                _progress=progress)["coefficients"]
    except Exception as exc:  # never a traceback on screen
        st.error(f"SHAP-CAM failed: {type(exc).__name__}: {exc}")
        st.stop()
status.empty()

reference = st.segmented_control("Reference", ["lift", "pooled"], default="lift", key="shap_reference",
                                 persist_state="session", required=True,
                                 format_func=lambda r: "LIFT-CAM" if r == "lift" else "SHAP-CAM, all orderings pooled")
ref_vector = result["lift"] if reference == "lift" else result["pooled"]
lines = {appkit.method_title(m): appkit.cosine(alpha, ref_vector) for m, alpha in others.items()
         if not (m == "liftcam" and reference == "lift")}
st.plotly_chart(appkit.convergence_figure(result, reference, lines), key="convergence")

final = result["cos_lift"][:, -1]
a, b, c = st.columns(3)
a.metric(f"cos(SHAP-CAM_{perms}, LIFT-CAM)", appkit.fmt_fixed(final.mean()),
         help=f"mean over {seeds} seed(s); std {appkit.fmt(final.std(), 2)}")
b.metric("cos(LIFT-CAM, pooled SHAP-CAM)", appkit.fmt_fixed(appkit.cosine(result["lift"], result["pooled"])))
c.metric("time for all orderings", f"{result['seconds']:.1f} s")

st.subheader("The maps")
maps = appkit.activations(name, image.key, image.image, layer)
snaps = result["snapshots"]
cols = st.columns(len(snaps) + 1)
for col, (count, alpha) in zip(cols, snaps.items()):
    saliency, _ = appkit.map_saliency(alpha, maps, model.input_size)
    col.image(appkit.overlay_image(image.image, saliency, 0.5), width="stretch",
              caption=f"SHAP-CAM, |Π| = {count} (seed 0) · cos to LIFT {appkit.cosine(alpha, result['lift']):.3f}")
lift_saliency, _ = appkit.map_saliency(result["lift"], maps, model.input_size)
cols[-1].image(appkit.overlay_image(image.image, lift_saliency, 0.5), caption="LIFT-CAM (one backward pass)",
               width="stretch")
