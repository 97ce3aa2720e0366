"""Command line: ``camlib explain IMAGE ...`` (or ``python -m camlib ...``), ``models``, ``methods``, ``layers``."""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="camlib", description="Class activation maps from the command line.")
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("explain", help="explain an image: overlay PNGs and coefficients")
    ex.add_argument("image", help="image file, or sample:NAME for a bundled sample (e.g. sample:chelsea)")
    ex.add_argument("--model", default="efficientnet_lite0")
    ex.add_argument("--weights", default="default", help="'default', 'none' (random) or a state-dict checkpoint path")
    ex.add_argument("--layer", default=None, help="CAM layer (default: the last convolutional activation)")
    ex.add_argument("--method", nargs="+", default=None,
                    help="methods (default: the single-pass ones; see 'camlib methods')")
    ex.add_argument("--target", default=None, help="class index or name (default: the predicted class)")
    ex.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                    help="a method option, given to every chosen method that has it (see 'camlib methods'), "
                         "e.g. --option permutations=100; repeatable")
    ex.add_argument("--permutations", type=int, default=None, help="shorthand for --option permutations=N")
    ex.add_argument("--seed", type=int, default=None, help="shorthand for --option seed=N")
    ex.add_argument("--backend", choices=("auto", "reference"), default=None,
                    help="'reference' forces the reference backends (default: auto, or $CAMLIB_BACKEND)")
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
            print(f"{name:20s} {MODELS[name].title}")
        return 0
    if args.command == "methods":
        keys = camlib.list_methods()
        width = max(map(len, keys)), max(len(camlib.get_method(k).title) for k in keys)
        for key in keys:
            m = camlib.get_method(key)
            mark = "*" if m.default else " "
            print(f"{mark} {key:{width[0]}s} {m.title:{width[1]}s} {m.cost.value:13s} {m.summary}")
            for o in m.options:
                print(f"{'':{width[0] + 4}s}option {o.name}={o.default} in {o.bounds()}: {o.help}")
        print("* in the default set")
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


def _options(args) -> dict:
    """--option NAME=VALUE (and the --permutations / --seed shorthands) as {name: text}."""
    options = {}
    for item in args.option:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--option wants NAME=VALUE, got {item!r}")
        options[name.strip()] = value.strip()
    for name in ("permutations", "seed"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    return options


def _method_options(method, options: dict) -> dict:
    """The options a method declares, converted and checked; other methods' options are skipped."""
    mine = {name: value for name, value in options.items() if any(o.name == name for o in method.options)}
    return method.resolve_options({name: _number(value) for name, value in mine.items()})


def _number(value):
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return value
    return value


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
        methods = [camlib.get_method(m) for m in (args.method or camlib.default_methods())]
        options = _options(args)
        known = {o.name for m in camlib.methods.METHODS.values() for o in m.options}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"no method has the option {', '.join(unknown)}; see 'camlib methods'")
        per_method = {m.key: _method_options(m, options) for m in methods}
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
    for m in methods:
        method = m.key
        try:
            exp = camlib.explain(model, image, method, layer=args.layer, target=target, backend=args.backend,
                                 **per_method[method])
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
        key = m.key
        png = out / f"{key}.png"
        png.write_bytes(to_png_bytes(overlay(rgb, exp.saliency.cpu().numpy(), alpha=args.alpha)))
        alpha = exp.coefficients.cpu().double()
        line = f"{m.title:13s} {exp.seconds:7.3f} s  Σα = {alpha.sum():+.4f}  -> {png}"
        if "local_accuracy" in exp.info:
            total, delta = (float(v[0]) for v in exp.info["local_accuracy"])
            line += f"  (F^c(A) - F^c(0) = {delta:+.4f})"
        if bool(exp.constant):
            line += "  [constant map: all coefficients ≤ 0 where activations are]"
        print(line)
        summary[key] = {"seconds": exp.seconds, "options": per_method[method], "backends": exp.info["backends"],
                        "coefficients": alpha.tolist()}
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
