"""Cached computations (``st.cache_data``: keyed by model name, image hash and parameters; plain numpy
results)."""

from __future__ import annotations

import time
from typing import Sequence

import cv2
import numpy as np
import pandas as pd
import streamlit as st
import torch
from PIL import Image

from appkit.format import finite, fmt_percent
from appkit.inputs import Box
from appkit.models import get_model
from appkit.pages import method_title
import camlib
from camlib import metrics
from camlib.cam import saliency_maps


#: Score-CAM / Ablation-CAM / SHAP-CAM chunk size (images or activation sets per forward pass).
BATCH_SIZE = 64
#: The target picker's value for "the predicted class" (a selectbox shows None as 'no selection').
PREDICTED = -1


def _tensor(image: Image.Image, model: camlib.CamModel) -> torch.Tensor:
    from camlib.images import to_tensor01

    return to_tensor01(image, model.input_size)


def _inputs(question: str | None) -> dict:
    """The model inputs besides the image: the question of the VQA model (held fixed), else none."""
    return {} if question is None else {"question": question}


@st.cache_data(show_spinner=False, max_entries=64)
def predictions(model_name: str, image_key: str, _image: Image.Image, question: str | None = None) -> np.ndarray:
    """Softmax probabilities (n_classes,) of the model on the image (VQA: answering ``question``)."""
    model = get_model(model_name)
    x = _tensor(_image, model)[None].to(model.device)
    extra, _ = model.extra_inputs(1, **_inputs(question))
    logits = model.predict(x, *extra)[0].float()
    return finite(torch.softmax(logits, 0).cpu().numpy())


def top_classes(probabilities: np.ndarray, class_names: Sequence[str], k: int = 5) -> pd.DataFrame:
    order = np.argsort(-probabilities)[:k]
    return pd.DataFrame({"rank": np.arange(1, len(order) + 1), "class": [class_names[i] for i in order],
                         "index": order, "probability": probabilities[order]})


def target_options(probabilities: np.ndarray, class_names: Sequence[str]) -> list:
    """Choices for the target picker: :data:`PREDICTED`, the top 5, then all classes by name."""
    top = [int(i) for i in np.argsort(-probabilities)[:5]]
    rest = sorted((i for i in range(len(class_names)) if i not in top), key=lambda i: class_names[i].lower())
    return [PREDICTED, *top, *rest]


def target_label(option, probabilities: np.ndarray, class_names: Sequence[str], noun: str = "class") -> str:
    """A target picker entry: the prediction (``noun``: "class", or "answer" for VQA) or one class."""
    if option is None or option == PREDICTED:
        top = int(np.argmax(probabilities))
        return f"Predicted {noun}: {class_names[top]} ({fmt_percent(probabilities[top])})"
    return f"{class_names[option]} ({fmt_percent(probabilities[option])})"


@st.cache_data(show_spinner=False, max_entries=256)
def explanation(model_name: str, image_key: str, _image: Image.Image, method: str, layer: str, target: int,
                options: dict | None = None, _progress=None, question: str | None = None) -> dict:
    """One method's explanation as plain arrays (VQA: of the answer to ``question``, held fixed).

    ``options``: the method's options ({name: value}, see ``camlib.get_method(method).options``;
    missing ones take their defaults). Keys: ``method``, ``title``, ``layer``, ``target``,
    ``coefficients`` (K,) float64, ``cam`` (h, w), ``saliency`` (H, W) float32 in [0, 1] at the
    model's input size, ``constant`` (bool: the map is all zero), ``seconds`` (computation time),
    ``local_accuracy`` ((Σα, F^c(A) - F^c(0)) for LIFT-CAM, else None). Raises ValueError (e.g. CAM
    on a nonlinear tail, an option out of its bounds) with a message for the user.
    """
    model = get_model(model_name)
    options = camlib.get_method(method).resolve_options(dict(options or {}))
    start = time.perf_counter()
    exp = camlib.explain(model, _tensor(_image, model), method, layer=layer, target=int(target),
                         batch_size=BATCH_SIZE, progress=_progress, **options, **_inputs(question))
    seconds = time.perf_counter() - start
    local = exp.info.get("local_accuracy")
    return {
        "method": method,
        "title": method_title(method),
        "layer": exp.layer,
        "target": int(exp.target),
        "coefficients": finite(exp.coefficients.cpu().numpy()),
        "cam": finite(exp.cam.cpu().numpy()).astype(np.float32),
        "saliency": np.clip(finite(exp.saliency.cpu().numpy()), 0, 1).astype(np.float32),
        "constant": bool(exp.constant),
        "seconds": float(seconds),
        "local_accuracy": None if local is None else (float(local[0].reshape(-1)[0]), float(local[1].reshape(-1)[0])),
    }


@st.cache_data(show_spinner=False, max_entries=32)
def activations(model_name: str, image_key: str, _image: Image.Image, layer: str,
                question: str | None = None) -> np.ndarray:
    """The activation maps A = f^[l](x), (K, h, w) float32 (VQA: they do not depend on the question,
    but the network's head takes one)."""
    model = get_model(model_name)
    split = model.split(layer)
    extra, _ = model.extra_inputs(1, **_inputs(question))
    with torch.inference_mode():
        a, *_ = split.head(model.normalize(_tensor(_image, model)[None].to(model.device)), *extra)
    return finite(a[0].float().cpu().numpy()).astype(np.float32)


def map_saliency(coefficients: np.ndarray, maps: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, bool]:
    """s(u(ReLU(Σ α_k A_k))) at ``size`` (H, W) from coefficients and maps (numpy in, numpy out)."""
    alpha = torch.as_tensor(np.asarray(coefficients, dtype=np.float32))[None]
    a = torch.as_tensor(np.asarray(maps, dtype=np.float32))[None]
    _, saliency, constant = saliency_maps(alpha, a, tuple(size))
    return np.clip(finite(saliency[0].numpy()), 0, 1).astype(np.float32), bool(constant[0])


def activation_map(maps: np.ndarray, k: int) -> tuple[np.ndarray, bool]:
    """A_k min-max normalised to [0, 1] (all zero and flagged when the map is constant)."""
    a = finite(maps[k])
    low, high = float(a.min()), float(a.max())
    if high - low <= 1e-12:
        return np.zeros_like(a, dtype=np.float32), True
    return ((a - low) / (high - low)).astype(np.float32), False


def coefficient_table(coefficients: np.ndarray) -> pd.DataFrame:
    """Per map: index, α, share of Σα (NaN-free: 0 when Σα is ~0), rank by |α|."""
    alpha = finite(coefficients)
    total = float(alpha.sum())
    share = alpha / total if abs(total) > 1e-12 else np.zeros_like(alpha)
    order = np.argsort(-np.abs(alpha), kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(1, len(order) + 1)
    return pd.DataFrame({"map": np.arange(len(alpha)), "alpha": alpha, "share": share, "rank": rank})


def top_maps(coefficients: np.ndarray, k: int) -> list[int]:
    return [int(i) for i in np.argsort(-np.abs(finite(coefficients)), kind="stable")[:k]]


def cosine(a, b) -> float:
    return float(metrics.cosine_similarity(torch.as_tensor(finite(a)), torch.as_tensor(finite(b))))


@st.cache_data(show_spinner=False, max_entries=64)
def faithfulness(model_name: str, image_key: str, _image: Image.Image, method: str, layer: str, target: int,
                 steps: int, _saliency: np.ndarray, _progress=None) -> dict:
    """The paper's faithfulness and localisation metrics of one explanation of one image.

    ``_saliency`` is the method's s(u(L)) at the model's input size (unhashed: it is determined by the
    other arguments). Returns ``Y``, ``O``, ``D`` (target probabilities of x, e = s(u(L))∘x and
    e_inv = (1 - s(u(L)))∘x), ``ic``, ``ad``, ``add`` (Eqs. 11-13, per image), insertion/deletion
    ``deltas``, ``ins``, ``del``, ``ins_auc``, ``del_auc``. The pointing game is :func:`pointing_game`.
    """
    model = get_model(model_name)
    images = _tensor(_image, model)[None].to(model.device)
    sal = torch.as_tensor(np.asarray(_saliency, dtype=np.float32))[None].to(model.device)
    tgt = torch.tensor([int(target)], device=model.device)
    fn = model.logits_fn()

    def part(lo, hi):
        return None if _progress is None else (lambda f: _progress(lo + (hi - lo) * f))

    scores = metrics.confidence_scores(fn, images, sal, tgt, progress=part(0.0, 0.05))
    curves = metrics.insertion_deletion(fn, images, sal, tgt, steps=int(steps),
                                        progress=part(0.05, 1.0))
    return {
        "Y": float(scores.Y[0]), "O": float(scores.O[0]), "D": float(scores.D[0]),
        "ic": float(scores.ic[0]), "ad": float(scores.ad[0]), "add": float(scores.add[0]),
        "deltas": finite(curves.deltas.cpu().numpy()),
        "ins": finite(curves.ins_curve[0].cpu().numpy()), "del": finite(curves.del_curve[0].cpu().numpy()),
        "ins_auc": float(curves.ins_auc[0]), "del_auc": float(curves.del_auc[0]),
    }


def pointing_game(saliency: np.ndarray, boxes: Sequence[Box]) -> float | None:
    """Energy-based pointing game (Eq. 14): the share of the map's energy inside the boxes, which must
    be in the saliency's pixel coordinates; None without boxes."""
    if not boxes:
        return None
    sal = torch.as_tensor(np.clip(finite(saliency), 0, 1).astype(np.float32))[None]
    return float(metrics.energy_pointing_game(sal, [[list(b) for b in boxes]])[0])


def explanation_images(image: Image.Image, saliency: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """e = s(u(L)) ∘ x and e_inv = (1 - s(u(L))) ∘ x at the working image's size (Eq. 10), uint8."""
    x = np.asarray(image.convert("RGB"), dtype=np.float32)
    s = cv2.resize(np.clip(finite(saliency), 0, 1).astype(np.float32), (x.shape[1], x.shape[0]),
                   interpolation=cv2.INTER_LINEAR)[..., None]
    return (np.rint(s * x).clip(0, 255).astype(np.uint8), np.rint((1 - s) * x).clip(0, 255).astype(np.uint8))
