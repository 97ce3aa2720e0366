"""camlib's Streamlit app: `streamlit run app.py`.

This entry point sets up the page list and the sidebar shared by the image pages (model, layer,
target class). The choices live in ``st.session_state`` so that every page works on the same image,
model, layer and target; each page adds its own controls below them. Computation lives in
``appkit`` (the package beside this file).
"""

import pathlib

import streamlit as st

import appkit

HERE = pathlib.Path(__file__).resolve().parent

st.set_page_config(page_title="camlib · class activation maps", page_icon="🔥", layout="wide")
st.session_state[appkit.ENTRYPOINT_SEEN] = True

# The pages, in menu order. `shared` pages work on the current image and get the shared sidebar.
# To add a page, append (st.Page(...), shared) here.
PAGES = [
    (st.Page(HERE / "pages/1_Explain.py", title="Explain an image", icon=":material/local_fire_department:", default=True), True),
    (st.Page(HERE / "pages/2_SHAP_vs_LIFT.py", title="SHAP-CAM vs LIFT-CAM", icon=":material/casino:"), True),
    (st.Page(HERE / "pages/3_VQA.py", title="VQA", icon=":material/quiz:"), False),
    (st.Page(HERE / "pages/4_Faithfulness.py", title="Faithfulness", icon=":material/trending_down:"), True),
    (st.Page(HERE / "pages/5_How_it_works.py", title="How it works", icon=":material/menu_book:"), False),
]


def shared_sidebar() -> None:
    """Model, layer and target pickers; stores the resolved choice in st.session_state["selection"]."""
    state = st.session_state
    if "image" not in state:
        state["image"] = appkit.sample_image(appkit.DEFAULT_SAMPLE)
    image: appkit.CurrentImage = state["image"]

    side = st.sidebar
    name = side.selectbox("Model", appkit.IMAGE_MODELS, key="model_name", persist_state="session",
                          format_func=lambda n: appkit.model_title(n) + (" — unavailable" if appkit.model_status(n) else ""))
    reason = appkit.model_status(name)
    model = None
    if reason is None:
        try:
            with st.spinner(f"Loading {appkit.model_title(name)}…"):
                model = appkit.get_model(name)
        except Exception as exc:  # ModelUnavailableError, or a corrupt weight file
            reason = str(exc)
    if model is None:
        side.error(f"{appkit.model_title(name)} is unavailable: {reason}")
        side.caption(f"Using {appkit.model_title(appkit.DEFAULT_MODEL)} instead.")
        name = appkit.DEFAULT_MODEL
        model = appkit.get_model(name)
    unavailable = {n: appkit.model_status(n) for n in appkit.IMAGE_MODELS if appkit.model_status(n)}
    if unavailable:
        with side.expander(f"{len(unavailable)} model(s) unavailable here"):
            for n, why in unavailable.items():
                st.markdown(f"**{appkit.model_title(n)}**: {why}")

    show_all = side.toggle("Show all layers", key="all_layers", persist_state="session",
                           help="The curated layers come first; this adds every layer that can be explained.")
    options = appkit.layer_options(model, show_all, state.get("layer"))
    if state.get("layer") not in options:
        state["layer"] = model.default_layer
    layer = side.selectbox("Layer", options, key="layer", persist_state="session",
                           format_func=lambda n: appkit.layer_label(model, n))
    side.caption(appkit.tail_note(model, layer))

    probabilities = appkit.predictions(name, image.key, image.image)
    if state.get("target_image") != (image.key, name):  # a new image or model: back to the prediction
        state["target_image"] = (image.key, name)
        state["target"] = appkit.PREDICTED
    choice = side.selectbox("Target class", appkit.target_options(probabilities, model.class_names), key="target",
                            persist_state="session",
                            format_func=lambda o: appkit.target_label(o, probabilities, model.class_names),
                            help="The class whose score is explained: the prediction, one of the top 5, "
                                 "or any ImageNet class (type to search).")
    target = int(probabilities.argmax()) if choice in (None, appkit.PREDICTED) else int(choice)
    state["selection"] = {"model_name": name, "model": model, "layer": layer, "target": target,
                          "target_name": model.class_names[target], "image": image, "probabilities": probabilities}


page = st.navigation([p for p, _ in PAGES])
if any(shared and p.url_path == page.url_path for p, shared in PAGES):
    shared_sidebar()
page.run()
