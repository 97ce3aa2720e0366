"""``python -m camlib.bench constant-maps``: why a method's map is all zero, measured per image.

A CAM L = ReLU(Σ_k α_k A_k) is constant (camlib flags it; its saliency is all zero) when the
linear combination M = Σ_k α_k A_k is ≤ 0 at every position. This command measures, per image and
method, the quantities that decide it:

* ``constant``: the flag; ``positive_share``: the fraction of the h·w positions where M > 0;
* ``m_mean`` = mean_ij M = Σ_k α_k · mean(A_k) and ``m_max`` = max_ij M (M > 0 somewhere iff > 0);
* the sign pattern of α against the activation mass mean(A_k): ``mass_negative`` = the share of
  Σ_k mean(A_k) on maps with α_k < 0, ``alpha_positive`` = the share of maps with α_k > 0, and the
  two halves of m_mean: ``pos_part`` = Σ_{α_k>0} α_k mean(A_k), ``neg_part`` = Σ_{α_k<0} α_k mean(A_k);
* the share of the target logit carried by the tail's constants: ``logit`` F^c(A),
  ``reference_logit`` F^c(0) (the tail with every map zero: biases and batch-norm shifts only) and
  ``delta`` F^c(A) − F^c(0), which LIFT-CAM's coefficients add up to (Eq. 8);
* where the tail ends "clamp, then linear" (EfficientNet-Lite0's ReLU6 head: the readout
  F^c = c + Σ_m V_m clamp(S_m, lo, hi), V the linear remainder's weights):
  ``saturated`` and ``off`` = the shares of the clamp's inputs S(A) at or above hi (gradient 0, the
  unit is at its ceiling) and at or below lo (gradient 0), and ``saturated_logit`` = Σ_{S_m ≥ hi}
  V_m·hi, the part of F^c(A) − c that saturated units carry, which no gradient sees.

Targets: the ground-truth class of the index file (as the other benchmarks), or ``--target
predicted``. One CSV row per (image, method) and a Markdown summary (medians and counts) per method.
"""

from __future__ import annotations

import argparse
import csv
import math
import pathlib
import statistics
import sys
from typing import Sequence

import torch

FIELDS = ("image", "method", "target", "constant", "positive_share", "m_mean", "m_max", "pos_part", "neg_part",
          "mass_negative", "alpha_positive", "logit", "reference_logit", "delta", "saturated", "off", "saturated_logit")
DEFAULT_METHODS = ("gradcam", "gradcampp", "xgradcam", "ablationcam", "liftcam", "shapcam")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m camlib.bench constant-maps", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, metavar="DIR", help="folder with index.csv and the images")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (constant_maps.csv, .md)")
    p.add_argument("--model", default="efficientnet_lite0",
                   help="zoo model, or package.module:function returning a CamModel (as the other benchmarks)")
    p.add_argument("--layer", default="blocks.6.0.bn2")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    p.add_argument("--n-images", type=int, default=40)
    p.add_argument("--seed", type=int, default=0, help="image selection seed (as the other benchmarks)")
    p.add_argument("--target", choices=("gt", "predicted"), default="gt")
    p.add_argument("--device", default="cpu")
    return p


def measure(exp, reference_logit: torch.Tensor) -> list[dict]:
    """The row fields of a batched explanation (``reference_logit``: F^c(0) per image)."""
    rows = []
    for b in range(exp.coefficients.shape[0]):
        alpha = exp.coefficients[b].double()
        a = exp.activations[b].double()
        mass = a.mean((1, 2))
        m = torch.einsum("k,khw->hw", alpha, a)
        target = int(exp.target[b])
        logit = float(exp.logits[b, target])
        ref = float(reference_logit[b])
        total_mass = float(mass.abs().sum())
        rows.append({
            "target": target, "constant": int(bool(exp.constant[b])),
            "positive_share": float((m > 0).double().mean()), "m_mean": float(m.mean()), "m_max": float(m.max()),
            "pos_part": float((alpha.clamp_min(0) * mass).sum()), "neg_part": float((alpha.clamp_max(0) * mass).sum()),
            "mass_negative": float(mass[alpha < 0].abs().sum()) / total_mass if total_mass > 0 else 0.0,
            "alpha_positive": float((alpha > 0).double().mean()),
            "logit": logit, "reference_logit": ref, "delta": logit - ref})
    return rows


def clamp_state(model, layer: str, activations: torch.Tensor, target: int) -> dict:
    """``saturated``, ``off``, ``saturated_logit`` of one image (see the module docstring), or NaNs
    where the tail does not end in a clamp followed by linear operations only."""
    import torch.fx as fx

    from camlib.graph import ops

    nan = {"saturated": math.nan, "off": math.nan, "saturated_logit": math.nan}
    tail = model.split(layer).tail
    nodes = list(tail.graph.nodes)
    clamps = [n for n in nodes if ops.clamp_bounds(n) is not None]
    if not clamps:
        return nan
    clamp = clamps[-1]
    modules = dict(tail.named_modules())
    after = set(ops_descendants(clamp))
    if not all(n.op in ("output", "get_attr") or ops.is_affine_node(n, modules, lambda a: a in after or a is clamp)
               for n in after):
        return nan
    lo, hi = ops.clamp_bounds(clamp)
    seen = {}

    class Record(fx.Interpreter):
        def run_node(self, node):
            value = super().run_node(node)
            if node is clamp:
                seen["s"] = self.env[node.args[0]]
                seen["y"] = value
            return value

    with torch.enable_grad():
        logits = Record(tail).run(activations[None].detach().requires_grad_(True))
        (v,) = torch.autograd.grad(logits[0, target], seen["y"])  # the linear remainder's weights V
    s = seen["s"].detach().reshape(-1).double()
    v = v.reshape(-1).double()
    saturated = s >= hi
    return {"saturated": float(saturated.double().mean()), "off": float((s <= lo).double().mean()),
            "saturated_logit": float((v[saturated] * hi).sum()) if math.isfinite(hi) else 0.0}


def ops_descendants(node) -> list:
    """Every node that depends on ``node``."""
    out, stack = [], [node]
    while stack:
        for user in stack.pop().users:
            if user not in out:
                out.append(user)
                stack.append(user)
    return out


def run(argv: Sequence[str] | None = None) -> str:
    import camlib
    from camlib.bench.common import load_bench_model
    from camlib.bench.data import load_batch, load_index, select

    args = parser().parse_args(argv)
    model = load_bench_model(args.model, args.device, "default")
    records = select(load_index(args.data), args.n_images, args.seed)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for start in range(0, len(records), 8):
        batch = records[start:start + 8]
        images, _ = load_batch(args.data, batch, model.input_size)
        target = None if args.target == "predicted" else [r.class_index for r in batch]
        lift = camlib.explain(model, images, "liftcam", layer=args.layer, target=target)
        reference = lift.info["reference_logit"]
        clamps = [clamp_state(model, args.layer, lift.activations[b], int(lift.target[b])) for b in range(len(batch))]
        for method in args.methods:
            exp = lift if method == "liftcam" else camlib.explain(model, images, method, layer=args.layer,
                                                                  target=lift.target)
            for record, row, clamp in zip(batch, measure(exp, reference), clamps):
                rows.append({"image": record.file, "method": method, **row, **clamp})
        print(f"constant-maps: {min(start + 8, len(records))}/{len(records)} images", file=sys.stderr, flush=True)
    with open(out / "constant_maps.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    text = markdown(rows, args)
    (out / "constant_maps.md").write_text(text, encoding="utf-8")
    return text


def markdown(rows: list[dict], args) -> str:
    import camlib

    lines = [f"# Constant maps: {args.model}, layer `{args.layer}`, {len({r['image'] for r in rows})} images", "",
             f"`python -m camlib.bench constant-maps --layer {args.layer} --n-images {args.n_images} "
             f"--seed {args.seed} --target {args.target}`", "",
             "| Method | constant | median share of positions with M > 0 | median mean(M) | median Σα⁺·mean(A) "
             "| median Σα⁻·mean(A) | median share of mass on α < 0 | median share of α > 0 |",
             "|:---|---:|---:|---:|---:|---:|---:|---:|"]
    for method in args.methods:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue

        def med(field):
            return statistics.median(float(r[field]) for r in mine)

        lines.append(f"| {camlib.get_method(method).title} | {sum(r['constant'] for r in mine)}/{len(mine)} "
                     f"| {med('positive_share'):.3f} | {med('m_mean'):.4g} | {med('pos_part'):.4g} "
                     f"| {med('neg_part'):.4g} | {med('mass_negative'):.3f} | {med('alpha_positive'):.3f} |")
    lift = [r for r in rows if r["method"] == args.methods[0]]
    if lift:
        logit = statistics.median(r["logit"] for r in lift)
        ref = statistics.median(r["reference_logit"] for r in lift)
        delta = statistics.median(r["delta"] for r in lift)
        share = statistics.median(r["reference_logit"] / r["logit"] for r in lift if r["logit"] != 0)
        lines += ["", f"Target logit F^c(A): median {logit:.4g}; with every map zero F^c(0): median {ref:.4g} "
                  f"(median share F^c(0)/F^c(A) = {share:.3f}); F^c(A) − F^c(0): median {delta:.4g}.", ""]
        clamped = [r for r in lift if math.isfinite(r["saturated"])]
        if clamped:
            lines += [f"The tail's last clamp ({len(clamped)} images): median share "
                      f"of its inputs saturated at the upper bound {statistics.median(r['saturated'] for r in clamped):.3f}, "
                      f"at or below the lower bound {statistics.median(r['off'] for r in clamped):.3f}; the saturated "
                      f"units carry a median {statistics.median(r['saturated_logit'] for r in clamped):.4g} of the logit "
                      "(V_m·hi summed over them), which every gradient at A misses.", ""]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    from camlib.bench.data import DataError

    try:
        print(run(argv))
    except (DataError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
