"""Correctness of camlib on an accelerator: every method on the device against the CPU.

``python -m camlib.bench device-check [--device cuda] [--models ...] [--out FILE]``

For each model (EfficientNet-Lite0 pretrained; the others with seeded random weights, the same on
both devices) and each method, the coefficients α computed on the device are compared with those
computed on the CPU for the same image and target: max |Δα| / max |α_cpu|. Also on the device:
LIFT-CAM's local accuracy (Σα = F^c(A) - F^c(0), Eq. 8) and every method's fast backends against
the reference backends (``backend="reference"``) on the device itself. With ``--tf32`` the device run allows TF32 matrix
products and convolutions, and the table shows what that costs in agreement.

The test suite runs on the CPU only (CI has no GPU); this script is what a GPU machine runs.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

import camlib
from camlib.devices import resolve_device
from camlib.samples import load_sample

MODELS = {"efficientnet_lite0": ("bn2", "blocks.5"), "vgg16": ("features.29",), "resnet50": ("layer4",)}
METHODS = ("gradcam", "gradcampp", "xgradcam", "liftcam", "scorecam", "ablationcam", "shapcam")


def _load(name: str, device, seed: int):
    if name == "efficientnet_lite0":
        return camlib.load_model(name, device=device)
    torch.manual_seed(seed)
    return camlib.load_model(name, device=device, weights=None)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def check(name: str, device: torch.device, seed: int = 0, permutations: int = 10, methods=METHODS,
          log=print) -> list[dict]:
    image, _ = load_sample("chelsea")
    cpu, dev = _load(name, "cpu", seed), _load(name, device, seed)
    rows = []
    for layer in MODELS.get(name, (cpu.default_layer,)):
        target = int(cpu.predict(cpu.to_batch(image)[0]).argmax())
        for method in methods:
            options = _options(method, permutations=permutations, seed=seed)
            ref = camlib.explain(cpu, image, method, layer=layer, target=target, **options)
            _sync(device)
            start = time.perf_counter()
            out = camlib.explain(dev, image, method, layer=layer, target=target, **options)
            _sync(device)
            row = {"model": name, "layer": layer, "method": method, "rel_diff_alpha": _relative(out.coefficients,
                                                                                                ref.coefficients),
                   "saliency_max_diff": float((out.saliency.cpu() - ref.saliency).abs().max()),
                   "device_s": time.perf_counter() - start, "backends": ", ".join(sorted(set(out.info["backends"].values())))}
            if method == "liftcam":
                total, delta = (float(v.reshape(-1)[0]) for v in out.info["local_accuracy"])
                row["local_accuracy_rel"] = abs(total - delta) / max(abs(delta), 1e-12)
            rows.append(row)
            log(f"  {name} {layer} {method}: rel Δα {row['rel_diff_alpha']:.2e}  {row['device_s']:.3f} s")
            if set(out.info["backends"].values()) - REFERENCE_NAMES:
                rows.append(_reference_row(dev, image, layer, target, method, options, out))
                log(f"  {name} {layer} {method} fast vs reference backends: rel {rows[-1]['rel_diff_alpha']:.2e}")
    return rows


def _options(method: str, **candidates) -> dict:
    """The candidates that ``method`` declares as options (SHAP-CAM's permutations and seed)."""
    names = {o.name for o in camlib.get_method(method).options}
    return {k: v for k, v in candidates.items() if k in names}


# Names of the reference backends (camlib.engine.backends): a row whose method used none of the
# others needs no fast-vs-reference comparison.
REFERENCE_NAMES = {"autograd", "deeplift-rewrite", "naive-coalitions", "network-passes"}


def _reference_row(model, image, layer, target, method, options, fast) -> dict:
    """The same explanation on the device with the reference backends forced."""
    reference = camlib.explain(model, image, method, layer=layer, target=target, backend="reference", **options)
    return {"model": model.name, "layer": layer, "method": f"{method}: {fast.info['backends']} vs reference",
            "rel_diff_alpha": _relative(fast.coefficients, reference.coefficients), "saliency_max_diff": None,
            "device_s": None}


def _table(rows: list[dict]) -> str:
    def cell(v):
        return "" if v is None else f"{v:.2e}" if isinstance(v, float) else str(v)
    fields = ["model", "layer", "method", "backends", "rel_diff_alpha", "saliency_max_diff", "local_accuracy_rel",
              "device_s"]
    lines = ["| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    lines += ["| " + " | ".join(cell(r.get(f)) for f in fields) + " |" for r in rows]
    return "\n".join(lines)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m camlib.bench device-check", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--tf32", action="store_true", help="allow TF32 matmuls/convolutions on the device")
    parser.add_argument("--permutations", type=int, default=10)
    parser.add_argument("--out", help="Markdown file to write (also printed)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    rows = []
    for name in args.models:
        rows += check(name, device, permutations=args.permutations, methods=args.methods)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    text = (f"## camlib on {name} against the CPU (TF32 {'on' if args.tf32 else 'off'}, torch {torch.__version__})\n\n"
            + _table(rows) + "\n")
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n")
    worst = max(r["rel_diff_alpha"] for r in rows)
    return 0 if worst < (1e-2 if args.tf32 else 1e-3) else 1


if __name__ == "__main__":
    sys.exit(main())
