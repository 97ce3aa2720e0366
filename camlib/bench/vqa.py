"""``python -m camlib.bench vqa``: every CAM method on the Shapes-VQA model, question held fixed
(the paper's Table 6, plus localisation against exact evidence and agreement with SHAP-CAM).

Questions: the held-out set of docs/VQA.md, in order. Scene ``TEST_SEED_BASE + i`` (i = 0, 1, ...;
never a training scene) gets ``generate_questions(scene, default_rng((seed, scene_seed)),
per_family=1)`` with ``--seed`` (default 12345, the seed of the documented held-out set); the
first ``--n`` questions are used, so a larger N extends a smaller run. A question's id is
``{scene_seed}-{index among its scene's questions}``.

Per question and method, with the question's tokens held fixed (``model.logits_fn(tokens)``, so
images -> logits with the question embedding q fixed, as the paper's Table 6):

* IC / AD / ADD terms (Eqs. 11-13) of s(u(L)) for the target answer c (``--target predicted``,
  the default and the paper's protocol, or ``truth``);
* ``pointing``: the energy-based pointing game against the exact evidence mask M of the question,
  Σ s·M / Σ s (:func:`camlib.metrics.energy_in_mask`); NaN (left out of the means) for questions
  whose answer has no evidence ("no", "0"). ``mask_fraction`` = mean(M), what a uniform map scores;
* ``cosine``: cos(α, α^SHAP) to SHAP-CAM with |Π| = ``--permutations`` orderings (default 1000,
  seed ``--shap-seed``), the stand-in for the exact SHAP values of the maps (the VQA tail is
  nonlinear). SHAP-CAM's own row *is* that reference: its cosine is NaN (shown as —).

One CSV row per (question, method), with ``constant`` = 1 when the method's map was constant
(saliency all zero: scored as a black explanation image, docs/METRICS.md; empty = unknown in rows of
a CSV from before the column existed). The maps of all methods of a question are scored together
(:func:`camlib.metrics.score_maps`: the image once, e and e_inv per method). The Markdown table holds
each method's mean with a 95 % confidence interval (Wilson for IC, Student t otherwise) and its count
of constant maps, paired differences to LIFT-CAM, both again over the questions on which every
method's map is non-constant, and the evidence energy per question family. Re-running with the same
``--out`` resumes: rows already in the CSV are not recomputed (the configuration must match).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import pathlib
import statistics
import sys
import time
from typing import Iterator, Sequence

import numpy as np
import torch

from camlib.bench import common
from camlib.bench.faithfulness import nonconstant_section, paired_section, table
from camlib.bench.report import RowStore, check_config, constant_cell, markdown_table, write_config
from camlib.vqa import scenes

NAME = "vqa"
FIELDS = ("question_id", "scene_seed", "family", "question", "answer", "target", "predicted", "correct",
          "mask_fraction", "method", "constant", "Y", "O", "D", "ic", "ad", "add", "pointing", "cosine", "seconds")
KEY = ("question_id", "method")
#: Columns added after the first version; a CSV without them still resumes (values unknown).
OPTIONAL = ("constant",)

# (header, field, scale, digits, interval, higher is better), as camlib.bench.faithfulness.COLUMNS
COLUMNS = (("IC (%)", "ic", 100.0, 1, "wilson", True),
           ("AD (%)", "ad", 100.0, 2, "t", False),
           ("ADD (%)", "add", 100.0, 2, "t", True),
           ("Evidence energy (%)", "pointing", 100.0, 2, "t", True),
           ("cos to SHAP-CAM", "cosine", 1.0, 3, "t", True))


def parser() -> argparse.ArgumentParser:
    from camlib.vqa.train import TEST_QUESTION_SEED

    p = argparse.ArgumentParser(prog="python -m camlib.bench vqa",
                                description="IC / AD / ADD with the question fixed, the pointing game against "
                                            "exact evidence masks and the cosine similarity to SHAP-CAM of CAM "
                                            "methods on the Shapes-VQA model (held-out questions).")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (CSV + Markdown); re-running with the same folder resumes")
    p.add_argument("--n", type=int, default=100, metavar="N", help="number of held-out questions (default 100)")
    p.add_argument("--seed", type=int, default=TEST_QUESTION_SEED,
                   help="question seed of the held-out scenes (default %(default)s: the documented held-out set)")
    p.add_argument("--methods", nargs="*", default=[*common.paper_methods(), "shapcam"], metavar="METHOD",
                   help="CAM methods (default: the paper's six and SHAP-CAM, which is the cosine reference)")
    p.add_argument("--permutations", type=int, default=1000,
                   help="|Π| of the reference SHAP-CAM, and of every method with a permutations option "
                        "(default %(default)s)")
    p.add_argument("--shap-seed", type=int, default=0,
                   help="seed of the reference's orderings, and of every method with a seed option (default 0)")
    common.add_option_arguments(p)
    p.add_argument("--target", choices=("predicted", "truth"), default="predicted",
                   help="answer to explain and score: the model's (default, as the paper) or the true one")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    p.add_argument("--chunk-size", type=int, default=64, metavar="C",
                   help="most images / tail inputs per network call inside the methods (default %(default)s)")
    p.add_argument("--metrics-batch", type=int, default=None, metavar="M",
                   help="images per network call in the metrics (default: the device's fastest)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def heldout_questions(n: int, question_seed: int) -> Iterator[tuple[str, scenes.Scene, scenes.Question]]:
    """The first ``n`` held-out questions as (question id, scene, question), scene by scene."""
    from camlib.vqa.train import TEST_SEED_BASE

    count, i = 0, 0
    while count < n:
        seed = TEST_SEED_BASE + i
        scene = scenes.generate_scene(seed)
        questions = scenes.generate_questions(scene, np.random.default_rng((question_seed, seed)), per_family=1)
        for k, question in enumerate(questions[:n - count]):
            yield f"{seed}-{k}", scene, question
        count += min(len(questions), n - count)
        i += 1


def score(model, image: torch.Tensor, question, explanations, reference, batch_size: int | None) -> list[dict]:
    """The metric values of the explanations (B = 1 each) of one question's answer, all methods'
    maps scored together with the question's tokens held fixed."""
    from camlib import metrics

    tokens = model.question_tokens(question.text)
    saliency = torch.cat([exp.saliency for exp in explanations])
    target = torch.cat([exp.target for exp in explanations])
    conf = metrics.score_maps(model.logits_fn(tokens), image.to(saliency.device), saliency, target,
                              [0] * len(explanations), steps=0, batch_size=batch_size).confidence
    pointing = [math.nan] * len(explanations)
    if question.has_evidence:
        mask = torch.from_numpy(question.evidence_mask).to(saliency.device)
        pointing = metrics.energy_in_mask(saliency, mask).tolist()
    rows = []
    for j, exp in enumerate(explanations):
        cosine = math.nan if exp is reference else float(metrics.cosine_similarity(exp.coefficients.cpu(),
                                                                                   reference.coefficients.cpu())[0])
        rows.append({"constant": int(exp.constant[0]), "Y": float(conf.Y[j]), "O": float(conf.O[j]),
                     "D": float(conf.D[j]), "ic": float(conf.ic[j]), "ad": float(conf.ad[j]),
                     "add": float(conf.add[j]), "pointing": float(pointing[j]), "cosine": cosine})
    return rows


def run(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark; returns {"computed": rows computed now, "skipped": rows already there,
    "markdown": the table}."""
    import camlib
    from camlib.vqa import ASSET_DIR

    args = parser().parse_args(argv)
    if args.n < 1 or args.permutations < 1 or args.chunk_size < 1 or (args.metrics_batch or 1) < 1:
        raise ValueError("--n, --permutations, --chunk-size and --metrics-batch must be at least 1")
    labels = [(run.label, run.key, run.options) for run in common.method_runs(
        args.methods, {**common.parse_options(args.option), "permutations": args.permutations, "seed": args.shap_seed})]
    if any(key == "cam" for _, key, _ in labels):
        raise ValueError("CAM needs a linear tail; the VQA model's tail is nonlinear")
    started = time.perf_counter()
    model = camlib.load_model("vqa_shapes", device=args.device)
    out = pathlib.Path(args.out)
    weights = hashlib.sha256((ASSET_DIR / "vqa_shapes.pt").read_bytes()).hexdigest()[:12]
    config = {"command": NAME, "model": model.name, "code_version": model.meta["code_version"],
              "weights_sha256_12": weights, "layer": model.default_layer,
              "question_seed": args.seed, "permutations": args.permutations, "shap_seed": args.shap_seed,
              "target": args.target}
    check_config(out / f"{NAME}.config.json", config)
    store = RowStore(out, NAME, FIELDS, KEY, OPTIONAL)
    done = store.done()
    out.mkdir(parents=True, exist_ok=True)
    write_config(out / f"{NAME}.config.json", config)
    items = list(heldout_questions(args.n, args.seed))
    todo = [(qid, label) for qid, _, _ in items for label, _, _ in labels if (qid, label) not in done]
    skipped = len(items) * len(labels) - len(todo)
    if skipped:
        common.log(f"{NAME}: resuming, {skipped} rows already done")
    common.log(f"{NAME}: {len(items)} held-out questions, {len(labels)} methods, reference SHAP-CAM with "
               f"|Π| = {args.permutations}, target = {args.target} answer, device {model.device}")
    from tqdm.auto import tqdm

    computed = 0
    store.open()
    try:
        with tqdm(total=len(todo), desc=NAME, unit="row", dynamic_ncols=True, disable=args.no_progress) as bar:
            for qid, scene, question in items:
                pending = [(label, key, options) for label, key, options in labels if (qid, label) not in done]
                if not pending:
                    continue
                image = scenes.to_tensor(scene.image).to(model.device)
                target = question.answer_id if args.target == "truth" else None
                bar.set_postfix_str(f"{qid} SHAP-CAM reference")
                reference = camlib.explain(model, image, "shapcam", target=target, question=question.text,
                                           batch_size=args.chunk_size, permutations=args.permutations,
                                           seed=args.shap_seed)
                bar.set_postfix_str(qid)
                predicted = int(reference.logits.argmax(dim=1)[0])
                explanations = [reference if key == "shapcam" else camlib.explain(
                    model, image, key, target=reference.target, question=question.text, batch_size=args.chunk_size,
                    **options) for _, key, options in pending]
                values = score(model, image, question, explanations, reference, args.metrics_batch)
                rows = [{"question_id": qid, "scene_seed": scene.seed, "family": question.family,
                         "question": question.text, "answer": question.answer,
                         "target": model.class_names[int(exp.target[0])],
                         "predicted": model.class_names[predicted],
                         "correct": int(model.class_names[predicted] == question.answer),
                         "mask_fraction": float(question.evidence_mask.mean()), "method": label,
                         **value, "seconds": exp.seconds}
                        for (label, _, _), exp, value in zip(pending, explanations, values)]
                store.append(rows)
                computed += len(rows)
                bar.update(len(rows))
    finally:
        store.close()
    ids = {qid for qid, _, _ in items}
    rows = [row for row in store.merge() if row["question_id"] in ids]
    argv_used = list(argv) if argv is not None else sys.argv[1:]
    text = markdown(rows, [label for label, _, _ in labels], args, argv_used, model)
    (out / f"{NAME}.md").write_text(text, encoding="utf-8")
    common.log(f"{NAME}: {len(rows)} rows in {store.path}, table in {out / f'{NAME}.md'} "
               f"({time.perf_counter() - started:.1f} s this invocation)")
    return {"computed": computed, "skipped": skipped, "markdown": text}


def family_table(rows: list[dict], labels: Sequence[str]) -> str:
    """Mean evidence energy (%) per method and question family (questions with evidence only), with
    the mean evidence area (what a uniform map scores) as the last line."""
    families = [f for f in scenes.FAMILIES if any(r["family"] == f and not math.isnan(float(r["pointing"])) for r in rows)]

    def mean(values) -> str:
        values = [v for v in values if not math.isnan(v)]
        return f"{100 * statistics.fmean(values):.1f}" if values else "—"

    cells = []
    for label in labels:
        mine = [r for r in rows if r["method"] == label]
        if mine:
            cells.append([common.method_title(label), constant_cell(mine)]
                         + [mean(float(r["pointing"]) for r in mine if r["family"] == f) for f in families])
    first = [r for r in rows if r["method"] == labels[0]] if labels else []
    cells.append(["*uniform map (evidence area)*", ""] + [
        mean(float(r["mask_fraction"]) for r in first if r["family"] == f and not math.isnan(float(r["pointing"])))
        for f in families])
    return markdown_table(["Method", "const.", *families], cells)


def markdown(rows: list[dict], labels: Sequence[str], args, argv: Sequence[str], model) -> str:
    """The report, computed from the CSV rows."""
    questions = {r["question_id"]: r for r in rows}
    n = len(questions)
    with_evidence = sum(1 for r in questions.values() if not math.isnan(float(r["pointing"])))
    correct = sum(int(r["correct"]) for r in questions.values())
    families = ", ".join(f"{f} {sum(1 for r in questions.values() if r['family'] == f)}"
                         for f in dict.fromkeys(r["family"] for r in questions.values()))
    area = [float(r["mask_fraction"]) for r in questions.values() if not math.isnan(float(r["pointing"]))]
    lines = [f"# VQA: {model.title}, layer `{model.default_layer}` (question held fixed)", "",
             f"`{common.command_line(argv, NAME)}`", "",
             f"{n} held-out questions ({families}; question seed {args.seed}); the model answers "
             f"{correct} of them correctly ({100 * correct / max(n, 1):.1f} %). Target = the "
             f"{'predicted' if args.target == 'predicted' else 'true'} answer. Reference for the cosine: "
             f"SHAP-CAM with \\|Π\\| = {args.permutations} orderings (seed {args.shap_seed}).", "",
             table(rows, labels, COLUMNS, unit="question"), "",
             "Mean [95 % confidence interval] over questions (Wilson interval for IC, Student t otherwise). "
             "Higher is better for IC, ADD, evidence energy and cosine; lower for AD; the best mean of each "
             f"column is bold. Evidence energy: Σ s·M / Σ s over the {with_evidence} questions whose answer has "
             "evidence (N counts all rows); a uniform map would score "
             + (f"{100 * statistics.fmean(area):.2f} %" if area else "—")
             + " (mean evidence area). SHAP-CAM's cosine is — because it is the reference. `const.`: maps "
               "that were constant (saliency all zero, scored as black explanation images; their evidence "
               "energy is 0). `s / question`: the method's time (coefficients + map), not the metrics.", ""]
    lines += paired_section(rows, labels, COLUMNS, item="question_id")
    lines += nonconstant_section(rows, labels, n, COLUMNS, item="question_id", unit="question")
    if with_evidence:
        lines += ["Evidence energy (%) per question family:", "", family_table(rows, labels), ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        result = run(argv)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result["markdown"])
    return 0
