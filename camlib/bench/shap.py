"""``shap-agreement`` (the paper's Table 2) and ``shap-table1`` (Table 1).

shap-agreement
    Cosine similarity between each method's coefficients α and SHAP-CAM with a large |Π|
    (``--permutations``, default 1000; the paper uses 10k) as the stand-in for the exact SHAP
    values, per image, with each method's nominal tail evaluations and seconds per image. The
    reference is computed one image at a time and cached in ``OUT/shap_agreement.ref/`` so an
    interrupted run never recomputes it.

    ``--methods`` (default: the paper's) are compared at their default options. The sampling
    estimators (``--samplers``, default: every method with a budget option, chosen from the
    methods' metadata by :mod:`camlib.estimators`: SHAP-CAM and its antithetic and stratified
    samplers, and coalition estimators such as LIME-CAM / KernelSHAP-CAM) are compared at the
    budgets of ``--compare-permutations`` (default 1 10 100) orderings: an ordering estimator with
    that many orderings, a coalition estimator with as many coalitions as those orderings' tail
    evaluations, p (K + 1). Their seed is ``--shap-seed`` + 1, so they are independent of the
    reference. An ordering estimator runs once per image with the largest budget and its running
    estimate gives a row for *every* p up to it (the p's of one image are prefixes of the same
    ordering sequence; their ``seconds`` are the run's per-image time prorated by p / max p); those
    rows feed the second table: the tail evaluations each estimator needs to reach, on average over
    the images, the cosine of plain SHAP-CAM (Algorithm 1) at each compared |Π|, and their ratio to
    SHAP-CAM's |Π| (K + 1) (the budget ratio; one ordering is the least an ordering estimator
    spends).

    Use a layer whose tail is nonlinear (default: the first such preset layer, ``blocks.6`` for
    EfficientNet-Lite0). On a linear tail every ordering gives the same marginal contributions:
    SHAP-CAM_1 is exact and LIFT-CAM equals it, so the comparison says nothing (a warning says so).

shap-table1
    IC / AD / ADD of SHAP-CAM_p for p in ``--permutations`` (default 1 10 100), for ``--seeds`` runs
    (orderings seeds 0 .. seeds-1, default 3), averaged over the runs as the paper's Table 1 (which
    averages 10 runs). Within a run, SHAP-CAM_p uses the first p orderings of the run's max-p
    sequence (``info["running"]``): each is an exact SHAP-CAM_p sample, and the comparison between
    p's is paired. ``--methods`` adds other CAMs on the same images for comparison (rows with
    permutations = seed = 0). The paired-difference table (per image, the mean over the runs) has
    each p against the smallest, each against the one before it, and the largest against each
    other method.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import pathlib
import re
import statistics
import sys
from typing import Sequence

import torch

from camlib.bench import common
from camlib.bench.data import load_batch
from camlib.bench.report import (bold_best, constant_cell, fmt_summary, markdown_table, nonconstant_items,
                                 nonconstant_note, summary_or_none)
from camlib.estimators import REFERENCE, budget_option, budget_options, budget_to_reach, sampling_methods

LINEAR_WARNING = ("the tail after layer {layer} is linear: every ordering gives the same marginal contributions, "
                  "so SHAP-CAM with any |Π| is exact and LIFT-CAM equals it; choose a layer with a nonlinear "
                  "tail (e.g. blocks.6 for EfficientNet-Lite0) for a meaningful comparison")


def _linear_warning(r) -> str | None:
    if not r.layer.linear_tail:
        return None
    text = "warning: " + LINEAR_WARNING.format(layer=r.layer.name)
    if r.env.is_main:
        common.log(text)
    return text


# ================================================================================================
# shap-agreement
# ================================================================================================

AGREEMENT = "shap_agreement"
AGREEMENT_FIELDS = ("image", "method", "target", "constant", "cosine", "evaluations", "seconds",
                    "reference_seconds")
AGREEMENT_KEY = ("image", "method")
#: Columns added after the first version; a CSV without them still resumes (values unknown).
OPTIONAL = ("constant", "evaluations")


def agreement_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m camlib.bench shap-agreement",
                                description="Cosine similarity of each method's coefficients to SHAP-CAM "
                                            "with many orderings (the paper's Table 2).")
    common.add_common_arguments(p, methods=common.paper_methods(),
                                layer_help="CAM layer (default: the first preset layer with a nonlinear tail, "
                                           "blocks.6 for EfficientNet-Lite0)")
    p.add_argument("--permutations", type=int, default=1000, help="|Π| of the reference SHAP-CAM (default 1000)")
    p.add_argument("--shap-seed", type=int, default=0, help="seed of the reference's orderings (default 0)")
    p.add_argument("--compare-permutations", type=int, nargs="*", default=[1, 10, 100], metavar="P",
                   help="budgets of the sampling estimators, in orderings of SHAP-CAM (P (K + 1) tail evaluations; "
                        "another seed than the reference's; default: 1 10 100; none: skip them)")
    p.add_argument("--samplers", nargs="*", default=None, metavar="METHOD",
                   help="sampling estimators to compare at those budgets (default: every method with a budget "
                        "option: " + " ".join(sampling_methods()) + "; none: only --methods). A coalition "
                        "estimator evaluates each of its P (K + 1) coalitions: at P = 100 that can take minutes "
                        "per image")
    return p


def _ref_path(r, file: str) -> pathlib.Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", file)[-80:]
    digest = hashlib.sha1(file.encode("utf-8")).hexdigest()[:10]
    return r.out / f"{AGREEMENT}.ref" / f"{safe}.{digest}.pt"


def _reference(r, images, index: int, record, bar) -> tuple[torch.Tensor, float, int]:
    """SHAP-CAM_|Π| coefficients (K,) of one image, its seconds and target; cached on disk."""
    import camlib

    path = _ref_path(r, record.file)
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        return saved["coefficients"], float(saved["seconds"]), int(saved["target"])
    last = [0.0]

    def progress(fraction: float) -> None:
        if fraction - last[0] >= 0.01 or fraction >= 1.0:
            last[0] = fraction
            bar.set_postfix_str(f"reference {_short(record.file)} {100 * fraction:.0f}%")

    target = r.targets([record])
    exp = camlib.explain(r.model, images[index:index + 1], "shapcam", layer=r.layer.name, target=target,
                         batch_size=r.args.chunk_size, progress=progress,
                         permutations=r.args.permutations, seed=r.args.shap_seed)
    coefficients = exp.coefficients[0].detach().cpu().clone()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"coefficients": coefficients, "seconds": exp.seconds, "target": int(exp.target[0]),
                "permutations": r.args.permutations, "seed": r.args.shap_seed}, tmp)
    tmp.replace(path)
    return coefficients, exp.seconds, int(exp.target[0])


def _short(file: str) -> str:
    return pathlib.PurePath(file).name


@dataclasses.dataclass(frozen=True)
class Unit:
    """One row label of shap-agreement: ``key``'s coefficients with ``options``. ``budget``: the
    orderings of SHAP-CAM whose evaluations it matches (0 for a method at its defaults); ``shown``:
    a row of the main table (the other ones, running estimates between the compared budgets, feed
    the budget table only)."""

    label: str
    key: str
    options: dict
    budget: int = 0
    shown: bool = True

    @property
    def title(self) -> str:
        import camlib

        m = camlib.get_method(self.key)
        if not self.budget:
            return m.title
        name = budget_option(m)
        value = self.options[name]
        return f"{m.title} (\\|Π\\|={value})" if name == "permutations" else f"{m.title} ({value:,} samples)"


def agreement_units(args, n_maps: int) -> list[Unit]:
    """The rows of a run: ``--methods`` at their defaults, then every sampling estimator at every
    compared budget (an ordering estimator at every budget up to the largest: its running estimate)."""
    import camlib

    keys = [camlib.get_method(name).key for name in args.methods]
    samplers = sampling_methods() if args.samplers is None else [camlib.get_method(n).key for n in args.samplers]
    samplers += [k for k in keys if budget_option(camlib.get_method(k)) is not None and k not in samplers]
    compare = sorted(set(args.compare_permutations))
    if compare and compare[0] < 1:
        raise ValueError("--compare-permutations values must be at least 1")
    units, seen = [], set()
    for key in keys:
        if key not in samplers and key not in seen:
            seen.add(key)
            units.append(Unit(key, key, {}))
    for key in dict.fromkeys(samplers) if compare else ():
        m = camlib.get_method(key)
        seed = {"seed": args.shap_seed + 1} if any(o.name == "seed" for o in m.options) else {}
        budgets = range(1, compare[-1] + 1) if m.cost is camlib.methods.Cost.PER_ORDERING else compare
        for p in budgets:
            options = {**budget_options(m, n_maps, p), **seed}
            units.append(Unit(m.label(**options), key, options, p, p in compare))
    if not units:
        raise ValueError("no methods given")
    return units


def run_agreement(argv: Sequence[str] | None = None) -> dict:
    import camlib
    from camlib import metrics
    from camlib.cam import saliency_maps

    args = agreement_parser().parse_args(argv)
    if args.permutations < 1:
        raise ValueError("--permutations must be at least 1")
    config = {"permutations": args.permutations, "shap_seed": args.shap_seed}
    r = common.start(args, AGREEMENT, AGREEMENT_FIELDS, AGREEMENT_KEY, config, prefer_nonlinear=True,
                     optional=OPTIONAL)
    r.config["argv"] = list(argv) if argv is not None else sys.argv[1:]
    warning = _linear_warning(r)
    n_maps = r.layer.shape[0]
    units = agreement_units(args, n_maps)
    if any(u.key == "cam" for u in units) and not r.layer.linear_tail:
        raise ValueError(f"CAM needs a linear tail; the tail after {r.layer.name} is nonlinear")
    todo = [(rec, u.label) for rec in r.mine for u in units if (rec.file, u.label) not in r.done]
    skipped = len(r.mine) * len(units) - len(todo)
    if skipped and r.env.is_main:
        common.log(f"{AGREEMENT}: resuming, {skipped} rows of rank {r.env.rank} already done")
    pending = [rec for rec in r.mine if any((rec.file, u.label) not in r.done for u in units)]
    # An ordering estimator's units come from one run with its largest budget (its running estimate).
    runs: dict[tuple, list[Unit]] = {}
    for u in units:
        running = u.budget and camlib.get_method(u.key).cost is camlib.methods.Cost.PER_ORDERING
        runs.setdefault((u.key,) if running else (u.key, u.label), []).append(u)
    computed = 0
    try:
        with r.progress_bar(len(todo), AGREEMENT) as bar:
            for batch in common.batches(pending, args.batch_size):
                images, _ = load_batch(args.data, batch, r.model.input_size)
                refs = [_reference(r, images, i, rec, bar) for i, rec in enumerate(batch)]
                bar.set_postfix_str("")
                for group in runs.values():
                    idx = [i for i, rec in enumerate(batch) if any((rec.file, u.label) not in r.done for u in group)]
                    if not idx:
                        continue
                    sub = [batch[i] for i in idx]
                    target = [refs[i][2] for i in idx]  # the reference's class (gt or its prediction)
                    ref = torch.stack([refs[i][0] for i in idx])
                    last = max(group, key=lambda u: u.budget)
                    method = camlib.get_method(last.key)
                    exp = camlib.explain(r.model, images[idx], last.key, layer=r.layer.name, target=target,
                                         batch_size=args.chunk_size, **last.options)
                    rows = []
                    for u in group:
                        running = method.cost is camlib.methods.Cost.PER_ORDERING and u.budget
                        alpha = exp.info["running"][u.budget - 1] if running else exp.coefficients
                        cos = metrics.cosine_similarity(alpha.cpu(), ref).tolist()
                        constant = (saliency_maps(alpha, exp.activations, tuple(exp.image.shape[-2:]))[2]
                                    if running else exp.constant).tolist()
                        seconds = exp.seconds / len(sub) * (u.budget / last.budget if running else 1.0)
                        rows += [{"image": rec.file, "method": u.label, "target": target[j],
                                  "constant": int(constant[j]), "cosine": float(cos[j]),
                                  "evaluations": method.evaluations(n_maps, **u.options), "seconds": seconds,
                                  "reference_seconds": refs[idx[j]][1]}
                                 for j, rec in enumerate(sub) if (rec.file, u.label) not in r.done]
                    r.store.append(rows)
                    computed += len(rows)
                    bar.update(len(rows))
    finally:
        r.store.close()
    text = common.finish(r, lambda run, rows: agreement_markdown(run, rows, units, warning))
    return {"computed": computed, "skipped": skipped, "markdown": text}


def _known(value) -> float:
    """A CSV cell as a number; NaN where an earlier CSV lacked the column."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _mean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.fmean(values) if values else math.nan


def agreement_markdown(r, rows: list[dict], units: Sequence[Unit], warning: str | None) -> str:
    rows = common.selected_rows(r, rows)
    n_images = len({row["image"] for row in rows})
    by_label: dict[str, list[dict]] = {}
    for row in rows:
        by_label.setdefault(row["method"], []).append(row)
    headers = ["Method", "N", "const.", "cosine to SHAP-CAM (mean [95 % CI])", "median", "min",
               "tail evaluations / image", "s / image"]
    cells, means = [], []
    for u in units:
        mine = by_label.get(u.label, [])
        if not mine or not u.shown:
            continue
        values = [float(row["cosine"]) for row in mine]
        s = summary_or_none(values, 1.0, "t")
        cells.append([u.title, str(len(mine)), constant_cell(mine), fmt_summary(s, 3),
                      f"{statistics.median(values):.3f}", f"{min(values):.3f}",
                      f"{_mean(_known(row['evaluations']) for row in mine):,.0f}",
                      f"{_mean(float(row['seconds']) for row in mine):.3g}"])
        means.append(s.mean if not u.budget else math.nan)
    bold_best(cells, means, 3, True, 3)
    ref_seconds = {row["image"]: float(row["reference_seconds"]) for row in rows}
    tail = "linear" if r.layer.linear_tail else "nonlinear"
    target = "ground-truth class" if r.args.target == "gt" else "predicted class"
    lines = [f"# SHAP agreement: {r.model.title}, layer `{r.layer.name}` ({tail} tail)", ""]
    if warning:
        lines += [f"> **{warning}**", ""]
    lines += [f"`{common.command_line(r.config.get('argv'), AGREEMENT.replace('_', '-'))}`", "",
              f"{n_images} images of `{r.args.data}`; target = {target}; reference: SHAP-CAM with "
              f"\\|Π\\| = {r.args.permutations} orderings (seed {r.args.shap_seed}), "
              + (f"{sum(ref_seconds.values()) / len(ref_seconds):.3g} s / image." if ref_seconds else "no rows."),
              "", markdown_table(headers, cells), "",
              "Cosine similarity of the coefficient vectors α (Table 2 of the paper), mean over images with a "
              "Student-t 95 % interval; the best CAM at its default options is bold. The sampling estimators' rows "
              "(\\|Π\\| orderings, or as many coalitions as their tail evaluations) use another seed than the "
              "reference's and show how far an estimate with that budget is from it. Tail evaluations are nominal "
              "(Method.evaluations: K + 1 per ordering, one per coalition, one pass, K per map); the fast "
              "coalition evaluator computes most of them without a tail pass. `const.`: images on which the "
              "method's map ReLU(Σ α_k A_k) is constant (all zero). The cosine compares α whatever the map, so "
              "it is unaffected; the count says how often coefficients near SHAP-CAM's still give no visible "
              "map.", ""]
    budget = budget_markdown(units, by_label)
    if budget:
        lines += budget
    return "\n".join(lines)


def budget_markdown(units: Sequence[Unit], by_label: dict[str, list[dict]]) -> list[str]:
    """The budget table: per sampling estimator and compared |Π|, the tail evaluations at which its
    mean cosine (over the images) first reaches plain SHAP-CAM's at |Π|, and their ratio to
    |Π| (K + 1). Empty without SHAP-CAM rows."""
    import camlib

    baseline = {u.budget: u for u in units if u.key == REFERENCE and u.shown and u.budget}
    if not baseline:
        return []
    images = set.intersection(*[{row["image"] for row in by_label.get(u.label, [])} for u in units if u.budget])
    if not images:
        return []

    def curve(key: str) -> tuple[list[float], list[float]]:
        mine = sorted((u for u in units if u.key == key and u.budget), key=lambda u: u.budget)
        points = [(_mean(_known(row["evaluations"]) for row in by_label.get(u.label, []) if row["image"] in images),
                   _mean(float(row["cosine"]) for row in by_label.get(u.label, []) if row["image"] in images))
                  for u in mine]
        return [e for e, _ in points], [c for _, c in points]

    samplers = list(dict.fromkeys(u.key for u in units if u.budget))
    curves = {key: curve(key) for key in samplers}
    targets = {p: (_mean(_known(row["evaluations"]) for row in by_label[u.label] if row["image"] in images),
                   _mean(float(row["cosine"]) for row in by_label[u.label] if row["image"] in images))
               for p, u in sorted(baseline.items())}
    headers = ["Estimator", *[f"\\|Π\\| = {p}: cos {c:.4f} at {e:,.0f}" for p, (e, c) in targets.items()]]
    cells = []
    for key in samplers:
        evaluations, cosine = curves[key]
        row = [camlib.get_method(key).title]
        for p, (spent, target_cos) in targets.items():
            needed = budget_to_reach(evaluations, cosine, target_cos - 1e-12)
            row.append(f"> {evaluations[-1]:,.0f}" if needed is None else f"{needed:,.0f} ({needed / spent:.2f}×)")
        cells.append(row)
    return ["Tail evaluations per image from which on each estimator's mean cosine over the "
            f"{len(images)} images stays at least plain SHAP-CAM's at \\|Π\\| orderings (column heads: that "
            "cosine and SHAP-CAM's evaluations, \\|Π\\| (K + 1)), and the ratio to them (the budget ratio: "
            "below 1, fewer evaluations than Algorithm 1 for its accuracy). An ordering estimator is measured at "
            "every \\|Π\\| up to the largest (its running estimate), a coalition estimator at the compared "
            "budgets only (an upper bound); one ordering is the least an ordering estimator spends, and `>`: not "
            "reached within the largest budget run.",
            "", markdown_table(headers, cells), ""]


# ================================================================================================
# shap-table1
# ================================================================================================

TABLE1 = "shap_table1"
TABLE1_FIELDS = ("image", "method", "permutations", "seed", "target", "predicted", "constant", "Y", "O", "D", "ic",
                 "ad", "add", "seconds")
TABLE1_KEY = ("image", "method", "permutations", "seed")


def table1_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m camlib.bench shap-table1",
                                description="IC / AD / ADD of SHAP-CAM_1/10/100 averaged over seeds "
                                            "(the paper's Table 1).")
    common.add_common_arguments(p, methods=None,
                                layer_help="CAM layer (default: the first preset layer with a nonlinear tail, "
                                           "blocks.6 for EfficientNet-Lite0)")
    p.add_argument("--permutations", type=int, nargs="+", default=[1, 10, 100], metavar="P",
                   help="the |Π| values (default: 1 10 100)")
    p.add_argument("--seeds", type=int, default=3, help="runs per |Π|, orderings seeds 0 .. N-1 (default 3)")
    return p


def run_table1(argv: Sequence[str] | None = None) -> dict:
    import camlib
    from camlib import metrics
    from camlib.cam import saliency_maps

    args = table1_parser().parse_args(argv)
    perms = sorted(set(args.permutations))
    if perms[0] < 1 or args.seeds < 1:
        raise ValueError("--permutations and --seeds must be at least 1")
    extra = []
    for name in args.methods:
        key = common.method_key(name)
        if key != "shapcam" and key not in extra:
            extra.append(key)
    r = common.start(args, TABLE1, TABLE1_FIELDS, TABLE1_KEY, {}, prefer_nonlinear=True, optional=OPTIONAL)
    r.config["argv"] = list(argv) if argv is not None else sys.argv[1:]
    warning = _linear_warning(r)
    units = [("shapcam", str(p), str(s)) for s in range(args.seeds) for p in perms] + [(m, "0", "0") for m in extra]
    todo = [(rec, u) for rec in r.mine for u in units if (rec.file, *u) not in r.done]
    skipped = len(r.mine) * len(units) - len(todo)
    if skipped and r.env.is_main:
        common.log(f"{TABLE1}: resuming, {skipped} rows of rank {r.env.rank} already done")
    pending = [rec for rec in r.mine if any((rec.file, *u) not in r.done for u in units)]
    logits_fn = r.logits_fn()
    computed = 0
    try:
        with r.progress_bar(len(todo), TABLE1) as bar:
            for batch in common.batches(pending, args.batch_size):
                images, _ = load_batch(args.data, batch, r.model.input_size)
                maps = []  # per map: (row without the metric values, its image's index, saliency, target)
                for seed in range(args.seeds):
                    idx = [i for i, rec in enumerate(batch)
                           if any((rec.file, "shapcam", str(p), str(seed)) not in r.done for p in perms)]
                    if not idx:
                        continue
                    exp = camlib.explain(r.model, images[idx], "shapcam", layer=r.layer.name,
                                         target=r.targets([batch[i] for i in idx]), batch_size=args.chunk_size,
                                         permutations=perms[-1], seed=seed)
                    for p in perms:
                        _, saliency, constant = saliency_maps(exp.info["running"][p - 1], exp.activations,
                                                              tuple(exp.image.shape[-2:]))
                        maps += [(_table1_row(batch[i], exp, j, "shapcam", p, seed, constant[j]), i, saliency[j],
                                  exp.target[j]) for j, i in enumerate(idx)
                                 if (batch[i].file, "shapcam", str(p), str(seed)) not in r.done]
                for key in extra:
                    idx = [i for i, rec in enumerate(batch) if (rec.file, key, "0", "0") not in r.done]
                    if not idx:
                        continue
                    exp = camlib.explain(r.model, images[idx], key, layer=r.layer.name,
                                         target=r.targets([batch[i] for i in idx]), batch_size=args.chunk_size)
                    maps += [(_table1_row(batch[i], exp, j, key, 0, 0, exp.constant[j]), i, exp.saliency[j],
                              exp.target[j]) for j, i in enumerate(idx)]
                if not maps:
                    continue
                # all maps of the batch in one metrics call: x once per image, e and e_inv per map
                saliency = torch.stack([m[2] for m in maps])
                conf = metrics.score_maps(logits_fn, images.to(saliency.device), saliency,
                                          torch.stack([m[3] for m in maps]), [m[1] for m in maps], steps=0,
                                          batch_size=r.metrics_batch).confidence
                rows = [{**row, "Y": float(conf.Y[j]), "O": float(conf.O[j]), "D": float(conf.D[j]),
                         "ic": float(conf.ic[j]), "ad": float(conf.ad[j]), "add": float(conf.add[j])}
                        for j, (row, _, _, _) in enumerate(maps)]
                r.store.append(rows)
                computed += len(rows)
                bar.update(len(rows))
    finally:
        r.store.close()
    text = common.finish(r, lambda run, rows: table1_markdown(run, rows, perms, args.seeds, extra, warning))
    return {"computed": computed, "skipped": skipped, "markdown": text}


def _table1_row(record, exp, j: int, method: str, p: int, seed: int, constant) -> dict:
    """The columns of a shap-table1 row known before scoring (map ``j`` of the batched ``exp``)."""
    return {"image": record.file, "method": method, "permutations": p, "seed": seed,
            "target": int(exp.target[j]), "predicted": int(exp.logits[j].argmax()), "constant": int(constant),
            "seconds": exp.seconds / exp.target.shape[0]}


def _per_image_mean(rows: list[dict], field: str) -> dict[str, float]:
    values: dict[str, list[float]] = {}
    for row in rows:
        values.setdefault(row["image"], []).append(float(row[field]))
    return {image: sum(v) / len(v) for image, v in values.items()}


METRICS = (("IC (%)", "ic", True), ("AD (%)", "ad", False), ("ADD (%)", "add", True))


def table1_markdown(r, rows: list[dict], perms, seeds: int, extra, warning: str | None) -> str:
    rows = common.selected_rows(r, rows)
    n_images = len({row["image"] for row in rows})
    tail = "linear" if r.layer.linear_tail else "nonlinear"
    target = "ground-truth class" if r.args.target == "gt" else "predicted class"
    lines = [f"# SHAP-CAM faithfulness vs \\|Π\\|: {r.model.title}, layer `{r.layer.name}` ({tail} tail)", ""]
    if warning:
        lines += [f"> **{warning}**", ""]
    lines += [f"`{common.command_line(r.config.get('argv'), TABLE1.replace('_', '-'))}`", "",
              f"{n_images} images of `{r.args.data}`; target = {target}; {seeds} runs (orderings seeds "
              f"0..{seeds - 1}); SHAP-CAM_p of a run = the first p orderings of its {perms[-1]}-ordering sequence.",
              ""]
    tables = table1_tables(rows, perms, seeds, extra)
    lines += [tables[0], "",
              "mean: the metric over images, averaged over the runs (as the paper's Table 1); sd: its standard "
              "deviation over the runs; [95 % CI]: over images, of the per-image run-averaged terms. `const.`: "
              "maps (runs × images) that were constant (saliency all zero: a black explanation image, "
              "docs/METRICS.md). `s / image`: time of the run that produced the row (shared by all p of a run).", ""]
    if len(tables) > 1:
        lines += ["Paired differences over the same images (per image, the mean over the runs; mean [95 % t "
                  "interval] over images, percentage points; `const.`: constant maps of the first term, then of "
                  "the second):", "", tables[1], ""]
    keep, n_constant, n_unknown = nonconstant_items(rows)
    if not n_constant and not n_unknown:
        lines += ["No map is constant: the tables above are also those over the images on which every map is "
                  "non-constant.", ""]
    else:
        lines += [nonconstant_note(len(keep), n_images, n_constant, n_unknown, who="every run and method"), ""]
        sub = [row for row in rows if row["image"] in keep]
        lines += sum(([t, ""] for t in table1_tables(sub, perms, seeds, extra)), []) if sub else ["(no such image)", ""]
    return "\n".join(lines)


def table1_tables(rows: list[dict], perms, seeds: int, extra) -> list[str]:
    """The Table 1 analog of ``rows`` and, when there are two p's or more, its paired differences
    (Markdown tables): each p against the smallest p, each p against the one before it (from the
    third p on), and the largest p against each other method (``extra``)."""
    groups = [(f"shapcam_{p}", [row for row in rows if row["method"] == "shapcam" and row["permutations"] == str(p)
                                and int(row["seed"]) < seeds]) for p in perms]
    groups += [(key, [row for row in rows if row["method"] == key]) for key in extra]
    headers = ["Method", "runs × images", "const.", *[m[0] + " mean ± sd(runs) [95 % CI]" for m in METRICS],
               "s / image"]
    cells, means = [], {m[1]: [] for m in METRICS}
    per_image = {}
    for label, mine in groups:
        if not mine:
            continue
        runs = sorted({row["seed"] for row in mine})
        line = [common.method_title(label), f"{len(runs)} × {len({row['image'] for row in mine})}",
                constant_cell(mine)]
        for _, field, _ in METRICS:
            by_run = [100.0 * statistics.fmean(float(row[field]) for row in mine if row["seed"] == s) for s in runs]
            mean = statistics.fmean(by_run)
            sd = statistics.stdev(by_run) if len(by_run) > 1 else 0.0
            avg = _per_image_mean(mine, field)
            per_image[(label, field)] = avg
            binary = all(v in (0.0, 1.0) for v in avg.values())
            s = summary_or_none(list(avg.values()), 100.0, "wilson" if field == "ic" and binary else "t")
            line.append(f"{mean:.2f} ± {sd:.2f} [{s.ci_low:.2f}, {s.ci_high:.2f}]")
            means[field].append(mean)
        line.append(f"{statistics.fmean(float(row['seconds']) for row in mine):.3g}")
        cells.append(line)
    for j, (_, field, higher) in enumerate(METRICS):
        bold_best(cells, means[field], 3 + j, higher, 2)
    tables = [markdown_table(headers, cells)]
    # each p against the smallest, each against the one before (from the third on), the largest
    # against every other method
    ps = [f"shapcam_{p}" for p in perms]
    pairs = [(label, ps[0]) for label in ps[1:]] + [(ps[i], ps[i - 1]) for i in range(2, len(ps))]
    pairs += [(ps[-1], key) for key in extra]
    by_label = dict(groups)
    diffs = []
    for label, base in pairs:
        if (label, "ic") not in per_image or (base, "ic") not in per_image:
            continue
        line = [f"{common.method_title(label)} − {common.method_title(base)}",
                f"{constant_cell(by_label[label])}, {constant_cell(by_label[base])}"]
        for _, field, _ in METRICS:
            a, b = per_image[(label, field)], per_image[(base, field)]
            common_images = sorted(set(a) & set(b))
            s = summary_or_none([a[i] - b[i] for i in common_images], 100.0, "t")
            line.append("—" if s is None else fmt_summary(s, 2))
        diffs.append(line)
    if diffs:
        tables.append(markdown_table(["Difference", "const.", *[m[0] for m in METRICS]], diffs))
    return tables


def _main(run, argv) -> int:
    from camlib.bench.data import DataError

    try:
        result = run(argv)
    except (DataError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result["markdown"]:
        print(result["markdown"])
    return 0


def main_agreement(argv: Sequence[str] | None = None) -> int:
    return _main(run_agreement, argv)


def main_table1(argv: Sequence[str] | None = None) -> int:
    return _main(run_table1, argv)
