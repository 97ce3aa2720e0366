"""Golden outputs of every method, to prove that a refactor changed no number (issue #13).

    python tests/golden/golden.py write before.pt            # on the old tree (PYTHONPATH=old checkout)
    python tests/golden/golden.py write after.pt             # on the new tree
    python tests/golden/golden.py compare before.pt after.pt # bit-identical, or a list of differences

Records, for every method on EfficientNet-Lite0 (bn2, blocks.6, blocks.6.0.bn2), VGG16 and
ResNet50 with seeded random weights (default layer and one inner layer) and the Shapes-VQA model,
on two single images and one batch of three: the coefficients, CAM, saliency, logits, target,
constant flags and every tensor in ``info`` (LIFT-CAM's local accuracy, SHAP-CAM's running
estimates, ...), plus the reference-backend variants of Ablation-CAM and SHAP-CAM. A method that
refuses a layer (CAM on a nonlinear tail) records its message. The files are machine-specific (float
summation order): compare only files written on the same machine with the same thread count; they
are never committed. ``write --only NAME`` restricts to configurations whose name contains NAME,
``--layers`` and ``--methods`` to some of their layers and methods (a method's reference-backend
variants go with it); ``compare --only PREFIX`` (repeatable) compares the entries whose key starts
with one of the prefixes (``lite0``, ``lite0/blocks.6/``, ``lite0/bn2/liftcam/``).
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time

import torch

METHODS = ("gradcam", "gradcampp", "xgradcam", "scorecam", "ablationcam", "liftcam", "shapcam", "cam")
# SHAP-CAM with few orderings keeps the run short; blocks.6 also takes 20 (two groups of 16).
SHAP_PERMUTATIONS = 3
CONFIGS = (  # (name, model, seeded random weights, layers)
    ("lite0", "efficientnet_lite0", False, ("bn2", "blocks.6", "blocks.6.0.bn2")),
    ("vgg16", "vgg16", True, ("features.29", "features.22")),
    ("resnet50", "resnet50", True, ("layer4", "layer4.1")),
    ("vqa", "vqa_shapes", False, ("encoder",)),
)
# Left out: ResNet50's Score-CAM (2,048 masked network passes per image and layer) runs the same
# backend code as Lite0's three layers (network passes), which the set keeps, as it keeps VGG16's
# NNPACK stages.
SKIP = {("resnet50", "scorecam")}
SAMPLES = ("chelsea", "coffee", "astronaut")
VQA_SEEDS = (1_000_000_017, 1_000_000_024, 1_000_000_039)
VQA_QUESTION = "what colour is the circle?"


def _inputs(config: str, model):
    """(list of (label, image input), model options) for a configuration."""
    if config == "vqa":
        from camlib.vqa import scenes

        pictures = [scenes.to_tensor(scenes.generate_scene(s).image)[0] for s in VQA_SEEDS]  # (3, H, W) each
        options = {"question": VQA_QUESTION}
    else:
        from camlib.samples import load_sample

        pictures = [load_sample(s)[0] for s in SAMPLES]
        options = {}
    return [("image0", pictures[0]), ("image1", pictures[1]), ("batch3", list(pictures[:3]) if config != "vqa"
                                                                    else torch.stack(pictures[:3]))], options


def _reference_options() -> dict:
    """How this tree asks for the reference (naive) evaluation: ``backend=`` after the engine
    contract, the methods' ``fast=False`` before it."""
    import camlib

    return {"backend": "reference"} if "backend" in inspect.signature(camlib.explain).parameters else {"fast": False}


def _record(out: dict, prefix: str, exp) -> None:
    for name in ("coefficients", "cam", "saliency", "logits", "target", "constant", "activations"):
        out[f"{prefix}/{name}"] = getattr(exp, name).detach().cpu().clone()

    def walk(path: str, value) -> None:
        if isinstance(value, torch.Tensor):
            out[path] = value.detach().cpu().clone()
        elif isinstance(value, (tuple, list)):
            for i, v in enumerate(value):
                walk(f"{path}.{i}", v)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f"{path}.{k}", v)

    for key, value in exp.info.items():
        walk(f"{prefix}/info.{key}", value)


def write(path: str, only: str | None, layers=None, methods=None) -> None:
    import camlib

    torch.set_num_threads(torch.get_num_threads())  # record the count in the file
    out: dict = {"_threads": torch.tensor(torch.get_num_threads())}
    reference = _reference_options()
    for config, name, random_weights, config_layers in CONFIGS:
        if only and only not in config:
            continue
        if random_weights:
            torch.manual_seed(0)
            model = camlib.load_model(name, device="cpu", weights=None)
        else:
            model = camlib.load_model(name, device="cpu")
        inputs, model_options = _inputs(config, model)
        for layer in config_layers if layers is None else [l for l in config_layers if l in layers]:
            runs = [(m, m, {}) for m in METHODS] + [("ablationcam", "ablationcam@reference", reference),
                                                    ("shapcam", "shapcam@reference", reference)]
            if config == "lite0" and layer == "blocks.6":
                runs.append(("shapcam", "shapcam@20", {"permutations": 20}))
            for method, label, extra in runs:
                if (config, method) in SKIP or (methods is not None and method not in methods):
                    continue
                for image_label, image in inputs:
                    prefix = f"{config}/{layer}/{label}/{image_label}"
                    options = dict(model_options)
                    if method == "shapcam":
                        options.update(permutations=SHAP_PERMUTATIONS, seed=0)
                    options.update(extra)
                    start = time.perf_counter()
                    try:
                        exp = camlib.explain(model, image, method, layer=layer, **options)
                    except (ValueError, NotImplementedError) as exc:
                        out[f"{prefix}/error"] = f"{type(exc).__name__}: {exc}"
                        continue
                    _record(out, prefix, exp)
                    print(f"{prefix}: {time.perf_counter() - start:.2f} s", file=sys.stderr, flush=True)
            torch.save(out, path)  # after every layer: an interrupted run keeps what it did
    torch.save(out, path)
    print(f"wrote {len(out)} entries to {path}")


def compare(before_path: str, after_path: str, only=None) -> int:
    before = torch.load(before_path, weights_only=True)
    after = torch.load(after_path, weights_only=True)
    if only:
        before = {k: v for k, v in before.items() if k.startswith("_") or any(k.startswith(p) for p in only)}
    problems = []
    for key, old in before.items():
        if key not in after:
            problems.append(f"missing: {key}")
            continue
        new = after[key]
        if isinstance(old, torch.Tensor):
            if not isinstance(new, torch.Tensor) or old.dtype != new.dtype or old.shape != new.shape \
                    or not torch.equal(old, new):
                diff = (old.double() - new.double()).abs().max().item() if isinstance(new, torch.Tensor) \
                    and old.shape == new.shape else "shape/type"
                problems.append(f"differs: {key} (max |Δ| {diff})")
        elif old != new:
            problems.append(f"differs: {key}: {old!r} -> {new!r}")
    compared = len(before) - sum(p.startswith("missing") for p in problems)
    for p in problems:
        print(p)
    print(f"{compared} of {len(before)} entries compared, {len(problems)} problems; "
          f"{len(set(after) - set(before))} new entries in {after_path}")
    return 1 if problems else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write")
    w.add_argument("path")
    w.add_argument("--only", default=None)
    w.add_argument("--layers", nargs="+", default=None)
    w.add_argument("--methods", nargs="+", default=None, choices=METHODS)
    c = sub.add_parser("compare")
    c.add_argument("before")
    c.add_argument("after")
    c.add_argument("--only", action="append", default=None,
                   help="compare only entries whose key starts with this (repeatable)")
    args = parser.parse_args(argv)
    if args.command == "write":
        write(args.path, args.only, args.layers, args.methods)
        return 0
    return compare(args.before, args.after, args.only)


if __name__ == "__main__":
    sys.exit(main())
