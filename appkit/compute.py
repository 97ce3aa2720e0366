"""What the pages compute, as jobs of the compute service (:mod:`appkit.service`): keyed by model name,
image hash and parameters, returning plain numpy arrays and dicts.

Every ``submit_*`` returns a :class:`appkit.service.Job` at once (the page shows its queue position
and progress while it runs); the functions without the prefix (``explanation``, ``predictions``,
``activations``, ``faithfulness``; :func:`appkit.estimators.estimator_comparison`) wait for it and return the result, or raise
``ValueError`` with the message for the user.
"""

from __future__ import annotations

import time
from typing import Sequence

import cv2
import numpy as np
import pandas as pd
import torch
from PIL import Image

from appkit import costs
from appkit.format import finite, fmt_percent
from appkit.inputs import Box
from appkit.models import get_model
from appkit.pages import method_title
from appkit.service import Lane, Progress, service
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


def lane_of(method: str) -> Lane:
    """Single-pass methods are interactive; the others (per map, per ordering, per sample) slow."""
    return Lane.INTERACTIVE if camlib.get_method(method).cost is camlib.methods.Cost.ONE_PASS else Lane.SLOW


# -- predictions and activation maps ---------------------------------------------------------------

def submit_predictions(model_name: str, image_key: str, image: Image.Image, question: str | None = None):
    model = get_model(model_name)

    def run(progress: Progress) -> np.ndarray:
        x = _tensor(image, model)[None].to(model.device)
        extra, _ = model.extra_inputs(1, **_inputs(question))
        logits = model.predict(x, *extra)[0].float()
        return finite(torch.softmax(logits, 0).cpu().numpy())

    return service().submit(("predict", model_name, image_key, question), run,
                            label=f"predictions · {model_name}")


def predictions(model_name: str, image_key: str, _image: Image.Image, question: str | None = None) -> np.ndarray:
    """Softmax probabilities (n_classes,) of the model on the image (VQA: answering ``question``)."""
    return _result(submit_predictions(model_name, image_key, _image, question))


def _activations_array(a: torch.Tensor) -> np.ndarray:
    """A (K, h, w) as the activation-maps result: float32, finite."""
    return finite(a.detach().float().cpu().numpy()).astype(np.float32)


def _activations_job(model_name: str, image_key: str, image: Image.Image, layer: str,
                     question: str | None = None, group: tuple | None = None) -> tuple:
    """(key, fn, submit keywords) of the activation maps' job. With ``group`` (a view's
    :func:`view_group`), the view's single-pass job that starts first takes it and ends it with
    the A of its own head pass (:func:`_run_single_pass`); alone it makes a head pass of its own."""
    model = get_model(model_name)

    def run(progress: Progress) -> np.ndarray:
        split = model.split(layer)
        extra, _ = model.extra_inputs(1, **_inputs(question))
        with torch.inference_mode():
            a, *_ = split.head(model.normalize(_tensor(image, model)[None].to(model.device)), *extra)
        return _activations_array(a[0])

    # The maps do not depend on the question (the VQA head takes one, but A is the image encoder's).
    return (("activations", model_name, image_key, layer), run,
            {"label": f"activation maps · {model_name} · {layer}", "group": group})


def submit_activations(model_name: str, image_key: str, image: Image.Image, layer: str, question: str | None = None):
    """The activation maps' job: the one already queued, running or finished (e.g. queued with the
    view's maps by :func:`plan_explanations`), else a new one."""
    key, run, keywords = _activations_job(model_name, image_key, image, layer, question)
    return service().submit(key, run, **keywords)


def activations(model_name: str, image_key: str, _image: Image.Image, layer: str,
                question: str | None = None) -> np.ndarray:
    """The activation maps A = f^[l](x), (K, h, w) float32."""
    return _result(submit_activations(model_name, image_key, _image, layer, question))


# -- explanations ----------------------------------------------------------------------------------

def explanation_key(model_name: str, image_key: str, method: str, layer: str, target: int,
                    options: dict | None = None, question: str | None = None) -> tuple:
    """The service key of one explanation (options resolved: defaults spelled out)."""
    resolved = camlib.get_method(method).resolve_options(dict(options or {}))
    return ("explain", model_name, image_key, layer, int(target), camlib.get_method(method).key,
            tuple(sorted(resolved.items())), question)


def find_explanation(model_name: str, image_key: str, method: str, layer: str, target: int,
                     options: dict | None = None, question: str | None = None):
    """The explanation's job if it is queued, running or finished (anyone's), else None. ValueError
    for options out of their bounds."""
    return service().lookup(explanation_key(model_name, image_key, method, layer, target, options, question))


def submit_explanation(model_name: str, image_key: str, image: Image.Image, method: str, layer: str, target: int,
                       options: dict | None = None, question: str | None = None):
    """The job of one explanation (see :func:`explanation` for the result). ValueError for options
    out of their bounds (before anything is queued).

    A single-pass job, when it starts, also takes the single-pass explanations of the same image,
    layer and target still waiting in the queue (its group: :meth:`appkit.service.ComputeService.claim`) and
    computes them all from one network pass (``camlib.explain_many``): a new view's default maps
    cost one head pass, not one each (:func:`plan_explanations` queues them together)."""
    key, run, keywords = _explanation_job(model_name, image_key, image, method, layer, target, options, question)
    return service().submit(key, run, **keywords)


def _explanation_job(model_name: str, image_key: str, image: Image.Image, method: str, layer: str, target: int,
                     options: dict | None = None, question: str | None = None) -> tuple:
    """(key, fn, submit keywords) of one explanation's job."""
    m = camlib.get_method(method)
    key = explanation_key(model_name, image_key, method, layer, target, options, question)
    resolved = dict(key[6])
    model = get_model(model_name)
    expected = costs.expected_seconds(model_name, model, layer, m.key, resolved, question)

    def run(progress: Progress) -> dict:
        if m.cost is camlib.methods.Cost.ONE_PASS:
            return _run_single_pass(model_name, model, image, key, progress)
        start = time.perf_counter()
        exp = camlib.explain(model, _tensor(image, model), m.key, layer=layer, target=int(target),
                             batch_size=BATCH_SIZE, progress=progress, **resolved, **_inputs(question))
        seconds = time.perf_counter() - start
        costs.learn(model_name, model, layer, m.key, resolved, seconds)
        return _explanation_result(m, exp, seconds)

    one_pass = m.cost is camlib.methods.Cost.ONE_PASS
    group = view_group(model_name, image_key, layer, target, question) if one_pass else None
    return key, run, {"label": f"{m.title} · {model_name} · {layer}", "lane": lane_of(m.key), "expected": expected,
                      "group": group}


def view_group(model_name: str, image_key: str, layer: str, target: int, question: str | None = None) -> tuple:
    """The service group of one view's single-pass work (its maps, and the activation maps queued
    with them): the job of the group that starts first computes all of it from one head pass."""
    return ("single-pass view", model_name, image_key, layer, int(target), question)


def _run_single_pass(model_name: str, model, image: Image.Image, key: tuple, progress: Progress) -> dict:
    """The job of ``key`` (a single-pass explanation) with its queued siblings, from one head pass;
    the siblings are ended here with their own results: the view's other single-pass maps, and its
    activation maps (the A of that head pass). If the joint call fails (e.g. CAM on a nonlinear
    tail), each method is computed alone, so each gets its own result or message; the activation
    maps then come from the first that succeeds (none: their job goes back to the queue)."""
    _, _, _, layer, target, method, options, question = key
    claimed = service().claim()  # the job's group
    siblings = [job for job in claimed if job.key[0] == "explain"]
    maps_jobs = [job for job in claimed if job.key[0] == "activations"]
    jobs = {method: None, **{job.key[5]: job for job in siblings}}
    options_of = {method: dict(options), **{job.key[5]: dict(job.key[6]) for job in siblings}}
    x = _tensor(image, model)
    start = time.perf_counter()
    maps = None  # A of the head pass, for the activation maps' job
    try:
        many = camlib.explain_many(model, x, list(jobs), layer=layer, target=int(target), options=options_of,
                                   batch_size=BATCH_SIZE, progress=progress, **_inputs(question))
        seconds = time.perf_counter() - start
        results = {name: _explanation_result(camlib.get_method(name), exp, seconds) for name, exp in many.items()}
        maps = next(iter(many.values())).activations
    except Exception:  # noqa: BLE001 - computed one by one below, each with its own outcome
        if not siblings and not maps_jobs:
            raise
        results = {}
        for name in jobs:
            one = time.perf_counter()
            try:
                exp = camlib.explain(model, x, name, layer=layer, target=int(target), **options_of[name],
                                     **_inputs(question))
                results[name] = _explanation_result(camlib.get_method(name), exp, time.perf_counter() - one)
                maps = exp.activations if maps is None else maps
            except Exception as exc:  # noqa: BLE001 - becomes that job's failure
                results[name] = exc
    if maps is not None:
        for job in maps_jobs:  # unended when no method succeeded: back to the queue, to run alone
            service().complete(job, _activations_array(maps))
    if not siblings and not isinstance(results[method], BaseException):
        costs.learn(model_name, model, layer, method, dict(options), results[method]["seconds"])
    for name, job in jobs.items():
        if job is not None:
            outcome = results[name]
            if isinstance(outcome, BaseException):
                service().complete(job, exc=outcome)
            else:
                service().complete(job, outcome)
    own = results[method]
    if isinstance(own, BaseException):
        raise own
    return own


def _explanation_result(m, exp, seconds: float) -> dict:
    local = exp.info.get("local_accuracy")
    return {
        "method": m.key,
        "title": m.title,
        "layer": exp.layer,
        "target": int(exp.target),
        "coefficients": finite(exp.coefficients.cpu().numpy()),
        "cam": finite(exp.cam.cpu().numpy()).astype(np.float32),
        "saliency": np.clip(finite(exp.saliency.cpu().numpy()), 0, 1).astype(np.float32),
        "constant": bool(exp.constant),
        "seconds": float(seconds),
        "local_accuracy": None if local is None else (float(local[0].reshape(-1)[0]),
                                                      float(local[1].reshape(-1)[0])),
    }


#: A method that is not single-pass starts without a click when its expected time is at most this.
AUTO_START = 2.0


def plan_explanation(model_name: str, image_key: str, image: Image.Image, method: str, layer: str, target: int,
                     options: dict | None = None, question: str | None = None):
    """(job or None, key, expected seconds): the explanation's job when it exists (anyone's), is
    single-pass, was asked for by this session (:func:`appkit.pages.request`) or is expected to take
    at most :data:`AUTO_START` seconds; else None (the page offers a button, with the expected time).
    ValueError for options out of their bounds."""
    from appkit.pages import requested

    key = explanation_key(model_name, image_key, method, layer, target, options, question)
    job = service().lookup(key)
    if job is not None:
        return job, key, job.expected
    m = camlib.get_method(method)
    if m.cost is camlib.methods.Cost.ONE_PASS:
        return submit_explanation(model_name, image_key, image, method, layer, target, options, question), key, None
    seconds = costs.expected_seconds(model_name, get_model(model_name), layer, m.key, dict(key[6]), question, wait=True)
    if requested(key) or (seconds is not None and seconds <= AUTO_START):
        return submit_explanation(model_name, image_key, image, method, layer, target, options, question), key, seconds
    return None, key, seconds


def plan_explanations(model_name: str, image_key: str, image: Image.Image, methods, layer: str, target: int,
                      options: dict | None = None, question: str | None = None,
                      with_activations: bool = False) -> dict:
    """:func:`plan_explanation` for each method of one view ({method: (job or None, key, seconds), or
    the ValueError of options out of their bounds}; ``options``: {method: its options}). The
    single-pass ones are queued together (:meth:`appkit.service.ComputeService.submit_many`), so
    the first to start computes them all from one network pass; ``with_activations``: the view's
    activation maps too (from that same pass; :func:`submit_activations` then returns that job)."""
    options = options or {}
    plans: dict = {}
    single = []
    for method in methods:
        if camlib.get_method(method).cost is not camlib.methods.Cost.ONE_PASS:
            continue
        try:
            single.append((method, _explanation_job(model_name, image_key, image, method, layer, target,
                                                    options.get(method), question)))
        except ValueError as exc:
            plans[method] = exc
    extra = []
    if with_activations and single:  # last: a map's job starts first and takes it
        extra.append(_activations_job(model_name, image_key, image, layer, question,
                                      group=view_group(model_name, image_key, layer, target, question)))
    jobs = service().submit_many([spec for _, spec in single] + extra)
    for (method, spec), job in zip(single, jobs):
        plans[method] = (job, spec[0], None)
    for method in methods:
        if method not in plans:
            try:
                plans[method] = plan_explanation(model_name, image_key, image, method, layer, target,
                                                 options.get(method), question)
            except ValueError as exc:
                plans[method] = exc
    return {method: plans[method] for method in methods}


def explanation(model_name: str, image_key: str, _image: Image.Image, method: str, layer: str, target: int,
                options: dict | None = None, _progress=None, question: str | None = None) -> dict:
    """One method's explanation as plain arrays (VQA: of the answer to ``question``, held fixed).

    ``options``: the method's options ({name: value}, see ``camlib.get_method(method).options``;
    missing ones take their defaults). Keys: ``method``, ``title``, ``layer``, ``target``,
    ``coefficients`` (K,) float64, ``cam`` (h, w), ``saliency`` (H, W) float32 in [0, 1] at the
    model's input size, ``constant`` (bool: the map is all zero), ``seconds`` (compute time),
    ``local_accuracy`` ((Σα, F^c(A) - F^c(0)) for LIFT-CAM, else None). Raises ValueError (e.g. CAM
    on a nonlinear tail, an option out of its bounds) with a message for the user. ``_progress``
    receives the fraction done while it waits.
    """
    job = submit_explanation(model_name, image_key, _image, method, layer, target, options, question)
    return _result(job, _progress)


def _result(job, progress=None):
    """Wait for ``job`` (forwarding its progress to ``progress``) and return its result."""
    from appkit.service import result_of

    last = -1.0
    while not job.done.wait(0.1):
        if progress is not None and job.progress != last:
            last = job.progress
            progress(last)
    return result_of(job)


# -- what the pages draw from the results ----------------------------------------------------------

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


def varying_maps(maps: np.ndarray) -> np.ndarray:
    """(K,) bool: which activation maps are not constant on this image (a constant map, all zero
    after a ReLU, adds nothing to the picture L)."""
    flat = finite(maps).reshape(len(maps), -1)
    return (flat.max(1) - flat.min(1)) > 1e-12


def coefficient_table(coefficients: np.ndarray) -> pd.DataFrame:
    """Per map: index, α, share of Σ|α| (|α_k| / Σ_j |α_j|: meaningful whatever the signs; 0 when all
    α are 0), rank by |α|."""
    alpha = finite(coefficients)
    total = float(np.abs(alpha).sum())
    share = np.abs(alpha) / total if total > 0 else np.zeros_like(alpha)
    order = np.argsort(-np.abs(alpha), kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(1, len(order) + 1)
    return pd.DataFrame({"map": np.arange(len(alpha)), "alpha": alpha, "share": share, "rank": rank})


def top_maps(coefficients: np.ndarray, k: int) -> list[int]:
    return [int(i) for i in np.argsort(-np.abs(finite(coefficients)), kind="stable")[:k]]


def first_varying(choices: Sequence[int], maps: np.ndarray) -> int | None:
    """The first map of ``choices`` that varies on the image (else the first choice)."""
    varying = varying_maps(maps)
    return next((k for k in choices if varying[k]), choices[0] if choices else None)


def saliency_agreement(saliencies: Sequence[np.ndarray], stride: int = 4) -> float | None:
    """The lowest cosine similarity between two of the maps (1: all maps point alike); None for
    fewer than two maps, or when a map is all zero. The maps are compared on every ``stride``-th
    pixel (they are upsampled from a grid of a few cells, so nothing is lost), with elementwise
    sums rather than BLAS (the script thread must not start BLAS threads of its own)."""
    flat = [finite(np.asarray(s)[::stride, ::stride]).ravel() for s in saliencies]
    norms = [float(np.sqrt((f * f).sum())) for f in flat]
    if len(flat) < 2 or min(norms) == 0:
        return None
    return min(float((flat[i] * flat[j]).sum()) / (norms[i] * norms[j])
               for i in range(len(flat)) for j in range(i + 1, len(flat)))


def cosine(a, b) -> float:
    return float(metrics.cosine_similarity(torch.as_tensor(finite(a)), torch.as_tensor(finite(b))))


def submit_faithfulness(model_name: str, image_key: str, image: Image.Image, method: str, layer: str, target: int,
                        steps: int, saliency: np.ndarray, options: dict | None = None):
    """The job of :func:`faithfulness` (``saliency`` is the explanation's, determined by the rest of
    the key)."""
    model = get_model(model_name)
    key = ("faithfulness",) + explanation_key(model_name, image_key, method, layer, target, options)[1:] + (int(steps),)

    def run(progress: Progress) -> dict:
        images = _tensor(image, model)[None].to(model.device)
        sal = torch.as_tensor(np.asarray(saliency, dtype=np.float32))[None].to(model.device)
        tgt = torch.tensor([int(target)], device=model.device)
        fn = model.logits_fn()
        scores = metrics.confidence_scores(fn, images, sal, tgt, progress=lambda f: progress(0.05 * f))
        curves = metrics.insertion_deletion(fn, images, sal, tgt, steps=int(steps),
                                            progress=lambda f: progress(0.05 + 0.95 * f))
        return {
            "Y": float(scores.Y[0]), "O": float(scores.O[0]), "D": float(scores.D[0]),
            "ic": float(scores.ic[0]), "ad": float(scores.ad[0]), "add": float(scores.add[0]),
            "deltas": finite(curves.deltas.cpu().numpy()),
            "ins": finite(curves.ins_curve[0].cpu().numpy()), "del": finite(curves.del_curve[0].cpu().numpy()),
            "ins_auc": float(curves.ins_auc[0]), "del_auc": float(curves.del_auc[0]),
        }

    evaluations = 3 + 2 * int(steps)  # x, e, e_inv, then each insertion and deletion step
    expected = costs.expected_network_seconds(model_name, model, layer, evaluations)
    return service().submit(key, run, label=f"faithfulness · {method_title(method)} · {layer}", lane=Lane.SLOW,
                            expected=expected)


def faithfulness(model_name: str, image_key: str, _image: Image.Image, method: str, layer: str, target: int,
                 steps: int, _saliency: np.ndarray, _progress=None, options: dict | None = None) -> dict:
    """The paper's faithfulness and localisation metrics of one explanation of one image.

    ``_saliency`` is the method's s(u(L)) at the model's input size (determined by the other
    arguments). Returns ``Y``, ``O``, ``D`` (target probabilities of x, e = s(u(L))∘x and
    e_inv = (1 - s(u(L)))∘x), ``ic``, ``ad``, ``add`` (Eqs. 11-13, per image), insertion/deletion
    ``deltas``, ``ins``, ``del``, ``ins_auc``, ``del_auc``. The pointing game is :func:`pointing_game`.
    """
    job = submit_faithfulness(model_name, image_key, _image, method, layer, target, steps, _saliency, options)
    return _result(job, _progress)


def pointing_game(saliency: np.ndarray, boxes: Sequence[Box]) -> float | None:
    """Energy-based pointing game (Eq. 14): the share of the map's energy inside the boxes, which must
    be in the saliency's pixel coordinates; None without boxes."""
    if not boxes:
        return None
    sal = torch.as_tensor(np.clip(finite(saliency), 0, 1).astype(np.float32))[None]
    return float(metrics.energy_pointing_game(sal, [[list(b) for b in boxes]])[0])


def box_area_share(boxes: Sequence[Box], height: int, width: int) -> float | None:
    """The share of an (height, width) image covered by the union of the boxes (inclusive corners):
    what a map spread evenly over the image scores in the pointing game."""
    if not boxes:
        return None
    mask = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask[max(0, int(y0)):int(y1) + 1, max(0, int(x0)):int(x1) + 1] = True
    return float(mask.mean())


def explanation_images(image: Image.Image, saliency: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """e = s(u(L)) ∘ x and e_inv = (1 - s(u(L))) ∘ x at the working image's size (Eq. 10), uint8."""
    x = np.asarray(image.convert("RGB"), dtype=np.float32)
    s = cv2.resize(np.clip(finite(saliency), 0, 1).astype(np.float32), (x.shape[1], x.shape[0]),
                   interpolation=cv2.INTER_LINEAR)[..., None]
    return (np.rint(s * x).clip(0, 255).astype(np.uint8), np.rint((1 - s) * x).clip(0, 255).astype(np.uint8))


def sample_classes(sample: str | None) -> tuple[int, ...]:
    """The ImageNet classes of a sample's boxed object (empty for an upload)."""
    if sample is None:
        return ()
    from camlib.samples import list_samples

    return next((s.classes for s in list_samples() if s.key == sample), ())


def fairest_sample(model_name: str):
    """The sample whose box is the fairest test of the pointing game for this model: among those
    whose prediction is one of the boxed object's classes, the one whose box covers the least of
    the image (a map spread evenly scores that share). None if no sample qualifies."""
    from appkit.inputs import sample_image, sample_list

    model = get_model(model_name)
    best, best_share = None, 2.0
    for sample in sample_list():
        current = sample_image(sample.key)
        probabilities = predictions(model_name, current.key, current.image)
        if int(np.argmax(probabilities)) not in sample.classes:
            continue
        share = box_area_share(current.boxes_at(*model.input_size), *model.input_size)
        if share is not None and share < best_share:
            best, best_share = sample, share
    return best
