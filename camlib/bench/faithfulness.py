"""``python -m camlib.bench faithfulness``: the paper's Tables 3-5 for any model and layer.

For every chosen method and image: IC / AD / ADD terms (Eqs. 11-13), insertion and deletion AUC
(Sec. 4.3.2, δ ∈ [0 : 1/(steps-1) : 1]; 41 steps = the paper's [0 : 0.025 : 1]) and the
energy-based pointing game proportion (Eq. 14, ground-truth boxes of the image's class).

Target class: the ground-truth ``class_index`` of the index file by default (the paper explains
"the target class c" of each image), ``--target predicted`` for the model's top-1 class. The
pointing game always uses the ground-truth boxes (the only boxes there are).

One CSV row per (image, method): image, method, target, predicted, constant, Y, O, D, ic, ad, add,
ins_auc, del_auc, pointing, seconds. ``constant`` is 1 when the method's map ReLU(Σ α_k A_k) was
constant (``Explanation.constant``: its saliency is all zero, so it is scored as a black explanation
image, see docs/METRICS.md); empty in rows of a CSV written before the column existed (unknown).
``seconds`` is the method's share of its batched ``explain`` call (coefficients + map, not the
metrics), i.e. the call's time divided by the number of images in it.

The maps of all methods of a batch of images are scored together (:func:`camlib.metrics.score_maps`):
x once per image, every derived image once, ``--metrics-batch`` images per network call.

The Markdown table holds each method's mean with a 95 % confidence interval (Wilson for IC,
Student t for the others) and its number of constant maps; the table and the paired differences
to LIFT-CAM are repeated over the images on which every method's map is non-constant.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Sequence

import torch

from camlib.bench import common
from camlib.bench.data import load_batch
from camlib.bench.report import (bold_best, constant_cell, fmt_summary, markdown_table, nonconstant_items,
                                 nonconstant_note, summary_or_none)

NAME = "faithfulness"
FIELDS = ("image", "method", "target", "predicted", "constant", "Y", "O", "D", "ic", "ad", "add", "ins_auc",
          "del_auc", "pointing", "seconds")
KEY = ("image", "method")
#: Columns added after the first version; a CSV without them still resumes (values unknown).
OPTIONAL = ("constant",)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m camlib.bench faithfulness",
                                description="IC / AD / ADD, insertion / deletion AUC and the energy pointing game "
                                            "of CAM methods on a folder of images with an index.csv.")
    common.add_common_arguments(p, methods=common.paper_methods(),
                                layer_help="CAM layer (default: the model's last convolutional activation)")
    p.add_argument("--steps", type=int, default=41,
                   help="insertion/deletion thresholds δ (default 41 = [0 : 0.025 : 1]; 0 skips the AUCs)")
    common.add_option_arguments(p)
    p.add_argument("--permutations", type=int, default=None, help="shorthand for --option permutations=N")
    p.add_argument("--shap-seed", type=int, default=None, help="shorthand for --option seed=N")
    p.add_argument("--paired-to", nargs="+", default=["liftcam"], metavar="METHOD",
                   help="methods the paired-difference tables compare every other method with (default: "
                        "liftcam); only the Markdown changes, so re-running a finished run with other "
                        "values rewrites its tables without computing anything")
    return p


def run_options(args) -> dict:
    """The method options of a run: --option NAME=VALUE and the --permutations / --shap-seed shorthands."""
    options = common.parse_options(args.option)
    if args.permutations is not None:
        options["permutations"] = args.permutations
    if args.shap_seed is not None:
        options["seed"] = args.shap_seed
    return options


def method_labels(args) -> list[common.MethodRun]:
    """The requested methods with their options, in order, without duplicate labels."""
    return common.method_runs(args.methods, run_options(args))


def run(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark; returns {"computed": rows computed now, "skipped": rows already there,
    "markdown": the table (rank 0)}."""
    import camlib
    from camlib import metrics

    args = parser().parse_args(argv)
    if args.steps == 1 or args.steps < 0:
        raise ValueError("--steps must be 0 (no AUCs) or at least 2")
    runs = method_labels(args)
    args.paired_to = [common.method_key(m) for m in args.paired_to]  # an unknown name fails here, not at the end
    config = {"steps": args.steps, "options": {run.label: run.options for run in runs if run.options}}
    r = common.start(args, NAME, FIELDS, KEY, config, optional=OPTIONAL)
    r.config["argv"] = list(argv) if argv is not None else sys.argv[1:]
    for run in runs:
        if run.key == "cam" and not r.layer.linear_tail:
            raise ValueError(f"CAM needs a linear tail; the tail after {r.layer.name} is nonlinear")
    todo = [(rec, run.label) for rec in r.mine for run in runs if (rec.file, run.label) not in r.done]
    skipped = len(r.mine) * len(runs) - len(todo)
    if skipped and r.env.is_main:
        common.log(f"{NAME}: resuming, {skipped} rows of rank {r.env.rank} already done")
    pending = [rec for rec in r.mine if any((rec.file, run.label) not in r.done for run in runs)]
    logits_fn = r.logits_fn()
    computed = 0
    try:
        with r.progress_bar(len(todo), NAME) as bar:
            for batch in common.batches(pending, r.args.batch_size):
                images, boxes = load_batch(args.data, batch, r.model.input_size)
                explained = []
                for run in runs:
                    idx = [i for i, rec in enumerate(batch) if (rec.file, run.label) not in r.done]
                    if not idx:
                        continue
                    sub = [batch[i] for i in idx]
                    exp = camlib.explain(r.model, images[idx], run.key, layer=r.layer.name, target=r.targets(sub),
                                         batch_size=args.chunk_size, **run.options)
                    explained.append((run.label, idx, exp))
                rows = score(metrics, logits_fn, images, boxes, explained, args.steps, r.metrics_batch)
                for row in rows:
                    row["image"] = batch[row.pop("index")].file
                r.store.append(rows)
                computed += len(rows)
                bar.update(len(rows))
    finally:
        r.store.close()
    text = common.finish(r, markdown)
    return {"computed": computed, "skipped": skipped, "markdown": text}


def score(metrics, logits_fn, images, boxes, explained, steps: int, batch_size: int) -> list[dict]:
    """The metric rows of one batch of images, all methods scored together.

    ``explained``: per method, ``(label, indices of its images in the batch, the batched
    Explanation of those images)``. Returns one row per map with ``index`` (of its image in the
    batch), ``method``, ``seconds`` and the metric values.
    """
    index = [i for _, idx, _ in explained for i in idx]
    if not index:
        return []
    saliency = torch.cat([exp.saliency for _, _, exp in explained])
    target = torch.cat([exp.target for _, _, exp in explained])
    result = metrics.score_maps(logits_fn, images.to(saliency.device), saliency, target, index, steps=steps,
                                batch_size=batch_size)
    conf = result.confidence
    if result.curves is not None:
        ins, dele = result.curves.ins_auc.tolist(), result.curves.del_auc.tolist()
    else:
        ins = dele = [math.nan] * len(index)
    pointing = metrics.energy_pointing_game(saliency, [boxes[i] for i in index]).tolist()
    rows, j = [], 0
    for label, idx, exp in explained:
        predicted = exp.logits.argmax(dim=1).tolist()
        for k, i in enumerate(idx):
            rows.append({"index": i, "method": label, "target": int(target[j]), "predicted": int(predicted[k]),
                         "constant": int(exp.constant[k]), "Y": float(conf.Y[j]), "O": float(conf.O[j]),
                         "D": float(conf.D[j]), "ic": float(conf.ic[j]), "ad": float(conf.ad[j]),
                         "add": float(conf.add[j]), "ins_auc": float(ins[j]), "del_auc": float(dele[j]),
                         "pointing": float(pointing[j]), "seconds": exp.seconds / len(idx)})
            j += 1
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
    headers = ["Method", "N", "const.", *[c[0] for c in columns], f"s / {unit}"]
    cells, means = [], {c[1]: [] for c in columns}
    for label in labels:
        mine = [row for row in rows if row["method"] == label]
        if not mine:
            continue
        line = [common.method_title(label), str(len(mine)), constant_cell(mine)]
        for _, field, scale, digits, interval, _ in columns:
            s = summary_or_none([float(row[field]) for row in mine], scale, interval)
            line.append("—" if s is None else fmt_summary(s, digits))
            means[field].append(math.nan if s is None else s.mean)
        seconds = sum(float(row["seconds"]) for row in mine) / len(mine)
        line.append(f"{seconds:.3g}")
        cells.append(line)
    for j, (_, field, _, digits, _, higher) in enumerate(columns):
        bold_best(cells, means[field], 3 + j, higher, digits)
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
        line = [f"{common.method_title(label)} − {common.method_title(reference)}", str(len(images)),
                f"{constant_cell([by_key[(i, label)] for i in images])}, "
                f"{constant_cell([by_key[(i, reference)] for i in images])}"]
        for _, field, scale, digits, _, _ in columns:
            diffs = [float(by_key[(i, label)][field]) - float(by_key[(i, reference)][field]) for i in images]
            s = summary_or_none(diffs, scale, "t")
            line.append("—" if s is None else fmt_summary(s, digits))
        cells.append(line)
    if not cells:
        return None
    return markdown_table(["Difference", "N", "const.", *[c[0] for c in columns]], cells)


def markdown(r, rows: list[dict]) -> str:
    labels = [run.label for run in method_labels(r.args)]
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
             "the best mean of each column is bold. `const.`: maps that were constant (ReLU(Σ α_k A_k) "
             "constant, saliency all zero), scored as black explanation images (docs/METRICS.md). "
             "`s / image`: the method's share of its batched explain call (coefficients + map), not the "
             "metrics.", ""]
    lines += paired_section(rows, labels, references=r.args.paired_to)
    lines += nonconstant_section(rows, labels, n_images, references=r.args.paired_to)
    return "\n".join(lines)


def paired_section(rows: list[dict], labels: Sequence[str], columns=COLUMNS, item: str = "image",
                   references: Sequence[str] = ("liftcam",)) -> list[str]:
    """The paired differences to each of ``references`` that is among the methods (default:
    LIFT-CAM) as Markdown lines."""
    lines = []
    for reference in references:
        paired = paired_table(rows, labels, reference, columns, item=item) if reference in labels else None
        if not paired:
            continue
        title = common.method_title(reference)
        lines += [f"Paired differences to {title} on the same {item.split('_')[0]}s (mean [95 % t interval]; "
                  "an interval excluding 0 is a difference this sample resolves; `const.`: constant maps of the "
                  f"method, then of {title}):", "", paired, ""]
    return lines


def nonconstant_section(rows: list[dict], labels: Sequence[str], n_items: int, columns=COLUMNS,
                        item: str = "image", unit: str = "image", references: Sequence[str] = ("liftcam",)) -> list[str]:
    """The means and paired differences again, over the items on which every method's map is
    non-constant (or one sentence when no map is constant)."""
    noun = item.split("_")[0]
    keep, n_constant, n_unknown = nonconstant_items(rows, item)
    if not n_constant and not n_unknown:
        return [f"No map is constant: the tables above are also those over the {noun}s on which every "
                "method's map is non-constant.", ""]
    lines = [nonconstant_note(len(keep), n_items, n_constant, n_unknown, noun=f"{noun}s"), ""]
    sub = [row for row in rows if row[item] in keep]
    if not sub:
        return lines + [f"(no such {noun})", ""]
    lines += [table(sub, labels, columns, unit=unit), ""]
    return lines + paired_section(sub, labels, columns, item, references)


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
