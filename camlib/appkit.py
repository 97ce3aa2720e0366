"""Computation, figures and exports for the Streamlit app (``app.py`` and ``pages/``).

The pages hold layout only; everything they compute comes from here:

* **inputs**: :func:`read_upload` (bytes -> image or a user-facing error, never a traceback),
  :func:`sample_image`, :class:`CurrentImage` (the image shared by all pages);
* **models**: :func:`get_model` (loaded once per process, shared by every session: a ``CamModel`` is
  thread-safe and uses no hooks), :func:`model_status` (why a zoo model cannot be loaded here);
* **cached computations** (``st.cache_data``, keyed by model name, image hash and parameters, returning
  plain numpy arrays and dicts): :func:`predictions`, :func:`explanation`, :func:`activations`,
  :func:`shap_convergence`, :func:`faithfulness`;
* **figures** (plotly): :func:`coefficient_figure`, :func:`convergence_figure`,
  :func:`insertion_deletion_figure`;
* **exports**: :func:`overlay_png`, :func:`coefficients_csv`.

Progress bars: the slow methods report a fraction done through ``progress=``. A cached function
must not touch Streamlit elements created outside it (``st.cache_data`` records element calls made
during the function to replay them on a cache hit, and an outside element cannot be replayed), so
:func:`progress_bar` returns a callback that updates the bar *outside* the cache's recording context.
"""

from __future__ import annotations

import contextvars
import dataclasses
import inspect
import io
import math
import time
from typing import Callable, Sequence

import cv2
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch
from PIL import Image

import camlib
from camlib import metrics
from camlib.cam import saliency_maps
from camlib.images import ImageError, image_hash, load_image_with_notes, overlay, to_png_bytes
from camlib.zoo import MODELS, ModelUnavailableError

# -- constants -------------------------------------------------------------------------------------

DEFAULT_MODEL = "efficientnet_lite0"
#: Zoo models of ImageNet classifiers offered by the image pages (the VQA model has its own page).
IMAGE_MODELS: tuple[str, ...] = tuple(name for name in camlib.list_models() if name in MODELS)
DEFAULT_METHODS: tuple[str, ...] = ("gradcam", "gradcampp", "xgradcam", "scorecam", "ablationcam", "liftcam")
#: Methods that evaluate the network (or its tail) once per map: they get a progress bar and run last.
SLOW_METHODS = frozenset({"scorecam", "ablationcam", "shapcam"})
DEFAULT_SAMPLE = "chelsea"
#: Longest side of the working image (display, overlays). The model sees it resized to its input size.
WORK_SIDE = 512
#: Score-CAM / Ablation-CAM / SHAP-CAM chunk size (images or activation sets per forward pass).
BATCH_SIZE = 64
POSITIVE, NEGATIVE = "#e8593c", "#4c8ef5"
#: Session-state flag set by app.py on every run (see :func:`run_from_entrypoint`).
ENTRYPOINT_SEEN = "_entrypoint_seen"
#: The target picker's value for "the predicted class" (a selectbox shows None as 'no selection').
PREDICTED = -1


# -- small helpers ---------------------------------------------------------------------------------


def method_title(key: str) -> str:
    return camlib.get_method(key).title


def fmt(value, digits: int = 4) -> str:
    """A number for the screen: never 'nan' or 'inf' (shown as '—')."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "—"
    if not math.isfinite(value):
        return "—"
    return f"{value:.{digits}g}"


def fmt_fixed(value, decimals: int = 4) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "—"
    return f"{value:.{decimals}f}" if math.isfinite(value) else "—"


def fmt_percent(value, digits: int = 1) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "—"
    return f"{100 * value:.{digits}f}%" if math.isfinite(value) else "—"


def finite(array) -> np.ndarray:
    """A float array with NaN/inf replaced by 0 (a last guard before anything is drawn)."""
    return np.nan_to_num(np.asarray(array, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)


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


# -- page plumbing ---------------------------------------------------------------------------------


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


# -- the current image -----------------------------------------------------------------------------

Box = tuple[int, int, int, int]


@dataclasses.dataclass(frozen=True)
class CurrentImage:
    """The image all pages work on.

    ``image``: RGB, longest side at most :data:`WORK_SIDE` (what is shown and overlaid); ``key``: its
    hash (the cache key of every computation); ``size``: (width, height) of the original;
    ``boxes``: known object boxes (xmin, ymin, xmax, ymax), inclusive, in original pixels.
    """

    key: str
    image: Image.Image
    title: str
    source: str
    size: tuple[int, int]
    notes: tuple[str, ...] = ()
    boxes: tuple[Box, ...] = ()
    sample: str | None = None

    def with_boxes(self, boxes: Sequence[Box]) -> "CurrentImage":
        return dataclasses.replace(self, boxes=tuple(tuple(int(v) for v in b) for b in boxes))

    def boxes_at(self, height: int, width: int) -> list[Box]:
        """The boxes scaled from the original image to an (height, width) grid."""
        if not self.boxes:
            return []
        w0, h0 = self.size
        return [tuple(b) for b in metrics.scale_boxes(list(self.boxes), (h0, w0), (height, width)).tolist()]


def thumbnail(image: Image.Image, size: tuple[int, int] = (240, 180)) -> Image.Image:
    """A centre crop of ``image`` at ``size`` (width, height), so that gallery tiles line up."""
    from PIL import ImageOps

    return ImageOps.fit(image, size, Image.Resampling.LANCZOS)


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


def working_image(image: Image.Image) -> Image.Image:
    """``image`` downscaled (aspect kept) so that its longest side is at most :data:`WORK_SIDE`."""
    if max(image.size) <= WORK_SIDE:
        return image
    scale = WORK_SIDE / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def make_current(image: Image.Image, title: str, source: str, notes=(), boxes=(), sample=None) -> CurrentImage:
    work = working_image(image)
    return CurrentImage(key=image_hash(work), image=work, title=title, source=source, size=image.size,
                        notes=tuple(notes), boxes=tuple(boxes), sample=sample)


@dataclasses.dataclass(frozen=True)
class UploadResult:
    """What became of an upload: an image and notes, or an error message for the user."""

    image: Image.Image | None
    notes: tuple[str, ...] = ()
    error: str | None = None


def read_upload(data: bytes | None, name: str = "") -> UploadResult:
    """Turn uploaded bytes into an RGB image and notes, or a clear error; never raises.

    Every check of :func:`camlib.images.load_image_with_notes` applies (size caps before decoding,
    decompression bombs, truncated files, 16-bit, CMYK, palettes with transparency, animations,
    EXIF rotation, grayscale); anything unexpected still ends in a message, not a traceback.
    """
    label = f" '{name}'" if name else ""
    if data is None:
        return UploadResult(None, error="No file was received.")
    try:
        image, notes = load_image_with_notes(bytes(data))
    except ImageError as exc:
        return UploadResult(None, error=f"Could not use{label}: {exc}")
    except Exception as exc:  # a decoder bug or an exotic file: still a message, not a traceback
        return UploadResult(None, error=f"Could not use{label}: the file could not be decoded as an image "
                                        f"({type(exc).__name__}).")
    return UploadResult(image, tuple(notes))


def upload_to_current(data: bytes, name: str) -> tuple[CurrentImage | None, UploadResult]:
    result = read_upload(data, name)
    if result.image is None:
        return None, result
    current = make_current(result.image, title=name or "uploaded image",
                           source=f"your upload ({result.image.width}×{result.image.height} px)",
                           notes=result.notes)
    return current, result


@st.cache_resource(show_spinner=False)
def sample_image(key: str) -> CurrentImage:
    """A gallery sample (from scikit-image's bundled photos, offline) with its boxes."""
    from camlib.samples import load_sample

    image, sample = load_sample(key)
    notes = (sample.note,) if sample.note else ()
    return make_current(image, title=sample.title, source=sample.source, notes=notes,
                        boxes=sample.boxes, sample=key)


@st.cache_resource(show_spinner=False)
def sample_list() -> list:
    from camlib.samples import list_samples

    return list_samples()


# -- models ----------------------------------------------------------------------------------------


@st.cache_resource(show_spinner=False, max_entries=3)
def get_model(name: str) -> camlib.CamModel:
    """A zoo model on the CPU or GPU, loaded once per server process and shared by all sessions.

    Raises ``camlib.ModelUnavailableError`` when its weights are not on this machine (not cached).
    """
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
    spec = MODELS.get(name)
    if spec is None:
        return f"unknown model {name!r}"
    if spec.offline:
        return None
    try:
        weights_enum = inspect.getclosurevars(spec.build).nonlocals["weights_enum"]
        import torchvision.models as tvm

        url = getattr(tvm, weights_enum).IMAGENET1K_V1.url
        from camlib.zoo import _ensure_cached  # TODO(lead): a public camlib.zoo.weights_status(name)

        _ensure_cached(url)
    except ModelUnavailableError as exc:
        return str(exc)
    except Exception:  # cannot tell without loading: let the load itself report
        return None
    return None


def model_title(name: str) -> str:
    spec = MODELS.get(name)
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


# -- cached computations ---------------------------------------------------------------------------


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
                permutations: int = 10, seed: int = 0, _progress=None, question: str | None = None) -> dict:
    """One method's explanation as plain arrays (VQA: of the answer to ``question``, held fixed).

    Keys: ``method``, ``title``, ``layer``, ``target``, ``coefficients`` (K,) float64, ``cam`` (h, w),
    ``saliency`` (H, W) float32 in [0, 1] at the model's input size, ``constant`` (bool: the map is
    all zero), ``seconds`` (computation time), ``local_accuracy`` ((Σα, F^c(A) - F^c(0)) for LIFT-CAM,
    else None). Raises ValueError (e.g. CAM on a nonlinear tail) with a message for the user.
    """
    model = get_model(model_name)
    options = {"permutations": int(permutations), "seed": int(seed)} if method == "shapcam" else {}
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


@st.cache_data(show_spinner=False, max_entries=32)
def shap_convergence(model_name: str, image_key: str, _image: Image.Image, layer: str, target: int,
                     permutations: int, seeds: int, _progress=None) -> dict:
    """SHAP-CAM_|Π| for |Π| = 1..``permutations`` and ``seeds`` seeds (0, 1, ...), summarised.

    Returns ``perms`` (P,), ``cos_lift`` and ``cos_pooled`` (S, P): the cosine similarity of each
    running estimate to LIFT-CAM's coefficients and to the pooled estimate (all seeds' orderings
    together, S·P of them), ``pooled`` (K,), ``snapshots`` {|Π|: α (K,)} of seed 0 and ``seconds``.
    """
    model = get_model(model_name)
    x = _tensor(_image, model)
    lift = camlib.explain(model, x, "liftcam", layer=layer, target=int(target)).coefficients.double().cpu()
    start = time.perf_counter()
    runs = []
    for s in range(int(seeds)):
        def report(fraction: float, s=s) -> None:
            if _progress is not None:
                _progress((s + fraction) / seeds)
        exp = camlib.explain(model, x, "shapcam", layer=layer, target=int(target), batch_size=BATCH_SIZE,
                             progress=report, permutations=int(permutations), seed=s)
        runs.append(exp.info["running"][:, 0].double().cpu())  # (P, K)
    running = torch.stack(runs)  # (S, P, K)
    pooled = running[:, -1].mean(0)
    perms = np.arange(1, int(permutations) + 1)
    snapshots = {int(p): finite(running[0, p - 1].numpy()) for p in snapshot_counts(int(permutations))}
    return {
        "perms": perms,
        "cos_lift": finite(metrics.cosine_similarity(running, lift).numpy()),
        "cos_pooled": finite(metrics.cosine_similarity(running, pooled).numpy()),
        "pooled": finite(pooled.numpy()),
        "lift": finite(lift.numpy()),
        "snapshots": snapshots,
        "seconds": time.perf_counter() - start,
    }


def snapshot_counts(permutations: int) -> list[int]:
    """|Π| values whose SHAP-CAM maps are shown: 1, 10, 100, ... up to and including the maximum."""
    counts = [p for p in (1, 5, 10, 50, 100, 500) if p < permutations][-3:]
    return [*counts, permutations]


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


# -- images and exports ----------------------------------------------------------------------------


def overlay_image(image: Image.Image, saliency: np.ndarray, alpha: float, colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """The heatmap blended over the image at the image's own size (uint8 RGB)."""
    return overlay(np.asarray(image.convert("RGB")), finite(saliency), alpha=float(alpha), colormap=colormap)


def activation_overlay(image: Image.Image, activation01: np.ndarray) -> np.ndarray:
    """One activation map (already scaled to [0, 1]) over the image, in viridis (not the CAM colours)."""
    return overlay_image(image, activation01, 0.6, colormap=cv2.COLORMAP_VIRIDIS)


def draw_boxes(image: np.ndarray | Image.Image, boxes: Sequence[Box], color=(80, 255, 120)) -> np.ndarray:
    out = np.array(image, dtype=np.uint8, copy=True)
    thickness = max(1, round(max(out.shape[:2]) / 200))
    for x0, y0, x1, y1 in boxes:
        cv2.rectangle(out, (int(x0), int(y0)), (int(x1), int(y1)), color, thickness)
    return out


def overlay_png(image: Image.Image, saliency: np.ndarray, alpha: float) -> bytes:
    return to_png_bytes(overlay_image(image, saliency, alpha))


def coefficients_csv(results: dict[str, dict], model_name: str, class_names: Sequence[str]) -> bytes:
    """All methods' coefficients in long form: model, layer, target, method, map, alpha, share, rank."""
    frames = []
    for key, result in results.items():
        table = coefficient_table(result["coefficients"])
        table.insert(0, "method", key)
        table.insert(0, "target_name", class_names[result["target"]])
        table.insert(0, "target", result["target"])
        table.insert(0, "layer", result["layer"])
        table.insert(0, "model", model_name)
        frames.append(table)
    if not frames:
        return b""
    buffer = io.StringIO()
    pd.concat(frames, ignore_index=True).to_csv(buffer, index=False, float_format="%.8g")
    return buffer.getvalue().encode("utf-8")


# -- figures ---------------------------------------------------------------------------------------


def coefficient_figure(coefficients: np.ndarray, top_k: int, title: str = "") -> go.Figure:
    """Bars of the top-``top_k`` maps by |α|, coloured by sign; hover: map index, α, share of Σα."""
    table = coefficient_table(coefficients)
    top = table.sort_values("rank").head(max(1, int(top_k)))
    colors = [POSITIVE if a >= 0 else NEGATIVE for a in top["alpha"]]
    fig = go.Figure(go.Bar(
        x=[f"A{m}" for m in top["map"]], y=top["alpha"], marker={"color": colors},
        customdata=np.stack([top["map"], top["alpha"], 100 * top["share"]], axis=1),
        hovertemplate="map A<sub>%{customdata[0]:d}</sub><br>α = %{customdata[1]:.4g}"
                      "<br>share of Σα = %{customdata[2]:.2f}%<extra></extra>",
    ))
    fig.update_layout(title=title or None, height=300, margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
                      xaxis={"title": f"top {len(top)} of {len(table)} maps by |α| (red: α > 0, blue: α < 0)",
                             "type": "category"},
                      yaxis={"title": "α"}, showlegend=False)
    return fig


def selected_map(event) -> int | None:
    """The map index of the bar picked in a coefficient chart (plotly selection event), if any.

    Reads the bar's category label ("A17"), else the first entry of its customdata (a list, or a dict
    keyed by position as the browser sends it); anything unexpected counts as no selection.
    """
    try:
        points = event.selection.points if hasattr(event, "selection") else event["selection"]["points"]
    except (KeyError, TypeError, AttributeError):
        return None
    for point in points or []:
        try:
            label = str(point.get("x", ""))
            if label.startswith("A") and label[1:].isdigit():
                return int(label[1:])
            data = point.get("customdata")
            if isinstance(data, dict):
                data = [data[key] for key in sorted(data, key=lambda key: int(key))]
            first = float(data[0]) if isinstance(data, (list, tuple)) and data else float("nan")
            if math.isfinite(first):
                return int(first)
        except (TypeError, ValueError, KeyError, AttributeError):
            continue
    return None


def convergence_figure(result: dict, reference: str, lines: dict[str, float]) -> go.Figure:
    """Cosine similarity of SHAP-CAM_|Π| to ``reference`` ("lift" or "pooled") against |Π|: the mean
    over seeds with a ±1 std band, and horizontal lines for other methods' coefficients."""
    curves = result["cos_lift"] if reference == "lift" else result["cos_pooled"]
    perms = result["perms"]
    mean, std = curves.mean(0), curves.std(0)
    seeds = curves.shape[0]
    name = "LIFT-CAM" if reference == "lift" else f"SHAP-CAM pooled ({seeds}×{perms[-1]} orderings)"
    fig = go.Figure()
    if seeds > 1:
        fig.add_trace(go.Scatter(x=np.concatenate([perms, perms[::-1]]), y=np.concatenate([mean + std, (mean - std)[::-1]]),
                                 fill="toself", fillcolor="rgba(232,89,60,0.25)", line={"width": 0},
                                 hoverinfo="skip", name=f"± 1 std over {seeds} seeds"))
    fig.add_trace(go.Scatter(x=perms, y=mean, mode="lines", line={"color": POSITIVE, "width": 2},
                             name=f"SHAP-CAM<sub>|Π|</sub> (mean of {seeds} seed{'s' if seeds > 1 else ''})",
                             hovertemplate="|Π| = %{x}<br>cos = %{y:.4f}<extra></extra>"))
    palette = ["#7fc97f", "#beaed4", "#fdc086", "#ffff99", "#4c8ef5"]
    for i, (label, value) in enumerate(lines.items()):
        fig.add_hline(y=value, line={"dash": "dash", "color": palette[i % len(palette)], "width": 1.5},
                      annotation_text=f"{label}: {value:.3f}", annotation_position="bottom right" if i % 2 else "top right")
    fig.update_layout(height=400, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      xaxis={"title": "number of orderings |Π|", "type": "log" if perms[-1] >= 20 else "linear"},
                      yaxis={"title": f"cosine similarity to {name}"},
                      legend={"orientation": "h", "y": -0.25})
    return fig


def insertion_deletion_figure(result: dict) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=result["deltas"], y=result["ins"], mode="lines+markers", name=f"insertion (AUC {result['ins_auc']:.3f})",
                             line={"color": POSITIVE}, fill="tozeroy", fillcolor="rgba(232,89,60,0.15)"))
    fig.add_trace(go.Scatter(x=result["deltas"], y=result["del"], mode="lines+markers", name=f"deletion (AUC {result['del_auc']:.3f})",
                             line={"color": NEGATIVE}, fill="tozeroy", fillcolor="rgba(76,142,245,0.15)"))
    fig.update_layout(height=360, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      xaxis={"title": "δ: fraction of pixels kept (insertion) / removed (deletion), most salient first"},
                      yaxis={"title": "target probability", "rangemode": "tozero"},
                      legend={"orientation": "h", "y": -0.3})
    return fig


def probability_figure(table: pd.DataFrame) -> go.Figure:
    fig = go.Figure(go.Bar(x=table["probability"][::-1], y=table["class"][::-1], orientation="h",
                           marker={"color": POSITIVE}, text=[fmt_percent(p) for p in table["probability"][::-1]],
                           textposition="auto", hovertemplate="%{y}: %{x:.2%}<extra></extra>"))
    fig.update_layout(height=220, margin={"l": 10, "r": 10, "t": 10, "b": 10}, xaxis={"range": [0, 1], "tickformat": ".0%"})
    return fig
