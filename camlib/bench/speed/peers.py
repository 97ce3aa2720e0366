"""The peer libraries, used as their documentation shows: pytorch-grad-cam, torchcam, captum.

Each adapter returns a :class:`~camlib.bench.speed.timing.Case` whose ``run()`` is one image ->
saliency map call (normalisation and upsampling included) and returns the peer's own coefficients α,
taken from the timed call itself: pytorch-grad-cam's ``get_cam_weights``, torchcam's extractor's
``_get_weights``, captum's DeepLift attributions of the tail module summed over space.

Peers get a torchvision/timm model in eval mode whose parameters require gradients (camlib's loaded
module is frozen; the flag is switched on for the peers' runs and off again, outside the timed
region). The captum LIFT-CAM is the paper authors' recipe: a forward pass of the full model that keeps
the layer's activations (a forward hook), then ``captum.attr.DeepLift`` on a hand-built tail module
(the layers after l) with the zero reference, summed over space.

Everything this benchmark knows about the peers lives here: which camlib methods each implements
(:data:`PEER_METHODS`), and whether its coefficients are the same quantity as camlib's
(:func:`definition`). A camlib method that no peer implements (CAM, SHAP-CAM, any new method) is
timed by camlib alone.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from camlib.bench.speed.subject import Subject
from camlib.bench.speed.timing import Case
from camlib.methods import METHODS, Cost

# What each peer implements (camlib method key -> the peer's class name).
PGC_CLASSES = {"gradcam": "GradCAM", "gradcampp": "GradCAMPlusPlus", "xgradcam": "XGradCAM",
               "scorecam": "ScoreCAM", "ablationcam": "AblationCAM"}
TORCHCAM_CLASSES = {"gradcam": "GradCAM", "gradcampp": "GradCAMpp", "xgradcam": "XGradCAM", "scorecam": "ScoreCAM"}
#: peer -> the camlib methods it implements, in the order of :data:`LIBRARIES` (after camlib).
PEER_METHODS = {"pgc": tuple(PGC_CLASSES), "torchcam": tuple(TORCHCAM_CLASSES), "captum": ("liftcam",)}
PEER_TITLES = {"pgc": "pytorch-grad-cam", "torchcam": "torchcam", "captum": "captum DeepLift (authors' LIFT-CAM)"}
#: The libraries a run can compare: camlib and its peers.
LIBRARIES = ("camlib", *PEER_METHODS)

# (peer, method) pairs whose coefficients are the same quantity as camlib's; the others are
# reported as "differs by definition" (why: DEFINITION_NOTES).
COINCIDE = {("pgc", "gradcam"), ("torchcam", "gradcam"), ("pgc", "xgradcam"),
            ("torchcam", "xgradcam"), ("pgc", "scorecam"), ("pgc", "ablationcam"), ("captum", "liftcam")}
DEFINITION_NOTES = {
    ("pgc", "gradcampp"): "pgc adds ε = 1e-6 to the denominator 2g² + ΣA·g³, which dominates where g² ≲ 1e-6",
    ("torchcam", "gradcampp"): "torchcam 0.5 divides a boolean-masked copy (a no-op): its α_k = Σ g²·ReLU(g)",
    ("torchcam", "scorecam"): "torchcam min-max normalises before upsampling (align_corners=False)",
}


def definition(peer: str, method: str, target_logit: float | None = None, case_note: str = "") -> tuple[bool, str]:
    """(coincide, note): whether ``peer``'s coefficients of ``method`` are the same quantity as
    camlib's and, where they are not, why. ``case_note``: the note of captum's case (an activation
    its DeepLift treats as linear); ``target_logit``: F^c, whose sign decides Ablation-CAM's."""
    if peer == "captum" and case_note:
        return False, case_note
    if (peer, method) == ("pgc", "ablationcam") and target_logit is not None and target_logit <= 0:
        return False, f"target logit {target_logit:.3g} <= 0: pgc divides by F^c, camlib by |F^c| (sign flipped)"
    return (peer, method) in COINCIDE, DEFINITION_NOTES.get((peer, method), "")


def peer_slow(method: str) -> bool:
    """A peer's method that is not a single pass makes one whole-network pass per map (pgc's
    Score-CAM and Ablation-CAM, torchcam's Score-CAM): hundreds to thousands of forward passes."""
    return METHODS[method].cost is not Cost.ONE_PASS


def peer_case(peer: str, s: Subject, method: str, peer_batch: int | None = None) -> Case | None:
    """``peer``'s case of ``method``; None where the peer has no such method, or (captum) no recipe
    for this model and layer."""
    if method not in PEER_METHODS[peer]:
        return None
    if peer == "pgc":
        return _pgc_case(s, method, peer_batch)
    if peer == "torchcam":
        return _torchcam_case(s, method, peer_batch)
    return _captum_case(s)


def upsample_minmax(cam: torch.Tensor, size) -> torch.Tensor:
    """(B, h, w) map -> (B, H, W) in [0, 1], as every library does before showing a map."""
    up = F.interpolate(cam[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    flat = up.flatten(1)
    low, high = flat.min(1).values[:, None, None], flat.max(1).values[:, None, None]
    return (up - low) / (high - low + 1e-8)


@contextlib.contextmanager
def _trainable(module: nn.Module):
    """Parameters requiring gradients, as the peers' documented usage has them."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(True)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


# ------------------------------------------------------------------------------------------------
# pytorch-grad-cam
# ------------------------------------------------------------------------------------------------


class _Quiet:
    """Stands in for the ``tqdm`` module inside pytorch-grad-cam while a case runs (no progress bars)."""

    @staticmethod
    def tqdm(iterable=None, *args, **kwargs):
        return iterable


def _quiet_pgc(stack: contextlib.ExitStack) -> None:
    import pytorch_grad_cam.ablation_cam as ablation_cam
    import pytorch_grad_cam.score_cam as score_cam

    for module in (score_cam, ablation_cam):
        saved = module.tqdm
        module.tqdm = _Quiet
        stack.callback(setattr, module, "tqdm", saved)


def _pgc_case(s: Subject, method: str, peer_batch: int | None) -> Case:
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cls = getattr(pytorch_grad_cam, PGC_CLASSES[method])

    def open_():
        stack = contextlib.ExitStack()
        stack.enter_context(_trainable(s.module))
        _quiet_pgc(stack)
        kwargs = {"batch_size": peer_batch} if method == "ablationcam" and peer_batch else {}
        cam = cls(model=s.module, target_layers=[s.layer_module], **kwargs)
        if method == "scorecam" and peer_batch:
            cam.batch_size = peer_batch
        captured = {}
        get_weights = cam.get_cam_weights

        def capture(*args, **kw):  # the peer's own weights, from the timed call itself
            captured["weights"] = get_weights(*args, **kw)
            return captured["weights"]

        cam.get_cam_weights = capture
        targets = [ClassifierOutputTarget(s.target)]

        def run():
            cam(input_tensor=s.model.normalize(s.image), targets=targets)
            return torch.as_tensor(captured["weights"])

        def close():
            cam.activations_and_grads.release()
            stack.close()

        return run, close

    batch = peer_batch or {"scorecam": 16, "ablationcam": 32}.get(method)  # pgc's own chunk sizes
    note = f"chunks of {batch}" if method in ("scorecam", "ablationcam") else ""
    return Case("pgc", method, open_, slow=peer_slow(method), note=note)


# ------------------------------------------------------------------------------------------------
# torchcam
# ------------------------------------------------------------------------------------------------


def _torchcam_case(s: Subject, method: str, peer_batch: int | None) -> Case:
    import torchcam.methods

    cls = getattr(torchcam.methods, TORCHCAM_CLASSES[method])
    size = tuple(s.image.shape[-2:])

    def open_():
        stack = contextlib.ExitStack()
        stack.enter_context(_trainable(s.module))
        kwargs = {"batch_size": peer_batch} if method == "scorecam" and peer_batch else {}
        extractor = cls(s.module, target_layer=s.layer, input_shape=(3, *size), **kwargs)
        captured = {}
        get_weights = extractor._get_weights

        def capture(*args, **kw):
            captured["weights"] = get_weights(*args, **kw)
            return captured["weights"]

        extractor._get_weights = capture

        def run():
            inputs = s.model.normalize(s.image)
            if method == "scorecam":  # gradient-free: the documented usage runs the model without grad
                with torch.inference_mode():
                    s.module(inputs)
                cams = extractor(class_idx=s.target)
            else:
                scores = s.module(inputs)
                cams = extractor(class_idx=s.target, scores=scores)
            upsample_minmax(cams[0], size)
            return captured["weights"][0].detach()

        def close():
            extractor.remove_hooks()
            stack.close()

        return run, close

    note = f"chunks of {peer_batch or 32}" if method == "scorecam" else ""  # torchcam's own chunk size: 32
    return Case("torchcam", method, open_, slow=peer_slow(method), note=note)


# ------------------------------------------------------------------------------------------------
# captum: the paper authors' LIFT-CAM
# ------------------------------------------------------------------------------------------------

# Activations captum's DeepLift has no rule for (it back-propagates their plain gradient instead).
_CAPTUM_UNSUPPORTED = (nn.ReLU6, nn.Hardtanh, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Mish)


def captum_tail(s: Subject) -> nn.Module | None:
    """The module after the CAM layer, hand-built as the paper's authors do (their ``Model_Part``);
    None for a (model, layer) we have no recipe for."""
    m, name, layer = s.module, s.name, s.layer
    if name == "vgg16" and layer == "features.29":
        return nn.Sequential(m.features[30], m.avgpool, nn.Flatten(1), m.classifier)
    if name.startswith("resnet") and layer == "layer4":
        return nn.Sequential(m.avgpool, nn.Flatten(1), m.fc)
    if name == "efficientnet_lite0" and layer == "bn2":
        return nn.Sequential(m.global_pool, m.classifier)
    if name == "efficientnet_lite0" and layer in ("blocks", "blocks.6"):
        return nn.Sequential(m.conv_head, m.bn2, m.global_pool, m.classifier)
    return None


def captum_supported(tail: nn.Module) -> bool:
    """False when the tail has an activation captum's DeepLift treats as linear (e.g. ReLU6)."""
    return not any(isinstance(mod, _CAPTUM_UNSUPPORTED) for mod in tail.modules())


def _captum_case(s: Subject) -> Case | None:
    tail = captum_tail(s)
    if tail is None:
        return None
    from captum.attr import DeepLift

    size = tuple(s.image.shape[-2:])

    def open_():
        stack = contextlib.ExitStack()
        stack.enter_context(_trainable(s.module))
        captured = {}
        handle = s.layer_module.register_forward_hook(lambda mod, inp, out: captured.__setitem__("a", out))
        stack.callback(handle.remove)
        explainer = DeepLift(tail)

        def run():
            with torch.no_grad():
                s.module(s.model.normalize(s.image))
            a = captured["a"].detach().clone()
            attributions = explainer.attribute(a, baselines=torch.zeros_like(a), target=s.target)
            alpha = attributions.sum(dim=(2, 3)).detach()
            upsample_minmax(torch.relu((alpha[:, :, None, None] * a).sum(1)), size)
            return alpha

        return run, stack.close

    note = "" if captum_supported(tail) else "ReLU6 in the tail: captum treats it as linear"
    return Case("captum", "liftcam", open_, slow=peer_slow("liftcam"), note=note)
