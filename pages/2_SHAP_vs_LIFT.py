"""The estimators page (grown from "SHAP-CAM vs LIFT-CAM"): how close each estimator of the maps' SHAP
values gets to them for its number of tail evaluations, on the current image, layer and class."""

import streamlit as st

import appkit

state = st.session_state
sel = appkit.selection()
model, layer, target, image = sel["model"], sel["layer"], sel["target"], sel["image"]
name = sel["model_name"]
info = model.layer_info(layer)

st.title("SHAP-CAM vs LIFT-CAM: accuracy for the cost")
st.markdown(
    "The SHAP value of an activation map is its average contribution to the class score over every order in "
    "which the maps could be switched on (the paper's Eq. 6). It can be *estimated*: SHAP-CAM averages over "
    "random orderings (Algorithm 1), its antithetic and stratified samplers choose the orderings so that their "
    "errors cancel, and coalition methods fit a linear model to random subsets of maps; or *approximated* in one "
    "pass (LIFT-CAM, the Grad-CAM family) or with one evaluation per map (Ablation-CAM). The chart shows how "
    "close each one gets to the SHAP values for the work it does.")
st.caption(f"{image.title} · {model.title} · layer {layer} ({'×'.join(map(str, info.shape))}) · "
           f"class {sel['target_name']}")


def go_inner_layer(name: str) -> None:
    state["layer"] = name


suggestion = next((n for n in model.preset_layers if not model.layer_info(n).linear_tail), None)
if info.linear_tail:
    st.info(f"The network after **{layer}** is linear, so every ordering estimator is exact here: every ordering "
            "gives the SHAP values and LIFT-CAM equals them (the coalition estimators still need about as many "
            "coalitions as maps). Pick an inner layer to see the estimators differ.")
    if suggestion:
        st.button(f"Use layer {suggestion}", on_click=go_inner_layer, args=(suggestion,), type="primary")

with st.sidebar.form("estimators_form"):
    orderings = st.slider("Largest budget (orderings of the maps)", 1, 200, 50, key="est_orderings",
                          persist_state="session",
                          help=f"Each ordering is nominally {info.shape[0] + 1} evaluations of the network's tail "
                               "(one per map, plus the empty set); coalition methods get as many samples, up to "
                               f"{appkit.SAMPLED_ORDERINGS} orderings' worth (each sample is a tail evaluation).")
    seeds = st.slider("Seeds (for the band)", 1, 5, 3, key="est_seeds", persist_state="session")
    reference = st.select_slider("Reference: SHAP-CAM with … orderings", appkit.REFERENCE_CHOICES, 1000,
                                 key="est_reference", persist_state="session",
                                 help="The stand-in for the exact SHAP values; more orderings, a closer reference "
                                      "and a longer wait.")
    st.form_submit_button("Apply", type="primary")

status = st.empty()  # the progress bar while computing, cleared afterwards
with status.container():
    bar = appkit.progress_bar(st, f"{seeds} seed(s) × {orderings} orderings of {info.shape[0]} maps, and the "
                                  f"reference ({reference} orderings)")
    try:
        result = appkit.estimator_comparison(name, image.key, image.image, layer, target, orderings, seeds, reference,
                                             _progress=bar)
    except Exception as exc:  # never a traceback on screen
        st.error(f"The comparison failed: {type(exc).__name__}: {exc}")
        st.stop()
status.empty()

st.plotly_chart(appkit.estimators_figure(result), key="estimators")
st.markdown(appkit.reading(result, sel["target_name"]))

points = result["points"]
a, b, c = st.columns(3)
a.metric("Reference: tail evaluations", f"{result['reference_evaluations']:,}",
         help=f"SHAP-CAM with {reference} orderings: {result['reference_seconds']:.1f} s")
if "liftcam" in points:
    b.metric("LIFT-CAM: cosine to the reference", appkit.fmt_fixed(points["liftcam"]["cosine"]),
             help=f"one pass, {points['liftcam']['seconds']:.3f} s")
slowest = max(result["curves"].values(), key=lambda c: float(c["seconds"].mean(0)[-1]), default=None)
if slowest is not None:
    c.metric("Longest estimator run", f"{float(slowest['seconds'].mean(0)[-1]):.1f} s",
             help=f"{slowest['title']} with the largest budget, per seed")

count = appkit.snapshot_budget(result)
st.subheader(f"The maps, with {count} ordering{'s' if count > 1 else ''}")
maps = appkit.activations(name, image.key, image.image, layer)
shown = [(f"Reference (SHAP-CAM, {reference} orderings)", result["reference"])]
shown += [(f"{c['title']}, {count} (seed 1) · cos {appkit.fmt_fixed(c['cosine'][0][count - 1], 3)}",
           c["estimates"][0][count - 1]) for c in result["curves"].values() if c["cost"] == "orderings"]
if "liftcam" in points:
    lift = appkit.explanation(name, image.key, image.image, "liftcam", layer, target)
    shown.append((f"LIFT-CAM (one pass) · cos {appkit.fmt_fixed(points['liftcam']['cosine'], 3)}",
                  lift["coefficients"]))
cols = st.columns(len(shown))
for col, (caption, alpha) in zip(cols, shown):
    saliency, _ = appkit.map_saliency(alpha, maps, model.input_size)
    col.image(appkit.inline(appkit.overlay_image(image.image, saliency, 0.5)), width="stretch", caption=caption)
if result["skipped"]:
    st.caption("Not shown: " + "; ".join(f"{appkit.method_title(k)} ({why})" for k, why in result["skipped"].items()))
