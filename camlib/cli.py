"""Command line: ``python -m camlib explain IMAGE ...``, ``python -m camlib models``, ``layers``."""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import sys

DEFAULT_METHODS = ("gradcam", "gradcampp", "xgradcam", "scorecam", "ablationcam", "liftcam")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m camlib", description="Class activation maps from the command line.")
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("explain", help="explain an image: overlay PNGs and coefficients")
    ex.add_argument("image", help="image file, or sample:NAME for a bundled sample (e.g. sample:chelsea)")
    ex.add_argument("--model", default="efficientnet_lite0")
    ex.add_argument("--weights", default="default", help="'default', 'none' (random) or a state-dict checkpoint path")
    ex.add_argument("--layer", default=None, help="CAM layer (default: the last convolutional activation)")
    ex.add_argument("--method", nargs="+", default=list(DEFAULT_METHODS), help="methods (see 'python -m camlib methods')")
    ex.add_argument("--target", default=None, help="class index or name (default: the predicted class)")
    ex.add_argument("--permutations", type=int, default=10, help="|Π| for SHAP-CAM")
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    ex.add_argument("--format", choices=("csv", "json"), default="csv", help="coefficients file format")
    ex.add_argument("--device", default=None)
    ex.add_argument("--out", default="out", help="output folder")
    sub.add_parser("models", help="list the models")
    sub.add_parser("methods", help="list the methods")
    ly = sub.add_parser("layers", help="list the layers of a model")
    ly.add_argument("--model", default="efficientnet_lite0")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    import camlib

    if args.command == "models":
        from camlib.zoo import MODELS
        for name in camlib.list_models():
            spec = MODELS.get(name)
            print(f"{name:20s} {spec.title if spec else 'Shapes-VQA (bundled weights)'}")
        return 0
    if args.command == "methods":
        for key in camlib.list_methods():
            m = camlib.get_method(key)
            print(f"{key:12s} {m.title:13s} {m.summary}")
        return 0
    if args.command == "layers":
        model = camlib.load_model(args.model, weights=None if args.model != "efficientnet_lite0" else "default")
        for info in model.layers:
            mark = "*" if info.name == model.default_layer else " "
            print(f"{mark} {info.label}")
        return 0
    return _explain(args)


def _load_input(spec: str):
    from camlib.images import load_image_with_notes

    if spec.startswith("sample:"):
        from camlib.samples import load_sample
        image, sample = load_sample(spec.split(":", 1)[1])
        return image, [f"sample {sample.key}: {sample.source}"]
    return load_image_with_notes(spec)


def _explain(args) -> int:
    import numpy as np
    import torch

    import camlib
    from camlib.images import ImageError, overlay, to_png_bytes

    try:
        image, notes = _load_input(args.image)
        weights = None if args.weights == "none" else args.weights
        model = camlib.load_model(args.model, device=args.device, weights=weights)
        target = int(args.target) if args.target is not None and args.target.isdigit() else args.target
    except (ImageError, ValueError, FileNotFoundError, camlib.ModelUnavailableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"note: {note}")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rgb = np.asarray(image.convert("RGB"))
    rows, summary = [], {}
    first = True
    for method in args.method:
        try:
            exp = camlib.explain(model, image, method, layer=args.layer, target=target,
                                 permutations=args.permutations, seed=args.seed)
        except (ValueError, NotImplementedError) as exc:
            print(f"{method}: skipped: {exc}", file=sys.stderr)
            continue
        if first:
            probs = exp.probabilities
            top = torch.topk(probs, 5)
            print(f"model {model.name}, layer {exp.layer}, target {int(exp.target)} "
                  f"({model.class_names[int(exp.target)]})")
            for p, i in zip(top.values.tolist(), top.indices.tolist()):
                print(f"  {p:6.2%}  {i:4d}  {model.class_names[i]}")
            first = False
        key = camlib.get_method(method).key
        png = out / f"{key}.png"
        png.write_bytes(to_png_bytes(overlay(rgb, exp.saliency.cpu().numpy(), alpha=args.alpha)))
        alpha = exp.coefficients.cpu().double()
        line = f"{camlib.get_method(method).title:13s} {exp.seconds:7.3f} s  Σα = {alpha.sum():+.4f}  -> {png}"
        if "local_accuracy" in exp.info:
            total, delta = (float(v[0]) for v in exp.info["local_accuracy"])
            line += f"  (F^c(A) - F^c(0) = {delta:+.4f})"
        if bool(exp.constant):
            line += "  [constant map: all coefficients ≤ 0 where activations are]"
        print(line)
        summary[key] = {"seconds": exp.seconds, "coefficients": alpha.tolist()}
        rows.extend((key, k, float(a)) for k, a in enumerate(alpha))
    if args.format == "json":
        (out / "coefficients.json").write_text(json.dumps(summary, indent=1))
    else:
        with open(out / "coefficients.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["method", "map", "coefficient"])
            writer.writerows(rows)
    print(f"wrote {len(summary)} overlays and coefficients.{args.format} to {out}/")
    return 0 if summary else 1
