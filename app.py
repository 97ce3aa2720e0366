"""camlib's Streamlit app: `streamlit run app.py`.

This entry point sets up the page list and the sidebar shared by the image pages (image, model,
layer, target class). The choices live in ``st.session_state`` so that every page works on the same
image, model, layer and target, and in the URL (``?sample=…&layer=…&methods=…``) so that a view can
be shared as a link; each page adds its own controls below them. Computation lives in ``appkit``
(the package beside this file): every torch computation is a job of one compute service per server,
shared by all browser sessions (appkit/service.py).
"""

import os

# OpenMP threads that wait for work sleep instead of spinning: on a CPU shared with other processes
# a spinning team slows every parallel region down many times (docs/APP.md). Read when torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pathlib  # noqa: E402

import streamlit as st  # noqa: E402

import appkit  # noqa: E402
from appkit import urlstate  # noqa: E402

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


def use_sample() -> None:
    key = st.session_state.get("sample_pick")
    if key is not None:
        st.session_state["image"] = appkit.sample_image(key)
        st.session_state.pop("upload_result", None)


def use_upload() -> None:
    state = st.session_state
    file = state.get("upload")
    if file is None:  # the file was removed from the uploader: its message goes too
        state.pop("upload_result", None)
        return
    current, result = appkit.upload_to_current(file.getvalue(), file.name)
    state["upload_result"] = result
    if current is not None:
        state["image"] = current
        state["sample_pick"] = None


def image_picker() -> None:
    """The image of every shared page: a bundled sample (pills: they wrap, never truncate) or an upload."""
    state = st.session_state
    side = st.sidebar
    samples = appkit.sample_list()
    keys = [s.key for s in samples]
    titles = {s.key: s.title for s in samples}
    wanted = urlstate.take("sample")
    if wanted:
        if wanted[0] in keys:
            state["image"] = appkit.sample_image(wanted[0])
        else:
            urlstate.complain(f"The link names no sample '{wanted[0]}'. The samples are: "
                              + ", ".join(f"{t} ({k})" for k, t in titles.items()) + ".")
    if "image" not in state:
        state["image"] = appkit.sample_image(appkit.DEFAULT_SAMPLE)
    state["sample_pick"] = state["image"].sample
    side.pills("Image", keys, key="sample_pick", format_func=titles.get, on_change=use_sample,
               help="Photos bundled with scikit-image (offline), each with its object box.")
    from camlib.images import ALLOWED_EXTENSIONS, MAX_BYTES

    side.file_uploader("Or upload your own", type=list(ALLOWED_EXTENSIONS), key="upload", on_change=use_upload,
                       max_upload_size=MAX_BYTES // (1024 * 1024),
                       help="JPEG, PNG, WebP, BMP, GIF or TIFF up to 25 MB. Checked before it is decoded.")


def shared_sidebar() -> None:
    """Image, model, layer and target pickers; stores the resolved choice in st.session_state["selection"]."""
    state = st.session_state
    image_picker()
    image: appkit.CurrentImage = state["image"]

    side = st.sidebar
    wanted = urlstate.take("model")
    if wanted:
        if wanted[0] in appkit.IMAGE_MODELS:
            state["model_name"] = wanted[0]
        else:
            urlstate.complain(f"The link names no model '{wanted[0]}'. The models are: "
                              + ", ".join(appkit.IMAGE_MODELS) + ".")
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

    wanted = urlstate.take("layer")
    if wanted:
        if appkit.has_layer(model, wanted[0]):
            state["layer"] = wanted[0]
        else:
            urlstate.complain(f"The link names no layer '{wanted[0]}' of {model.title}. Its usual layers: "
                              + ", ".join(model.preset_layers) + " (more under “Show all layers”).")
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
    wanted = urlstate.take("target")
    if wanted:
        index, message = urlstate.parse_target(wanted[0], model.class_names)
        if message:
            urlstate.complain(message)
        else:
            state["target"] = index
    choice = side.selectbox("Target class", appkit.target_options(probabilities, model.class_names), key="target",
                            persist_state="session",
                            format_func=lambda o: appkit.target_label(o, probabilities, model.class_names),
                            help="The class whose score is explained: the prediction, one of the top 5, "
                                 "or any ImageNet class (type to search).")
    target = int(probabilities.argmax()) if choice in (None, appkit.PREDICTED) else int(choice)
    state["selection"] = {"model_name": name, "model": model, "layer": layer, "target": target,
                          "target_name": model.class_names[target], "image": image, "probabilities": probabilities,
                          "predicted": choice in (None, appkit.PREDICTED)}
    urlstate.write({"sample": image.sample, "model": name, "layer": layer,
                    "target": None if choice in (None, appkit.PREDICTED) else str(target)})


page = st.navigation([p for p, _ in PAGES])
appkit.notfound.install([(p.title, p.url_path) for p, _ in PAGES])
if "_first_page" not in st.session_state:  # the session's first run: the URL it asked for
    st.session_state["_first_page"] = page.url_path
    st.session_state["_not_found"] = appkit.notfound.unknown_page(st.context.url, [p.url_path for p, _ in PAGES])
missing = st.session_state["_not_found"]
if missing and page.url_path == st.session_state["_first_page"]:  # until the visitor opens another page
    st.warning(f"Page not found: this app has no page “{missing}”. Here is *{page.title}*; "
               "the pages are in the sidebar.", icon=":material/link_off:")
try:
    if any(shared and p.url_path == page.url_path for p, shared in PAGES):
        shared_sidebar()
    page.run()
except appkit.ServiceBusy as exc:  # the compute service's queue is full: its message, not a traceback
    st.warning(str(exc), icon=":material/hourglass_top:")
finally:  # also after st.stop(): the run is over
    appkit.footer()
