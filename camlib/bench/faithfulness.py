"""``python -m camlib.bench faithfulness``: the paper's Tables 3-5 for any model and layer.

For every chosen method and image: IC / AD / ADD terms (Eqs. 11-13), insertion and deletion AUC
(Sec. 4.3.2, δ ∈ [0 : 1/(steps-1) : 1]; 41 steps = the paper's [0 : 0.025 : 1]) and the
energy-based pointing game proportion (Eq. 14, ground-truth boxes of the image's class).

Target class: the ground-truth ``class_index`` of the index file by default (the paper explains
"the target class c" of each image), ``--target predicted`` for the model's top-1 class. The
pointing game always uses the ground-truth boxes (the only boxes there are).

One CSV row per (image, method): image, method, target, predicted, Y, O, D, ic, ad, add, ins_auc,
del_auc, pointing, seconds. ``seconds`` is the method's share of its batched ``explain`` call
(coefficients + map, not the metrics), i.e. the call's time divided by the number of images in it.
The Markdown table holds each method's mean with a 95 % confidence interval (Wilson for IC,
Student t for the others).
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Sequence

from camlib.bench import common
from camlib.bench.data import load_batch
from camlib.bench.report import bold_best, fmt_summary, markdown_table, summary_or_none

NAME = "faithfulness"
FIELDS = ("image", "method", "target", "predicted", "Y", "O", "D", "ic", "ad", "add", "ins_auc", "del_auc",
          "pointing", "seconds")
KEY = ("image", "method")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m camlib.bench faithfulness",
                                description="IC / AD / ADD, insertion / deletion AUC and the energy pointing game "
                                            "of CAM methods on a folder of images with an index.csv.")
    common.add_common_arguments(p, methods=common.PAPER_METHODS,
                                layer_help="CAM layer (default: the model's last convolutional activation)")
    p.add_argument("--steps", type=int, default=41,
                   help="insertion/deletion thresholds δ (default 41 = [0 : 0.025 : 1]; 0 skips the AUCs)")
    p.add_argument("--permutations", type=int, default=10, help="|Π| when shapcam is among the methods")
    p.add_argument("--shap-seed", type=int, default=0, help="orderings seed when shapcam is among the methods")
    return p


def method_labels(args) -> list[tuple[str, str]]:
    """(row label, engine key) per requested method, in order, without duplicates."""
    out = []
    for name in args.methods:
        key = common.method_key(name)
        label = f"shapcam_{args.permutations}" if key == "shapcam" else key
        if label not in [lbl for lbl, _ in out]:
            out.append((label, key))
    if not out:
        raise ValueError("no methods given")
    return out


def run(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark; returns {"computed": rows computed now, "skipped": rows already there,
    "markdown": the table (rank 0)}."""
    import camlib
    from camlib import metrics

    args = parser().parse_args(argv)
    if args.steps == 1 or args.steps < 0:
        raise ValueError("--steps must be 0 (no AUCs) or at least 2")
    methods = method_labels(args)
    config = {"steps": args.steps}
    if any(key == "shapcam" for _, key in methods):
        config.update(permutations=args.permutations, shap_seed=args.shap_seed)
    r = common.start(args, NAME, FIELDS, KEY, config)
    r.config["argv"] = list(argv) if argv is not None else sys.argv[1:]
    for label, key in methods:
        if key == "cam" and not r.layer.linear_tail:
            raise ValueError(f"CAM needs a linear tail; the tail after {r.layer.name} is nonlinear")
    todo = [(rec, label, key) for rec in r.mine for label, key in methods if (rec.file, label) not in r.done]
    skipped = len(r.mine) * len(methods) - len(todo)
    if skipped and r.env.is_main:
        common.log(f"{NAME}: resuming, {skipped} rows of rank {r.env.rank} already done")
    pending = [rec for rec in r.mine if any((rec.file, label) not in r.done for label, _ in methods)]
    logits_fn = r.logits_fn()
    computed = 0
    try:
        with r.progress_bar(len(todo), NAME) as bar:
            for batch in common.batches(pending, r.args.batch_size):
                images, boxes = load_batch(args.data, batch, r.model.input_size)
                for label, key in methods:
                    idx = [i for i, rec in enumerate(batch) if (rec.file, label) not in r.done]
                    if not idx:
                        continue
                    sub = [batch[i] for i in idx]
                    options = {"permutations": args.permutations, "seed": args.shap_seed} if key == "shapcam" else {}
                    exp = camlib.explain(r.model, images[idx], key, layer=r.layer.name, target=r.targets(sub),
                                         batch_size=args.chunk_size, **options)
                    rows = score(metrics, logits_fn, exp, [boxes[i] for i in idx], args.steps, args.chunk_size)
                    for rec, row in zip(sub, rows):
                        row.update(image=rec.file, method=label, seconds=exp.seconds / len(sub))
                    r.store.append(rows)
                    computed += len(rows)
                    bar.update(len(rows))
    finally:
        r.store.close()
    text = common.finish(r, markdown)
    return {"computed": computed, "skipped": skipped, "markdown": text}


def score(metrics, logits_fn, exp, boxes, steps: int, chunk: int) -> list[dict]:
    """The per-image metric values of a batched explanation."""
    images, saliency, target = exp.image, exp.saliency, exp.target
    conf = metrics.confidence_scores(logits_fn, images, saliency, target, batch_size=chunk)
    if steps:
        curves = metrics.insertion_deletion(logits_fn, images, saliency, target, steps=steps, batch_size=chunk)
        ins, dele = curves.ins_auc.tolist(), curves.del_auc.tolist()
    else:
        ins = dele = [math.nan] * images.shape[0]
    pointing = metrics.energy_pointing_game(saliency, boxes).tolist()
    predicted = exp.logits.argmax(dim=1).tolist()
    rows = []
    for i in range(images.shape[0]):
        rows.append({"target": int(target[i]), "predicted": int(predicted[i]),
                     "Y": float(conf.Y[i]), "O": float(conf.O[i]), "D": float(conf.D[i]),
                     "ic": float(conf.ic[i]), "ad": float(conf.ad[i]), "add": float(conf.add[i]),
                     "ins_auc": float(ins[i]), "del_auc": float(dele[i]), "pointing": float(pointing[i])})
    return rows


# (header, field, scale, digits, interval, higher is better)
COLUMNS = (("IC (%)", "ic", 100.0, 1, "wilson", True),
           ("AD (%)", "ad", 100.0, 2, "t", False),
           ("ADD (%)", "add", 100.0, 2, "t", True),
           ("Insertion AUC", "ins_auc", 1.0, 4, "t", True),
           ("Deletion AUC", "del_auc", 1.0, 4, "t", False),
           ("Pointing (%)", "pointing", 100.0, 2, "t", True))


def table(rows: list[dict], labels: Sequence[str], columns=COLUMNS, unit: str = "image") -> str:
    """Markdown table of means [95 % CI] per method (rows: CSV dicts; ``columns`` as :data:`COLUMNS`;
    NaN values, e.g. a pointing game without a mask, are left out of their column's mean; ``unit``
    names the item in the time column, "s / image")."""
    headers = ["Method", "N", *[c[0] for c in columns], f"s / {unit}"]
    cells, means = [], {c[1]: [] for c in columns}
    for label in labels:
        mine = [row for row in rows if row["method"] == label]
        if not mine:
            continue
        line = [common.method_title(label), str(len(mine))]
        for _, field, scale, digits, interval, _ in columns:
            s = summary_or_none([float(row[field]) for row in mine], scale, interval)
            line.append("—" if s is None else fmt_summary(s, digits))
            means[field].append(math.nan if s is None else s.mean)
        seconds = sum(float(row["seconds"]) for row in mine) / len(mine)
        line.append(f"{seconds:.3g}")
        cells.append(line)
    for j, (_, field, _, digits, _, higher) in enumerate(columns):
        bold_best(cells, means[field], 2 + j, higher, digits)
    return markdown_table(headers, cells)


def paired_table(rows: list[dict], labels: Sequence[str], reference: str, columns=COLUMNS,
                 item: str = "image") -> str | None:
    """Per-image paired differences (method − reference) with 95 % t intervals, on the images that
    have both rows: the method comparison the wide per-method intervals cannot resolve. ``item``:
    the CSV column naming the item (``image``; ``question_id`` for VQA); NaN differences are left out."""
    by_key = {(row[item], row["method"]): row for row in rows}
    cells = []
    for label in labels:
        if label == reference:
            continue
        images = sorted({img for img, m in by_key if m == label} & {img for img, m in by_key if m == reference})
        if len(images) < 2:
            continue
        line = [f"{common.method_title(label)} − {common.method_title(reference)}", str(len(images))]
        for _, field, scale, digits, _, _ in columns:
            diffs = [float(by_key[(i, label)][field]) - float(by_key[(i, reference)][field]) for i in images]
            s = summary_or_none(diffs, scale, "t")
            line.append("—" if s is None else fmt_summary(s, digits))
        cells.append(line)
    if not cells:
        return None
    return markdown_table(["Difference", "N", *[c[0] for c in columns]], cells)


def markdown(r, rows: list[dict]) -> str:
    labels = [label for label, _ in method_labels(r.args)]
    rows = common.selected_rows(r, rows)
    n_images = len({row["image"] for row in rows})
    tail = "linear" if r.layer.linear_tail else "nonlinear"
    target = "ground-truth class" if r.args.target == "gt" else "predicted class"
    steps = f"insertion/deletion with {r.args.steps} thresholds" if r.args.steps else "no insertion/deletion"
    lines = [f"# Faithfulness: {r.model.title}, layer `{r.layer.name}` ({tail} tail)", "",
             f"`{common.command_line(r.config.get('argv'), NAME)}`", "",
             f"{n_images} images of `{r.args.data}`; target = {target}; {steps}.", "",
             table(rows, labels), "",
             "Mean [95 % confidence interval] over images (Wilson interval for IC, Student t otherwise). "
             "Higher is better for IC, ADD, insertion AUC and pointing; lower for AD and deletion AUC; "
             "the best mean of each column is bold. `s / image`: the method's share of its batched explain "
             "call (coefficients + map), not the metrics.", ""]
    if "liftcam" in labels:
        paired = paired_table(rows, labels, "liftcam")
        if paired:
            lines += ["Paired differences to LIFT-CAM on the same images (mean [95 % t interval]; an interval "
                      "excluding 0 is a difference this sample resolves):", "", paired, ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from camlib.bench.data import DataError

    try:
        result = run(argv)
    except (DataError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result["markdown"]:
        print(result["markdown"])
    return 0
