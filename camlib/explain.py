"""``explain``: one call from an image to a class activation map, for any method and layer
(``explain_many``: several methods from one head pass).

head -> activations A (and held-fixed inputs) -> the engine runs the one tail pass the method's
needs call for and picks the backends (:mod:`camlib.engine.backends`) -> the target -> the method's
coefficients α from the quantities it declared -> the map (:mod:`camlib.cam`).
"""

from __future__ import annotations

import dataclasses
import time

import torch

from camlib.cam import saliency_maps
from camlib.devices import network_batch, network_input
from camlib.engine.backends import Engine
from camlib.engine.batching import join_chunks
from camlib.engine.quantities import Problem
from camlib.methods import get_method


@dataclasses.dataclass
class Explanation:
    """The result of :func:`explain`.

    For a single input image the tensors have no batch dimension: ``coefficients`` α (K,),
    ``activations`` A (K, h, w), ``cam`` L = ReLU(Σ α_k A_k) (h, w), ``saliency`` s(u(L)) (H, W) in
    [0, 1], ``logits`` (C,), ``target`` (), ``constant`` () — True when L was constant (saliency all
    zero). For a batch input every tensor has a leading batch dimension B. ``image`` is the
    pixel-space input (3, H, W) in [0, 1]; ``info`` holds method extras (LIFT-CAM's local
    accuracy, SHAP-CAM's running estimates, ...) and ``info["backends"]``: which backend computed
    each quantity the method read ({need: backend name}, e.g. {"gradient sums": "block-linear"}).
    """

    method: str
    layer: str
    coefficients: torch.Tensor
    activations: torch.Tensor
    cam: torch.Tensor
    saliency: torch.Tensor
    logits: torch.Tensor
    target: torch.Tensor
    constant: torch.Tensor
    image: torch.Tensor
    seconds: float
    batched: bool
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def probabilities(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=-1)

    def batch(self) -> "Explanation":
        """The same explanation with a leading batch dimension (a no-op for batch inputs)."""
        if self.batched:
            return self
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("coefficients", "activations", "cam", "saliency", "logits", "target", "constant", "image"):
            fields[name] = fields[name].unsqueeze(0)
        fields["batched"] = True
        return Explanation(**fields)


def resolve_target(target, logits: torch.Tensor, class_names) -> torch.Tensor:
    """Target indices (B,): the predicted class by default; an int, a class name, or one per image."""
    batch, n_classes = logits.shape
    if target is None:
        return logits.argmax(dim=1)
    if isinstance(target, torch.Tensor):
        target = target.reshape(-1).tolist()
    if not isinstance(target, (list, tuple)):
        target = [target] * batch
    if len(target) != batch:
        raise ValueError(f"{len(target)} targets given for {batch} images")
    out = []
    for t in target:
        if isinstance(t, str):
            names = [n.lower() for n in class_names]
            if t.lower() not in names:
                raise ValueError(f"unknown class name {t!r}")
            t = names.index(t.lower())
        t = int(t)
        if not 0 <= t < n_classes:
            raise ValueError(f"target class {t} is out of range 0..{n_classes - 1}")
        out.append(t)
    return torch.tensor(out, device=logits.device)


def explain(model, image, method: str = "liftcam", layer: str | None = None, target=None, *,
            batch_size: int = 64, progress=None, backend: str | None = None, **options) -> Explanation:
    """Explain ``model``'s score for ``target`` on ``image`` with a CAM ``method`` at ``layer``.

    ``model``: a :class:`camlib.CamModel` (``camlib.load_model``). ``image``: a PIL image, a
    path, a list of those, or a pixel-space tensor (3, H, W) / (B, 3, H, W) in [0, 1]. ``layer``:
    a name from ``model.layers`` (default: the last convolutional activation). ``target``: class
    index or name (default: the predicted class), or one per image. ``progress``: a callable
    receiving the fraction done (slow methods). ``backend``: "auto" (default: the fast backends
    where they apply) or "reference" (force the reference backends; also ``CAMLIB_BACKEND``).
    ``options``: the method's options (``camlib.get_method(m).options``, e.g. ``permutations``
    and ``seed`` of SHAP-CAM) and model inputs (``question`` for the VQA model); anything else is
    a ValueError.
    """
    m = get_method(method)
    names = {o.name for o in m.options}
    method_options = {k: v for k, v in options.items() if k in names}
    inputs = {k: v for k, v in options.items() if k not in names}  # model inputs (the rest is refused)
    return explain_many(model, image, [m.key], layer, target, options={m.key: method_options},
                        batch_size=batch_size, progress=progress, backend=backend, **inputs)[m.key]


def explain_many(model, image, methods, layer: str | None = None, target=None, *, options: dict | None = None,
                 batch_size: int = 64, progress=None, backend: str | None = None, **inputs) -> dict[str, Explanation]:
    """Several methods on the same image, layer and target, from one head pass f^[l](x) and one
    start of each backend their needs call for (e.g. one tail pass and one backward pass for
    Grad-CAM, Grad-CAM++ and XGrad-CAM together): {method key: Explanation}.

    Each Explanation is the one :func:`explain` gives for that method alone, computed the same
    way, except that ``seconds`` is the time of the whole call. ``options``: {method: its options}
    (missing ones take their defaults); ``inputs``: model inputs (``question`` for the VQA model).
    Other arguments as for :func:`explain`. A method that fails raises for the whole call.
    """
    start = time.perf_counter()
    chosen_methods = [get_method(name) for name in methods]
    if not chosen_methods:
        raise ValueError("no method given")
    by_key = {get_method(name).key: dict(opts or {}) for name, opts in (options or {}).items()}
    unknown = sorted(set(by_key) - {m.key for m in chosen_methods})
    if unknown:
        raise ValueError(f"options given for methods not asked for: {', '.join(unknown)}")
    images, batched = model.to_batch(image)
    extra, left = model.extra_inputs(images.shape[0], **inputs)
    if left:
        if len(chosen_methods) == 1:
            chosen_methods[0].resolve_options(left)  # raises, listing the method's options
        raise ValueError(f"unknown model inputs: {', '.join(sorted(left))}")
    resolved = {m.key: m.resolve_options(by_key.get(m.key, {})) for m in chosen_methods}
    split = model.split(layer)
    with torch.inference_mode():
        activations, fixed = _head(split, model.normalize(images), extra, network_batch(images.device))
    # Leave inference mode: backends may need autograd through the tail (never through the head).
    activations = activations.clone()
    fixed = tuple(f.clone() if isinstance(f, torch.Tensor) else f for f in fixed)
    problem = Problem(model=model, split=split, images=images, extra=extra, activations=activations,
                      fixed=fixed, batch_size=batch_size, progress=progress)
    needs = frozenset().union(*(m.needs for m in chosen_methods))
    engine = Engine(problem, needs, backend)  # one start per family of needs, shared by the methods
    logits = engine.logits.clone()
    target_idx = resolve_target(target, logits, model.class_names)
    out = {}
    for m in chosen_methods:
        q = engine.quantities(target_idx, logits, needs=m.needs)  # the method sees its own needs only
        coefficients = m.coefficients(q, **resolved[m.key]).detach().to(activations.dtype)
        if not torch.isfinite(coefficients).all():
            raise FloatingPointError(f"{m.title} produced non-finite coefficients")
        cam, saliency, constant = saliency_maps(coefficients, activations, tuple(images.shape[-2:]))
        info = {**q.info, "backends": {need.value: engine.chosen[need.value] for need in m.needs}}
        out[m.key] = Explanation(method=m.key, layer=split.layer, coefficients=coefficients,
                                 activations=activations, cam=cam, saliency=saliency, logits=logits,
                                 target=target_idx, constant=constant, image=images, seconds=0.0,
                                 batched=True, info=info)
    seconds = time.perf_counter() - start
    for key, result in out.items():
        result.seconds = seconds
        if not batched:
            out[key] = _unbatch(result)
    return out


def _head(split, inputs: torch.Tensor, extra: tuple, chunk: int) -> tuple[torch.Tensor, tuple]:
    """The head on a batch, ``chunk`` images at a time in the device's fastest layout
    (:func:`camlib.devices.network_input`); the outputs come back contiguous."""
    joined = join_chunks([split.head(network_input(inputs[i:i + chunk]), *(e[i:i + chunk] for e in extra))
                          for i in range(0, inputs.shape[0], chunk)])
    return joined[0], tuple(joined[1:])


def _unbatch(result: Explanation) -> Explanation:
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    for name in ("coefficients", "activations", "cam", "saliency", "logits", "target", "constant", "image"):
        fields[name] = fields[name][0]
    fields["batched"] = False
    return Explanation(**fields)
