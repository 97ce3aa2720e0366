"""``explain``: one call from an image to a class activation map, for any method and layer.

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
    start = time.perf_counter()
    m = get_method(method)
    images, batched = model.to_batch(image)
    extra, options = model.extra_inputs(images.shape[0], **options)
    options = m.resolve_options(options)
    split = model.split(layer)
    with torch.inference_mode():
        activations, fixed = _head(split, model.normalize(images), extra, network_batch(images.device))
    # Leave inference mode: backends may need autograd through the tail (never through the head).
    activations = activations.clone()
    fixed = tuple(f.clone() if isinstance(f, torch.Tensor) else f for f in fixed)
    problem = Problem(model=model, split=split, images=images, extra=extra, activations=activations,
                      fixed=fixed, batch_size=batch_size, progress=progress)
    engine = Engine(problem, m.needs, backend)  # the one tail pass the method needs
    logits = engine.logits.clone()
    target_idx = resolve_target(target, logits, model.class_names)
    q = engine.quantities(target_idx, logits)
    coefficients = m.coefficients(q, **options).detach().to(activations.dtype)
    if not torch.isfinite(coefficients).all():
        raise FloatingPointError(f"{m.title} produced non-finite coefficients")
    cam, saliency, constant = saliency_maps(coefficients, activations, tuple(images.shape[-2:]))
    info = {**q.info, "backends": dict(engine.chosen)}
    result = Explanation(method=m.key, layer=split.layer, coefficients=coefficients, activations=activations,
                         cam=cam, saliency=saliency, logits=logits, target=target_idx, constant=constant,
                         image=images, seconds=time.perf_counter() - start, batched=True, info=info)
    if batched:
        return result
    return _unbatch(result)


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
