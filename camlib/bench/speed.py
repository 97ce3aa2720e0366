"""Speed benchmark: camlib against pytorch-grad-cam, torchcam and captum, in one process.

Run as ``python -m camlib.bench speed ...`` (or ``python -m camlib.bench.speed ...``)::

    python -m camlib.bench speed --models efficientnet_lite0 vgg16 resnet50 --repeats 5 --out speed.md

For each model (EfficientNet-Lite0 pretrained and offline; other zoo models with random weights,
which is fine for timing) the same image, CAM layer, target class and device are given to every
library. Everything below is measured in one process and one run:

* **time**: median over ``--repeats`` runs after one warm-up run, the cases of a model
  interleaved (each repetition runs every case once, in an order rotated per repetition) so that
  a change of machine load hits all cases alike. Each case is an image → saliency map call as a
  user writes it (normalisation and upsampling included). Slow cases (every library's Score-CAM,
  pytorch-grad-cam's Ablation-CAM: hundreds to thousands of forward passes) run
  ``--slow-repeats`` times (default 1) without a warm-up run; the table says how many runs each
  median has. ``× forward``: the median divided by the median of a plain no-grad forward pass of
  the same model on the same image, timed in the same interleaved loop.
* **memory** (unless ``--no-memory``): peak memory of one run of each case in a fresh subprocess.
  CPU: the resident-set high-water mark (``VmHWM`` of /proc/self/status, reset through
  /proc/self/clear_refs just before the run; ``ru_maxrss`` differences where that is not
  available) minus the resident set before the run: the extra memory the method needs on top of
  the loaded model. CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation before the run.
* **agreement**: the coefficients α of every peer, obtained through the peers' own APIs during
  the timed runs themselves (pytorch-grad-cam: the value returned by the CAM object's
  ``get_cam_weights``; torchcam: by the extractor's ``_get_weights``; captum: the DeepLift
  attributions of the tail module, summed over space), against camlib's ``Explanation.coefficients``:
  max |Δ| and max |Δ| / max |α_camlib|, for the pairs whose definitions coincide, and, marked as
  such, for pairs that differ by definition.
* **batches**: camlib explaining 16 images in one call against 16 calls of one image each.
* **SHAP-CAM**: time per ordering of the naive prefix evaluation (``NaiveCoalitions``: K + 1 tail
  passes) against camlib's ``FastCoalitions``, and SHAP-CAM_|Π| end to end.

Peers use the module the way their documentation shows: a torchvision/timm model in eval mode
whose parameters require gradients (camlib's loaded module is frozen; the flag is switched on for
the peers' runs and off again, outside the timed region). The captum LIFT-CAM is the paper
authors' recipe: a forward pass of the full model that keeps the layer's activations (a forward
hook), then ``captum.attr.DeepLift`` on a hand-built tail module (the layers after l) with the
zero reference, summed over space.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_MODELS = ("efficientnet_lite0", "vgg16", "resnet50")
DEFAULT_METHODS = ("gradcam", "gradcampp", "xgradcam", "liftcam", "scorecam", "ablationcam", "shapcam")
LIBRARIES = ("camlib", "pgc", "torchcam", "captum")
LIBRARY_TITLES = {"torch": "plain forward (no grad)", "camlib": "camlib", "pgc": "pytorch-grad-cam",
                  "torchcam": "torchcam", "captum": "captum DeepLift (authors' LIFT-CAM)"}
# What each peer implements (method -> class name); absent: the peer has no such method.
PGC_CLASSES = {"gradcam": "GradCAM", "gradcampp": "GradCAMPlusPlus", "xgradcam": "XGradCAM",
               "scorecam": "ScoreCAM", "ablationcam": "AblationCAM"}
TORCHCAM_CLASSES = {"gradcam": "GradCAM", "gradcampp": "GradCAMpp", "xgradcam": "XGradCAM", "scorecam": "ScoreCAM"}
# Cases that make hundreds of forward passes: --slow-repeats runs, no warm-up run.
SLOW = {("camlib", "scorecam"), ("pgc", "scorecam"), ("torchcam", "scorecam"), ("pgc", "ablationcam")}
# (peer, method) pairs whose coefficients are the same quantity as camlib's; the others are
# reported as "differs by definition" (why: DEFINITION_NOTES).
COINCIDE = {("pgc", "gradcam"), ("torchcam", "gradcam"), ("pgc", "xgradcam"),
            ("torchcam", "xgradcam"), ("pgc", "scorecam"), ("pgc", "ablationcam"), ("captum", "liftcam")}
DEFINITION_NOTES = {
    ("pgc", "gradcampp"): "pgc adds ε = 1e-6 to the denominator 2g² + ΣA·g³, which dominates where g² ≲ 1e-6",
    ("torchcam", "gradcampp"): "torchcam 0.5 divides a boolean-masked copy (a no-op): its α_k = Σ g²·ReLU(g)",
    ("torchcam", "scorecam"): "torchcam min-max normalises before upsampling (align_corners=False)",
}
AGREEMENT_TOL = 1e-3  # max |Δ| / max |α| for pairs whose definitions coincide
# SHAP-CAM prefix-evaluation layers per model (the issue's: VGG16's last ReLU, Lite0 blocks.6).
SHAP_LAYERS = {"vgg16": ("features.29",), "efficientnet_lite0": ("blocks.6", "bn2"), "resnet50": ("layer4",),
               "resnet18": ("layer4",)}


# ------------------------------------------------------------------------------------------------
# Machine, timing, memory
# ------------------------------------------------------------------------------------------------


def machine_info(device: torch.device) -> dict:
    """CPU model, cores, torch version and threads (and the GPU when timing on CUDA)."""
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
            "device": str(device)}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        info["cpu"] = fields.get("Model name", info["cpu"])
        info["cores"] = int(fields.get("CPU(s)", info["cores"]))
    except (OSError, ValueError, subprocess.SubprocessError):
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    versions = {}
    for name, module in (("torchvision", "torchvision"), ("timm", "timm"), ("pytorch-grad-cam", "pytorch_grad_cam"),
                         ("torchcam", "torchcam"), ("captum", "captum")):
        try:
            from importlib.metadata import version
            versions[name] = version({"pytorch-grad-cam": "grad-cam"}.get(name, name))
        except Exception:  # not installed
            pass
    info["versions"] = versions
    try:
        info["load"] = os.getloadavg()
    except OSError:
        pass
    return info


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _malloc_trim() -> None:
    """Give freed heap memory back to the OS (glibc), so that a measured run's allocations raise the
    resident set instead of reusing pages freed by earlier runs."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Extra peak memory of a region: CUDA allocator peak, or the CPU resident-set high-water mark."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        gc.collect()
        _malloc_trim()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
            return self
        self.reset = False
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            self.reset = True
        except OSError:
            pass
        self.before = (_status_kb("VmRSS") or 0) * 1024
        self.hwm_before = self._hwm()
        return self

    def _hwm(self) -> int:
        hwm = _status_kb("VmHWM")
        if hwm is not None:
            return hwm * 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kB

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.before
        elif self.reset:
            self.peak = self._hwm() - self.before
        else:  # high-water mark only grows: what the region added above the earlier peak (a lower bound)
            self.peak = max(self._hwm() - self.hwm_before, 0)
        return False


# ------------------------------------------------------------------------------------------------
# The benchmark subject: one model, layer, image, target
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Subject:
    name: str
    model: object  # camlib CamModel
    layer: str
    image: torch.Tensor  # (1, 3, H, W) pixel space on the device
    target: int
    device: torch.device

    @property
    def module(self) -> nn.Module:
        return self.model.module

    @property
    def layer_module(self) -> nn.Module:
        return self.module.get_submodule(self.layer)


def default_weights(name: str):
    return "default" if name == "efficientnet_lite0" else None


def load_subject(name: str, layer: str | None = None, device=None, seed: int = 0) -> Subject:
    """The model (Lite0 pretrained, others random with ``seed``), the chelsea sample, its predicted class."""
    import camlib

    torch.manual_seed(seed)
    model = camlib.load_model(name, device=device, weights=default_weights(name))
    image = sample_images(model, 1)
    layer = layer or model.default_layer
    model.layer_info(layer)  # raises LayerError early
    with torch.no_grad():
        target = int(model.module(model.normalize(image)).argmax(1)[0])
    return Subject(name, model, layer, image, target, model.device)


def sample_images(model, count: int) -> torch.Tensor:
    """``count`` pixel-space images (B, 3, H, W): the bundled samples, then their mirror images and
    crops; random images if the samples cannot be loaded."""
    try:
        from camlib.samples import list_samples, load_sample

        base = [model.to_batch(load_sample(s.key)[0])[0] for s in list_samples()]
    except Exception:  # samples unavailable: deterministic noise
        generator = torch.Generator().manual_seed(0)
        return torch.rand(count, 3, *model.input_size, generator=generator).to(model.device)
    out, variant = [], 0
    while len(out) < count:
        for img in base:
            x = img
            if variant % 2 == 1:
                x = x.flip(-1)
            if variant >= 2:  # a centre crop, resized back
                h, w = x.shape[-2:]
                d = min(h, w) // (4 + variant)
                x = F.interpolate(x[..., d:h - d, d:w - d], size=(h, w), mode="bilinear", align_corners=False)
            out.append(x)
            if len(out) == count:
                break
        variant += 1
    return torch.cat(out)


def _upsample_minmax(cam: torch.Tensor, size) -> torch.Tensor:
    """(B, h, w) map -> (B, H, W) in [0, 1], as every library does before showing a map."""
    up = F.interpolate(cam[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    flat = up.flatten(1)
    low, high = flat.min(1).values[:, None, None], flat.max(1).values[:, None, None]
    return (up - low) / (high - low + 1e-8)


# ------------------------------------------------------------------------------------------------
# Cases: (library, method) -> open() returning (run, close); run() returns coefficients (B, K)
# ------------------------------------------------------------------------------------------------


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


@dataclasses.dataclass
class Case:
    library: str
    method: str
    open: Callable[[], tuple[Callable[[], object], Callable[[], None]]]
    slow: bool = False
    note: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return self.library, self.method


def _forward_case(s: Subject) -> Case:
    def open_():
        x = s.image

        def run():
            with torch.no_grad():
                return s.module(s.model.normalize(x))

        return run, lambda: None

    return Case("torch", "forward", open_)


def _camlib_case(s: Subject, method: str, permutations: int, batch_size: int) -> Case:
    """camlib's explain; its note names the backends the engine chose (``Explanation.info``) and
    the options, read after each run."""
    import camlib

    options = method_options(method, permutations=permutations)
    case = Case("camlib", method, None, slow=("camlib", method) in SLOW)

    def open_():
        def run():
            exp = camlib.explain(s.model, s.image[0], method, s.layer, s.target, batch_size=batch_size, **options)
            case.note = "; ".join([f"{need}: {backend}" for need, backend in exp.info["backends"].items()]
                                  + [f"{name} = {value}" for name, value in options.items()])
            return exp.coefficients[None]

        return run, lambda: None

    case.open = open_
    return case


def method_options(method: str, **candidates) -> dict:
    """The candidates that ``method`` declares as options (e.g. SHAP-CAM's ``permutations``)."""
    import camlib

    names = {o.name for o in camlib.get_method(method).options}
    return {k: v for k, v in candidates.items() if k in names}


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

    batch = peer_batch or {"scorecam": 16, "ablationcam": 32}.get(method)
    note = f"chunks of {batch}" if method in ("scorecam", "ablationcam") else ""
    return Case("pgc", method, open_, slow=("pgc", method) in SLOW, note=note)


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
            _upsample_minmax(cams[0], size)
            return captured["weights"][0].detach()

        def close():
            extractor.remove_hooks()
            stack.close()

        return run, close

    note = f"chunks of {peer_batch or 32}" if method == "scorecam" else ""
    return Case("torchcam", method, open_, slow=("torchcam", method) in SLOW, note=note)


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
            _upsample_minmax(torch.relu((alpha[:, :, None, None] * a).sum(1)), size)
            return alpha

        return run, stack.close

    note = "" if captum_supported(tail) else "ReLU6 in the tail: captum treats it as linear"
    return Case("captum", "liftcam", open_, note=note)


def build_cases(s: Subject, methods, libraries, permutations: int = 10, batch_size: int = 64,
                peer_batch: int | None = None) -> list[Case]:
    cases = [_forward_case(s)]
    for method in methods:
        if "camlib" in libraries:
            cases.append(_camlib_case(s, method, permutations, batch_size))
        if "pgc" in libraries and method in PGC_CLASSES:
            cases.append(_pgc_case(s, method, peer_batch))
        if "torchcam" in libraries and method in TORCHCAM_CLASSES:
            cases.append(_torchcam_case(s, method, peer_batch))
        if "captum" in libraries and method == "liftcam":
            case = _captum_case(s)
            if case is not None:
                cases.append(case)
    return cases


def run_case(case: Case, device: torch.device):
    """One timed run: (seconds, coefficients); hooks are installed and removed outside the timing."""
    run, close = case.open()
    try:
        _sync(device)
        start = time.perf_counter()
        out = run()
        _sync(device)
        return time.perf_counter() - start, out
    finally:
        close()


def time_cases(cases: list[Case], device: torch.device, repeats: int, slow_repeats: int,
               log=print) -> tuple[dict, dict]:
    """Interleaved timing: (seconds per case key, last coefficients per case key)."""
    seconds = {c.key: [] for c in cases}
    outputs, failed = {}, set()

    def attempt(case):
        try:
            return run_case(case, device)
        except Exception as exc:  # a peer that cannot handle this model/layer: report, go on
            failed.add(case.key)
            case.note = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
            log(f"  {case.library} {case.method} {case.note}")
            return None

    for case in cases:  # warm-up (fx splits, DeepLIFT tails, caches, allocator), not for slow cases
        if not case.slow and (result := attempt(case)) is not None:
            outputs[case.key] = result[1]
    for rep in range(max(repeats, slow_repeats)):
        order = cases[rep % len(cases):] + cases[:rep % len(cases)]
        for case in order:
            if rep >= (slow_repeats if case.slow else repeats) or case.key in failed:
                continue
            result = attempt(case)
            if result is None:
                continue
            t, outputs[case.key] = result
            seconds[case.key].append(t)
            if case.slow:
                log(f"  {case.library:8s} {case.method:12s} run {rep + 1}: {t:.2f} s")
    return seconds, outputs


# ------------------------------------------------------------------------------------------------
# Agreement of coefficients
# ------------------------------------------------------------------------------------------------


def compare(ours: torch.Tensor, theirs) -> tuple[float, float]:
    """(max |Δ|, max |Δ| / max |ours|) of two coefficient arrays of the same shape."""
    a = torch.as_tensor(ours).detach().double().cpu().reshape(-1)
    b = torch.as_tensor(theirs).detach().double().cpu().reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"coefficient shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    diff = (a - b).abs().max().item()
    scale = a.abs().max().item()
    return diff, diff / scale if scale > 0 else float("inf") if diff > 0 else 0.0


def agreement_rows(s: Subject, outputs: dict, cases: list[Case] | None = None) -> list[dict]:
    """Compare camlib's coefficients with each peer's, from the outputs of :func:`time_cases`."""
    notes = {c.key: c.note for c in cases or []}
    rows = []
    for (library, method), theirs in sorted(outputs.items()):
        if library in ("torch", "camlib") or ("camlib", method) not in outputs:
            continue
        row = {"model": s.name, "layer": s.layer, "method": method, "peer": library,
               "coincide": (library, method) in COINCIDE, "note": DEFINITION_NOTES.get((library, method), "")}
        if library == "captum" and notes.get((library, method)):
            row["coincide"], row["note"] = False, notes[(library, method)]
        if method == "ablationcam" and library == "pgc":
            logit = outputs[("torch", "forward")][0, s.target].item() if ("torch", "forward") in outputs else None
            if logit is not None and logit <= 0:
                row["coincide"] = False
                row["note"] = (f"target logit {logit:.3g} <= 0: pgc divides by F^c, camlib by |F^c| "
                               "(sign flipped)")
        row["max_abs"], row["max_rel"] = compare(outputs[("camlib", method)], theirs)
        row["ok"] = row["max_rel"] <= AGREEMENT_TOL if row["coincide"] else None
        rows.append(row)
    return rows


def check_agreement(model_or_subject, methods=("gradcam",), libraries=("pgc",), layer: str | None = None,
                    image: torch.Tensor | None = None, target: int | None = None) -> list[dict]:
    """Run camlib and the peers once on one image and compare their coefficients.

    ``model_or_subject``: a :class:`Subject`, a loaded CamModel or a zoo model name. Returns rows
    with ``max_abs``, ``max_rel`` (max |Δ| / max |α_camlib|), ``coincide`` and ``ok``.
    """
    if isinstance(model_or_subject, Subject):
        s = model_or_subject
    elif isinstance(model_or_subject, str):
        s = load_subject(model_or_subject, layer)
    else:
        model = model_or_subject
        x = image if image is not None else sample_images(model, 1)
        x = x if x.dim() == 4 else x[None]
        if target is None:
            with torch.no_grad():
                target = int(model.module(model.normalize(x)).argmax(1)[0])
        s = Subject(model.name, model, layer or model.default_layer, x.to(model.device), target, model.device)
    cases = build_cases(s, methods, ("camlib", *libraries))
    outputs = {case.key: run_case(case, s.device)[1] for case in cases}
    return agreement_rows(s, outputs, cases)


# ------------------------------------------------------------------------------------------------
# Memory probes (a fresh subprocess per case)
# ------------------------------------------------------------------------------------------------


def probe_memory(name: str, layer: str | None, library: str, method: str, device, args) -> dict:
    """In this process: the extra peak memory of one run of a case (after a warm-up run unless slow)."""
    s = load_subject(name, layer, device, args.seed)
    cases = [c for c in build_cases(s, [method] if method != "forward" else [], (library,) if library != "torch" else (),
                                    args.permutations, args.batch_size, args.peer_batch) if c.key == (library, method)]
    if not cases:
        return {"error": "no such case"}
    case = cases[0]
    run_case(_forward_case(s), s.device)  # the model's own working set is resident before measuring
    if not case.slow:
        run_case(case, s.device)
    run, close = case.open()
    try:
        with PeakMemory(s.device) as peak:
            start = time.perf_counter()
            run()
            _sync(s.device)
            seconds = time.perf_counter() - start
    finally:
        close()
    return {"peak_bytes": peak.peak, "seconds": seconds}


def measure_memory(name: str, layer: str, keys, args, log=print, libraries=None) -> dict:
    """{(library, method): peak bytes} from one subprocess per case."""
    import camlib

    root = str(pathlib.Path(camlib.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    out = {}
    for library, method in keys:
        if libraries is not None and library not in libraries and library != "torch":
            continue
        cmd = [sys.executable, "-m", "camlib.bench.speed", "--probe", f"{name}:{library}:{method}", "--layer", layer,
               "--seed", str(args.seed), "--permutations", str(args.permutations),
               "--batch-size", str(args.batch_size)]
        if args.device:
            cmd += ["--device", args.device]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if args.peer_batch:
            cmd += ["--peer-batch", str(args.peer_batch)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            log(f"  memory probe {library}/{method} failed: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        result = json.loads(lines[-1])
        if "peak_bytes" in result:
            out[(library, method)] = result["peak_bytes"]
            log(f"  memory {library:8s} {method:12s} {result['peak_bytes'] / 2**20:8.1f} MiB "
                f"({result['seconds']:.2f} s)")
    return out


# ------------------------------------------------------------------------------------------------
# Batches and SHAP-CAM prefix evaluation
# ------------------------------------------------------------------------------------------------


def time_batches(s: Subject, methods, images: int, repeats: int, single_seconds: dict, budget: float,
                 permutations: int, batch_size: int, log=print) -> list[dict]:
    """Per-image seconds of camlib explaining ``images`` images in one call vs one call each.

    A method whose one-image time makes 2 × images × t exceed ``budget`` seconds runs on fewer
    images (at least 2) and once; the row says how many."""
    import camlib

    rows = []
    for method in methods:
        options = method_options(method, permutations=permutations)
        t1 = single_seconds.get(method)
        n, reps = images, repeats
        if t1 is not None and 2 * images * t1 * repeats > budget:
            reps = 1
            n = max(2, min(images, int(budget / (2 * t1))))
        x = sample_images(s.model, n)

        def batch():
            return camlib.explain(s.model, x, method, s.layer, batch_size=batch_size, **options)

        def single():
            for i in range(n):
                camlib.explain(s.model, x[i], method, s.layer, batch_size=batch_size, **options)

        if reps > 1 or t1 is None or t1 < 2:
            batch(), single()  # warm-up
        tb, ts = [], []
        for _ in range(reps):
            for fn, store in ((batch, tb), (single, ts)):
                _sync(s.device)
                start = time.perf_counter()
                fn()
                _sync(s.device)
                store.append((time.perf_counter() - start) / n)
        row = {"model": s.name, "layer": s.layer, "method": method, "images": n, "runs": reps,
               "single": statistics.median(ts), "batch": statistics.median(tb)}
        row["ratio"] = row["batch"] / row["single"]
        log(f"  batch {method:12s} {n} images: {row['batch']:.4f} s/img vs one at a time {row['single']:.4f} "
            f"s/img ({row['ratio']:.2f}x)")
        rows.append(row)
    return rows


def time_shap(s: Subject, layer: str, repeats: int, permutation_counts, batch_size: int, log=print) -> dict:
    """Naive vs fast prefix evaluation of SHAP-CAM at ``layer``: per-ordering times, the one-off
    cost of building FastCoalitions, SHAP-CAM_|Π| end to end.

    The fast path is timed as SHAP-CAM runs it, on groups of ``ORDERINGS_PER_PASS`` orderings
    (``prefix_values_many``; per ordering = the group's time / its size), and also on one ordering
    alone; the naive path costs the same per ordering either way (K + 1 tail passes each)."""
    import camlib
    from camlib.engine.fast.coalitions import FastCoalitions
    from camlib.engine.reference.coalitions import NaiveCoalitions
    from camlib.methods.shapley import ORDERINGS_PER_PASS, sample_permutations

    split = s.model.split(layer)
    with torch.inference_mode():
        a, *fixed = split.head(s.model.normalize(s.image))
    a = a.clone()
    fixed = tuple(f.clone() for f in fixed)
    k = a.shape[1]
    group = ORDERINGS_PER_PASS
    orders = sample_permutations(k, repeats * group, 0).view(repeats, group, k)
    naive = NaiveCoalitions(split.tail, a, fixed, s.target, batch_size)
    warm = FastCoalitions(split.tail, a, fixed, s.target, batch_size)  # warm-up (and the kernel's compilation)
    warm.prefix_values(orders[0, 0])
    warm.prefix_values_many(orders[0])
    naive.prefix_values(orders[0, 0])
    t_naive, t_build, t_fast, t_single, diffs = [], [], [], [], []
    for r in range(repeats):
        _sync(s.device)
        start = time.perf_counter()
        v_naive = naive.prefix_values(orders[r, 0])
        _sync(s.device)
        t_naive.append(time.perf_counter() - start)
        start = time.perf_counter()
        fast = FastCoalitions(split.tail, a, fixed, s.target, batch_size)
        _sync(s.device)
        t_build.append(time.perf_counter() - start)
        start = time.perf_counter()
        v_fast = fast.prefix_values_many(orders[r])
        _sync(s.device)
        t_fast.append((time.perf_counter() - start) / group)
        start = time.perf_counter()
        v_single = fast.prefix_values(orders[r, 0])
        _sync(s.device)
        t_single.append(time.perf_counter() - start)
        diffs.append(max((v_naive.double() - v_fast[0].double()).abs().max().item(),
                         (v_naive.double() - v_single.double()).abs().max().item()))
    row = {"model": s.name, "layer": split.layer, "maps": k, "linear": split.linear_tail,
           "naive": statistics.median(t_naive), "build": statistics.median(t_build),
           "fast": statistics.median(t_fast), "fast_single": statistics.median(t_single), "group": group,
           "kernel": warm.readout is not None, "max_diff": max(diffs), "runs": repeats}
    row["speedup"] = row["naive"] / row["fast"] if row["fast"] > 0 else float("inf")
    row["shapcam"] = {}
    for count in permutation_counts:
        ts = []
        for _ in range(1 if row["fast"] * count > 20 else repeats):
            _sync(s.device)
            start = time.perf_counter()
            camlib.explain(s.model, s.image[0], "shapcam", layer, s.target, permutations=count,
                           batch_size=batch_size)
            _sync(s.device)
            ts.append(time.perf_counter() - start)
        row["shapcam"][count] = statistics.median(ts)
        # amortised speed-up of the whole SHAP-CAM_|Π| over |Π| naive orderings
        row[f"speedup_{count}"] = row["naive"] * count / row["shapcam"][count]
    log(f"  shap {s.name} {layer}: naive {row['naive']:.4f} s/ordering, fast {row['fast']:.5f} s/ordering "
        f"in groups of {group} ({row['fast_single']:.5f} alone{', fused kernel' if row['kernel'] else ''}) "
        f"(+{row['build']:.4f} s once), x{row['speedup']:.1f}; " +
        ", ".join(f"SHAP-CAM_{c} {t:.3f} s" for c, t in row["shapcam"].items()))
    return row


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------


def _fmt_s(t: float | None) -> str:
    if t is None:
        return "–"
    if t >= 10:
        return f"{t:.1f}"
    if t >= 1:
        return f"{t:.2f}"
    if t >= 0.01:
        return f"{t:.3f}"
    return f"{t:.2g}"


def _fmt_mib(b) -> str:
    return "–" if b is None else f"{b / 2**20:.0f}"


def evaluate_targets(results: dict) -> list[dict]:
    """The issue's targets against the measurements (rows: target, measured, met)."""
    rows = []
    for model in results["models"]:
        name, sec = model["name"], model["seconds"]
        fwd = sec.get(("torch", "forward"))
        for method in ("gradcam", "gradcampp", "xgradcam", "liftcam"):
            t = sec.get(("camlib", method))
            if t and fwd:
                rows.append({"target": f"{name} {method} ≤ 1.15× forward", "measured": f"{t / fwd:.2f}×",
                             "met": t / fwd <= 1.15})
        ours, theirs = sec.get(("camlib", "ablationcam")), sec.get(("pgc", "ablationcam"))
        need = {"efficientnet_lite0": 100, "vgg16": 20}.get(name)
        if ours and theirs and need:
            rows.append({"target": f"{name} Ablation-CAM ≥ {need}× faster than pgc",
                         "measured": f"{theirs / ours:.0f}×", "met": theirs / ours >= need})
        ours, theirs = sec.get(("camlib", "scorecam")), sec.get(("pgc", "scorecam"))
        if ours and theirs:
            rows.append({"target": f"{name} Score-CAM ≥ 1.5× faster than pgc", "measured": f"{theirs / ours:.2f}×",
                         "met": theirs / ours >= 1.5})
            mem = model.get("memory", {})
            mo, mt = mem.get(("camlib", "scorecam")), mem.get(("pgc", "scorecam"))
            if mo is not None and mt:
                rows.append({"target": f"{name} Score-CAM peak memory ≤ ½ pgc's",
                             "measured": f"{mo / 2**20:.0f} vs {mt / 2**20:.0f} MiB", "met": mo <= mt / 2})
        for row in model.get("batches", []):
            rows.append({"target": f"{name} {row['method']}: batch of {row['images']} cheaper per image",
                         "measured": f"{row['ratio']:.2f}×", "met": row["ratio"] < 1})
        for row in model.get("shap", []):
            need = {("vgg16", "features.29"): 5, ("efficientnet_lite0", "blocks"): 20, ("efficientnet_lite0", "blocks.6"): 20}.get((name, row["layer"]))
            if need:
                rows.append({"target": f"{name} {row['layer']} SHAP-CAM ≥ {need}× faster per ordering than naive",
                             "measured": f"{row['speedup']:.1f}×", "met": row["speedup"] >= need})
            if name == "efficientnet_lite0" and row["layer"] in ("blocks", "blocks.6") and 100 in row["shapcam"]:
                t = row["shapcam"][100]
                rows.append({"target": f"{name} blocks.6 SHAP-CAM_100 < 5 s", "measured": f"{t:.2f} s",
                             "met": t < 5})
    return rows


def render(results: dict) -> str:
    m = results["machine"]
    lines = ["## Speed benchmark", "",
             f"Command: `{results['command']}`", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['threads']} threads), "
             f"Python {m['python']}, device {m['device']}" + (f" ({m['gpu']})" if m.get("gpu") else "") + ". "
             + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()) + ". "
             + (f"Load average at start {m['load'][0]:.2f}, at end {results['load_end'][0]:.2f}."
                if m.get("load") and results.get("load_end") else ""), "",
             "Medians of the runs column (after one warm-up run, except the slow cases); × forward: "
             "median / median of a plain no-grad forward pass timed in the same interleaved loop; "
             "peer / camlib: the peer's median over camlib's; peak MiB: extra resident memory "
             "(CUDA: allocated) of one run in a fresh process, above the resident set of the loaded model "
             "after a warm-up run (not for slow cases) and malloc_trim.", "",
             "| model | layer | method | library | median s | × forward | peer / camlib | peak MiB | runs | note |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---|"]
    for model in results["models"]:
        sec, runs, mem = model["seconds"], model["runs"], model.get("memory", {})
        fwd = sec.get(("torch", "forward"))
        for key in model["order"]:
            library, method = key
            t = sec.get(key)
            ours = sec.get(("camlib", method))
            vs = f"{t / ours:.2f}" if library not in ("camlib", "torch") and t and ours else ""
            lines.append(f"| {model['name']} | {model['layer']} | {method} | {LIBRARY_TITLES[library]} | "
                         f"{_fmt_s(t)} | {t / fwd:.2f} | {vs} | {_fmt_mib(mem.get(key))} | {runs.get(key, 0)} | "
                         f"{model['notes'].get(key, '')} |" if t and fwd else
                         f"| {model['name']} | {model['layer']} | {method} | {LIBRARY_TITLES[library]} | – | – | | "
                         f"{_fmt_mib(mem.get(key))} | 0 | {model['notes'].get(key, '')} |")
    agreement = [r for model in results["models"] for r in model.get("agreement", [])]
    if agreement:
        lines += ["", "### Coefficient agreement (camlib vs peer, same image, layer and target)", "",
                  f"rel = max |Δα| / max |α_camlib|; ok: rel ≤ {AGREEMENT_TOL:g} where the definitions coincide.", "",
                  "| model | layer | method | peer | max abs Δ | rel | definitions | ok |",
                  "|---|---|---|---|---:|---:|---|---|"]
        for r in agreement:
            ok = "–" if r["ok"] is None else ("yes" if r["ok"] else "**NO**")
            lines.append(f"| {r['model']} | {r['layer']} | {r['method']} | {r['peer']} | {r['max_abs']:.3g} | "
                         f"{r['max_rel']:.3g} | {'coincide' if r['coincide'] else 'differ: ' + r['note']} | {ok} |")
    batches = [r for model in results["models"] for r in model.get("batches", [])]
    if batches:
        lines += ["", "### Batches: camlib, one call for N images vs N calls of one image", "",
                  "| model | layer | method | N | one at a time s/img | batch s/img | batch / single | runs |",
                  "|---|---|---|---:|---:|---:|---:|---:|"]
        for r in batches:
            lines.append(f"| {r['model']} | {r['layer']} | {r['method']} | {r['images']} | {_fmt_s(r['single'])} | "
                         f"{_fmt_s(r['batch'])} | {r['ratio']:.2f} | {r['runs']} |")
    shap = [r for model in results["models"] for r in model.get("shap", [])]
    if shap:
        counts = sorted({c for r in shap for c in r["shapcam"]})
        lines += ["", "### SHAP-CAM: prefix evaluation per ordering (K + 1 coalitions), naive vs camlib fast", "",
                  "Fast s/ordering: as SHAP-CAM runs it, a group of orderings at a time (time / group size); "
                  "alone: one ordering by itself. Speed-up: naive / fast. Kernel: the fused clamp-readout "
                  "kernel (`camlib.engine.kernels.clampsum`) applies.", "",
                  "| model | layer | K | tail | naive s/ordering | fast s/ordering (group) | fast alone | speed-up | "
                  "kernel | fast build s (once) | "
                  + " | ".join(f"SHAP-CAM_{c} s (× vs naive)" for c in counts) + " | max |Δ| | runs |",
                  "|---|---|---:|---|---:|---:|---:|---:|---|---:|" + "---:|" * len(counts) + "---:|---:|"]
        for r in shap:
            cells = " | ".join(f"{_fmt_s(r['shapcam'][c])} ({r[f'speedup_{c}']:.0f}×)" if c in r["shapcam"] else "–"
                               for c in counts)
            lines.append(f"| {r['model']} | {r['layer']} | {r['maps']} | {'linear' if r['linear'] else 'nonlinear'} | "
                         f"{_fmt_s(r['naive'])} | {_fmt_s(r['fast'])} ({r.get('group', 1)}) | "
                         f"{_fmt_s(r.get('fast_single', r['fast']))} | {r['speedup']:.1f}× | "
                         f"{'yes' if r.get('kernel') else 'no'} | {_fmt_s(r['build'])} | "
                         f"{cells} | {r['max_diff']:.2g} | {r['runs']} |")
    targets = evaluate_targets(results)
    if targets:
        lines += ["", "### Targets", "", "| target | measured | met |", "|---|---|---|"]
        for r in targets:
            lines.append(f"| {r['target']} | {r['measured']} | {'yes' if r['met'] else '**no**'} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m camlib.bench speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    p.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    p.add_argument("--layers", nargs="*", default=[], metavar="MODEL=LAYER",
                   help="CAM layer per model (default: the model's default layer)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each fast case (after one warm-up)")
    p.add_argument("--slow-repeats", type=int, default=1,
                   help="timed runs of the slow cases (Score-CAM, pgc Ablation-CAM), no warm-up")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--permutations", type=int, default=10, help="|Π| of SHAP-CAM in the main table")
    p.add_argument("--batch-size", type=int, default=64, help="camlib's explain(batch_size=...)")
    p.add_argument("--peer-batch", type=int, default=None,
                   help="chunk size of the peers' Score-CAM/Ablation-CAM (default: theirs: pgc 16/32, torchcam 32)")
    p.add_argument("--batch", type=int, default=16, help="images for the batch comparison (0: skip it)")
    p.add_argument("--batch-repeats", type=int, default=3)
    p.add_argument("--batch-budget", type=float, default=120.0,
                   help="seconds per method for the batch comparison; slower methods use fewer images, once")
    p.add_argument("--shap-repeats", type=int, default=3, help="orderings timed per layer (0: skip SHAP section)")
    p.add_argument("--shap-permutations", type=int, nargs="*", default=[10, 100],
                   help="|Π| of the end-to-end SHAP-CAM timings in the SHAP section")
    p.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    p.add_argument("--memory-libraries", nargs="+", default=None, choices=LIBRARIES,
                   help="measure memory only for these libraries (and the plain forward)")
    p.add_argument("--no-check", action="store_true", help="skip the coefficient agreement table")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.add_argument("--out", default=None, help="Markdown file to write (also printed)")
    p.add_argument("--json", default=None, help="raw results as JSON")
    p.add_argument("--layer", default=None, help=argparse.SUPPRESS)  # memory probes
    p.add_argument("--probe", default=None, help=argparse.SUPPRESS)  # MODEL:LIBRARY:METHOD, internal
    return p


def _jsonable(obj):
    if isinstance(obj, dict):
        return {("/".join(k) if isinstance(k, tuple) else str(k)): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return obj


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from camlib.devices import resolve_device

    device = resolve_device(args.device)
    if args.probe:
        name, library, method = args.probe.split(":")
        print(json.dumps(probe_memory(name, args.layer, library, method, device, args)))
        return 0

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    layers = dict(item.split("=", 1) for item in args.layers)
    command = "python -m camlib.bench speed " + " ".join(argv if argv is not None else sys.argv[1:])
    results = {"command": command.strip(), "machine": machine_info(device), "models": []}
    log(f"machine: {results['machine']}")
    for name in args.models:
        s = load_subject(name, layers.get(name), device, args.seed)
        log(f"{name}: layer {s.layer}, target {s.target}")
        cases = build_cases(s, args.methods, args.libraries, args.permutations, args.batch_size, args.peer_batch)
        times, outputs = time_cases(cases, device, args.repeats, args.slow_repeats, log)
        model = {"name": name, "layer": s.layer, "order": [c.key for c in cases],
                 "seconds": {k: statistics.median(v) for k, v in times.items() if v},
                 "runs": {k: len(v) for k, v in times.items()},
                 "notes": {c.key: c.note for c in cases}}
        fwd = model["seconds"][("torch", "forward")]
        for key in model["order"]:
            if key in model["seconds"]:
                log(f"  {key[0]:8s} {key[1]:12s} {model['seconds'][key]:.4f} s  {model['seconds'][key] / fwd:.2f}x")
        if not args.no_check:
            model["agreement"] = agreement_rows(s, outputs, cases)
            for r in model["agreement"]:
                log(f"  agree {r['method']:12s} {r['peer']:8s} abs {r['max_abs']:.3g} rel {r['max_rel']:.3g} "
                    f"{'coincide' if r['coincide'] else 'differ'} {r['note']}")
        if args.batch > 1:
            single = {m: model["seconds"][("camlib", m)] for m in args.methods if ("camlib", m) in model["seconds"]}
            model["batches"] = time_batches(s, [m for m in args.methods if "camlib" in args.libraries],
                                            args.batch, args.batch_repeats, single, args.batch_budget,
                                            args.permutations, args.batch_size, log)
        if args.shap_repeats > 0 and "shapcam" in args.methods:
            model["shap"] = [time_shap(s, layer, args.shap_repeats, args.shap_permutations, args.batch_size, log)
                             for layer in SHAP_LAYERS.get(name, (s.layer,))]
        if not args.no_memory:
            model["memory"] = measure_memory(name, s.layer, model["order"], args, log, args.memory_libraries)
        results["models"].append(model)
        del s, cases, outputs
        gc.collect()
    try:
        results["load_end"] = os.getloadavg()
    except OSError:
        pass
    text = render(results)
    print(text)
    if args.out:
        pathlib.Path(args.out).write_text(text)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(_jsonable(results), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
