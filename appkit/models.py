"""The models the app offers: loaded once per process and shared by every session."""

from __future__ import annotations


import streamlit as st

import camlib
from camlib import zoo


DEFAULT_MODEL = "efficientnet_lite0"
#: Zoo models of ImageNet classifiers offered by the image pages (the VQA model has its own page).
IMAGE_MODELS: tuple[str, ...] = tuple(camlib.list_models("imagenet"))


@st.cache_resource(show_spinner=False, max_entries=3)
def get_model(name: str) -> camlib.CamModel:
    """A zoo model on the CPU or GPU, loaded once per server process and shared by all sessions.

    The loading runs as a job of the compute service (:mod:`appkit.service`), inside its CPU budget.
    Raises ``RuntimeError`` naming ``ModelUnavailableError`` and its reason when the weights are not
    on this machine (not cached).
    """
    from appkit.service import service

    key = ("model", name)
    try:
        return service().run(key, lambda progress: _load(name), label=f"loading {name}")
    finally:
        service().forget(key)  # st.cache_resource keeps the model; the result table need not


def _load(name: str) -> camlib.CamModel:
    model = camlib.load_model(name)
    # Warm up the default layer's split (fx tracing) so the first explanation is not slower.
    model.split(model.default_layer)
    return model


@st.cache_resource(show_spinner=False, ttl=600)
def model_status(name: str) -> str | None:
    """Why model ``name`` cannot be loaded here (the ``ModelUnavailableError`` message), or None.

    Checked without loading: bundled weights are always there; torchvision weights must be in the
    torch hub cache (or the machine online). Rechecked every 10 minutes, so weights copied into the
    cache folder are picked up without a restart.
    """
    return zoo.weights_status(name)


def model_title(name: str) -> str:
    spec = zoo.MODELS.get(name)
    return spec.title if spec else name


def layer_options(model: camlib.CamModel, show_all: bool, current: str | None = None) -> list[str]:
    """Layer names for the layer picker: the model's presets first, then (``show_all``) every other
    explainable layer from the output back to the input; the current layer is always kept."""
    names = list(model.preset_layers)
    if show_all:
        names += [info.name for info in reversed(model.layers) if info.name not in names]
    elif current and current not in names and any(info.name == current for info in model.layers):
        names.append(current)
    return names


def layer_label(model: camlib.CamModel, name: str) -> str:
    return model.layer_info(name).label


def tail_note(model: camlib.CamModel, name: str) -> str:
    info = model.layer_info(name)
    c, h, w = info.shape
    if info.linear_tail:
        return (f"**{c} maps of {h}×{w}.** The network after this layer is linear (pooling + fully connected): "
                "LIFT-CAM gives the exact SHAP values here, and SHAP-CAM needs a single ordering.")
    return (f"**{c} maps of {h}×{w}.** The network after this layer is nonlinear: LIFT-CAM approximates the "
            "SHAP values (compare on the *SHAP-CAM vs LIFT-CAM* page).")


def contrast_layer(model: camlib.CamModel, layer: str) -> str | None:
    """The layer to compare ``layer`` with: after a layer with a linear tail, the first preset layer
    whose tail is nonlinear (where the methods part ways); after a nonlinear one, the first preset
    with a linear tail. None when the model has no such preset."""
    linear = model.layer_info(layer).linear_tail
    return next((n for n in model.preset_layers if n != layer and model.layer_info(n).linear_tail != linear), None)


def has_layer(model: camlib.CamModel, name: str) -> bool:
    """Whether ``name`` is a layer the model can be explained at (a preset name or any CAM layer)."""
    try:
        model.layer_info(name)
    except (ValueError, KeyError):
        return False
    return True
