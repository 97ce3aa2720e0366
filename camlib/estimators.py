"""How fast each estimator of the maps' SHAP values approaches them, per tail evaluation (paper Table 2,
for one image, as curves).

The SHAP values α of the maps (paper Sec. 3.2, Eq. 6) are estimated by sampling: orderings of the
maps (SHAP-CAM's Algorithm 1 and its variance-reduced samplers, ``Cost.PER_ORDERING``) or coalitions
of maps (``Cost.PER_SAMPLE``: LIME-CAM, KernelSHAP-CAM), or approximated in one pass (LIFT-CAM, the
Grad-CAM family, ``Cost.ONE_PASS``) or with one evaluation per map (Ablation-CAM, ``Cost.PER_MAP``).
:func:`compare_estimators` measures, for one image, layer and target, the cosine similarity of each
one's α to a reference (SHAP-CAM with many orderings) against the nominal number of tail
evaluations it spent (:meth:`camlib.methods.base.Method.evaluations`), with the seconds.

Everything is chosen from the methods' metadata (:data:`camlib.methods.METHODS`: ``cost``,
``options``, ``evaluations``, ``network_passes``), so a new method appears here by being registered:

* a sampling estimator's budget is its ``permutations`` option (orderings; K + 1 evaluations
  each) or its ``samples`` option (coalitions), the two options :meth:`Method.evaluations` reads;
  different seeds (``seed``) give the band of a curve;
* an ordering estimator returns its running estimate ``info["running"]`` (|Π|, B, K), so one run
  with the largest budget gives the whole curve; a coalition estimator runs once per budget, at
  ``samples`` = p (K + 1) for p on :func:`budget_grid` (the evaluations of p orderings);
* the other methods whose evaluations are of the tail are points (Score-CAM's are passes of the
  whole network on masked images, not of the tail: it is left out); a method that refuses the
  layer (CAM on a nonlinear tail) is listed in ``skipped`` with its message.

The reference is SHAP-CAM with ``reference_permutations`` orderings (default 1000) and seed
``reference_seed`` (0); the compared runs use the seeds ``reference_seed + 1, + 2, ...``, so that
their orderings are independent of the reference's. Its own error is that of SHAP-CAM_1000: the
curves of the best estimators flatten near 1 - ε with ε that of the reference (docs/RESULTS.md).
On a linear tail every ordering gives the exact SHAP values (every curve is 1 from the first one).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

import torch

from camlib.metrics import cosine_similarity
from camlib.methods import METHODS, Cost, Method

#: The option that sets a sampling estimator's budget, by cost (what Method.evaluations reads).
BUDGET_OPTIONS = {Cost.PER_ORDERING: "permutations", Cost.PER_SAMPLE: "samples"}
#: The reference: SHAP-CAM (Algorithm 1) with many orderings.
REFERENCE = "shapcam"


@dataclasses.dataclass(frozen=True)
class Curve:
    """A sampling estimator against its budget: ``evaluations`` (n,) nominal tail evaluations per
    image, ``cosine`` and ``seconds`` (S, n), one row per seed (``seeds``), and the ``estimates``
    α themselves (S, n, K) float32."""

    key: str
    title: str
    evaluations: torch.Tensor
    cosine: torch.Tensor
    seconds: torch.Tensor
    seeds: tuple[int, ...]
    estimates: torch.Tensor


@dataclasses.dataclass(frozen=True)
class Point:
    """A method with a fixed cost: its tail evaluations, cosine to the reference and seconds."""

    key: str
    title: str
    evaluations: int
    cosine: float
    seconds: float


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The result of :func:`compare_estimators` for one image (see the module docstring)."""

    layer: str
    target: int
    n_maps: int
    linear_tail: bool
    reference: torch.Tensor  # (K,) float64
    reference_permutations: int
    reference_seed: int
    reference_evaluations: int
    reference_seconds: float
    curves: dict[str, Curve]
    points: dict[str, Point]
    skipped: dict[str, str]


def budget_option(method: Method) -> str | None:
    """The name of the option that sets ``method``'s budget, or None (not a sampling estimator)."""
    name = BUDGET_OPTIONS.get(method.cost)
    return name if name is not None and any(o.name == name for o in method.options) else None


def sampling_methods() -> list[str]:
    """The keys of the sampling estimators (a budget option), in the order front ends show them."""
    return [k for k, m in METHODS.items() if budget_option(m) is not None]


def point_methods() -> list[str]:
    """The keys of the methods with a fixed number of tail evaluations (one pass, or one per map),
    without those that evaluate the whole network instead (Score-CAM)."""
    return [k for k, m in METHODS.items() if budget_option(m) is None and not m.network_passes]


def budget_options(method: Method, n_maps: int, orderings: int) -> dict:
    """The options that give ``method`` the budget of ``orderings`` orderings of SHAP-CAM:
    ``permutations`` = p for an ordering estimator, ``samples`` = p (K + 1) coalitions (clipped to
    the option's bounds) for a coalition estimator."""
    name = budget_option(method)
    if name is None:
        raise ValueError(f"{method.title} has no budget option")
    value = orderings if method.cost is Cost.PER_ORDERING else orderings * (n_maps + 1)
    option = method.option(name)
    value = max(option.minimum or 1, min(value, option.maximum if option.maximum is not None else value))
    return {name: int(value)}


def budget_grid(orderings: int) -> list[int]:
    """Budgets (in orderings) at which a coalition estimator runs: 1, 2, 5, 10, 20, 50, ... up to
    and including ``orderings``."""
    grid, scale = [], 1
    while scale <= orderings:
        grid += [v for v in (scale, 2 * scale, 5 * scale) if v < orderings]
        scale *= 10
    return sorted(set(grid)) + [int(orderings)]


def budget_to_reach(evaluations: Sequence[float], cosine: Sequence[float], target: float) -> float | None:
    """The smallest budget among ``evaluations`` (increasing) from which on ``cosine`` stays at least
    ``target`` (a noisy curve that touches the target early and dips again does not count); None if
    the last one is below it."""
    needed = None
    for e, c in zip(evaluations, cosine):
        if float(c) >= target:
            needed = float(e) if needed is None else needed
        else:
            needed = None
    return needed


def _timed_progress(report: Callable[[float], None] | None):
    """A progress callback that records (fraction, seconds since its creation) and forwards the fraction."""
    start = time.perf_counter()
    marks = [(0.0, 0.0)]

    def progress(fraction: float) -> None:
        marks.append((float(fraction), time.perf_counter() - start))
        if report is not None:
            report(fraction)

    return progress, marks


def _seconds_along(marks: list, total: float, count: int) -> torch.Tensor:
    """Seconds after each of ``count`` orderings, from the progress marks (every
    ORDERINGS_PER_PASS orderings): interpolated between the marks; before the first one, the time of
    the head and the game's setup is taken as the first mark minus one group's time."""
    fractions = [f for f, _ in marks[1:]]
    times = [t for _, t in marks[1:]]
    if not fractions or fractions[-1] < 1.0:
        fractions.append(1.0)
        times.append(total)
    if len(fractions) >= 2:
        slope = (times[1] - times[0]) / max(fractions[1] - fractions[0], 1e-12)
        setup = max(0.0, times[0] - slope * fractions[0])
    else:
        setup = 0.0
    x = torch.tensor([0.0, *fractions], dtype=torch.float64)
    y = torch.tensor([setup, *times], dtype=torch.float64)
    at = torch.arange(1, count + 1, dtype=torch.float64) / count
    index = torch.searchsorted(x, at).clamp(1, len(x) - 1)
    x0, x1, y0, y1 = x[index - 1], x[index], y[index - 1], y[index]
    return y0 + (y1 - y0) * (at - x0) / (x1 - x0).clamp_min(1e-12)


def compare_estimators(model, image, layer: str | None = None, target=None, *, orderings: int = 100,
                       seeds: int = 3, reference_permutations: int = 1000, reference_seed: int = 0,
                       samplers: Sequence[str] | None = None, points: Sequence[str] | None = None,
                       sampled_orderings: int | None = None, batch_size: int = 64,
                       progress: Callable[[float], None] | None = None, **inputs) -> Comparison:
    """Cosine to SHAP-CAM_``reference_permutations`` against tail evaluations, for one image.

    ``image``: what :func:`camlib.explain` takes, one image. ``orderings``: the largest budget, in
    orderings (p (K + 1) evaluations); ``seeds``: runs per sampling estimator (the band);
    ``samplers`` / ``points``: method keys (default :func:`sampling_methods` / :func:`point_methods`);
    ``sampled_orderings``: the largest budget of the coalition estimators (default ``orderings``; each
    of their budgets is a run of its own, and each coalition a tail evaluation without the
    prefixes' shortcuts, so a front end may keep it smaller);
    ``inputs``: model inputs (``question`` for the VQA model, held fixed). ``progress``: the fraction
    done, by nominal tail evaluations. See the module docstring for what is measured.
    """
    import camlib

    sampled_orderings = orderings if sampled_orderings is None else sampled_orderings
    if min(orderings, seeds, reference_permutations, sampled_orderings) < 1:
        raise ValueError("orderings, seeds, reference_permutations and sampled_orderings must be at least 1")
    samplers = sampling_methods() if samplers is None else [camlib.get_method(k).key for k in samplers]
    points = point_methods() if points is None else [camlib.get_method(k).key for k in points]
    info = model.layer_info(layer)
    k = info.shape[0]
    methods = {key: METHODS[key] for key in [*samplers, *points]}
    reference_work = METHODS[REFERENCE].evaluations(k, permutations=reference_permutations)
    work = {}
    for key in samplers:
        m = methods[key]
        budgets = [orderings] if m.cost is Cost.PER_ORDERING else budget_grid(sampled_orderings)
        work[key] = seeds * sum(m.evaluations(k, **budget_options(m, k, b)) for b in budgets)
    for key in points:
        work[key] = methods[key].evaluations(k)
    total, done = float(reference_work + sum(work.values())), [0.0]

    def part(amount: float):
        def report(fraction: float) -> None:
            if progress is not None:
                progress(min(1.0, (done[0] + amount * min(max(fraction, 0.0), 1.0)) / total))
        return report

    def finish(amount: float) -> None:
        done[0] += amount
        if progress is not None:
            progress(min(1.0, done[0] / total))

    def run(key: str, report=None, **options):
        return camlib.explain(model, image, key, layer=info.name, target=target_index, batch_size=batch_size,
                              progress=report, **options, **inputs)

    target_index = target
    reference_exp = run(REFERENCE, part(reference_work), permutations=reference_permutations, seed=reference_seed)
    finish(reference_work)
    target_index = int(reference_exp.target)
    reference = reference_exp.coefficients.double().cpu()

    curves = {}
    for key in samplers:
        m = methods[key]
        seed_values = tuple(reference_seed + 1 + s for s in range(seeds))
        seeded = any(o.name == "seed" for o in m.options)
        rows_cos, rows_sec, rows_est = [], [], []
        if m.cost is Cost.PER_ORDERING:
            evaluations = torch.tensor([m.evaluations(k, permutations=p) for p in range(1, orderings + 1)])
            for s in seed_values:
                report, marks = _timed_progress(part(work[key] / seeds))
                exp = run(key, report, permutations=orderings, **({"seed": s} if seeded else {}))
                running = exp.info["running"][:, 0].double().cpu()  # (P, K)
                rows_est.append(running.float())
                rows_cos.append(cosine_similarity(running, reference).double())
                rows_sec.append(_seconds_along(marks, exp.seconds, orderings))
                finish(work[key] / seeds)
        else:
            options = [budget_options(m, k, b) for b in budget_grid(sampled_orderings)]
            evaluations = torch.tensor([m.evaluations(k, **o) for o in options])
            for s in seed_values:
                cos, sec, est = [], [], []
                for o in options:
                    amount = m.evaluations(k, **o)
                    exp = run(key, part(amount), **o, **({"seed": s} if seeded else {}))
                    est.append(exp.coefficients.float().cpu())
                    cos.append(float(cosine_similarity(exp.coefficients.double().cpu(), reference)))
                    sec.append(exp.seconds)
                    finish(amount)
                rows_cos.append(torch.tensor(cos, dtype=torch.float64))
                rows_sec.append(torch.tensor(sec, dtype=torch.float64))
                rows_est.append(torch.stack(est))
        curves[key] = Curve(key, m.title, evaluations, torch.stack(rows_cos), torch.stack(rows_sec), seed_values,
                            torch.stack(rows_est))

    found, skipped = {}, {}
    for key in points:
        m = methods[key]
        try:
            exp = run(key, part(work[key]))
        except ValueError as exc:  # e.g. CAM on a nonlinear tail
            skipped[key] = str(exc)
        else:
            found[key] = Point(key, m.title, m.evaluations(k), float(cosine_similarity(
                exp.coefficients.double().cpu(), reference)), exp.seconds)
        finish(work[key])
    return Comparison(layer=info.name, target=target_index, n_maps=k, linear_tail=info.linear_tail,
                      reference=reference, reference_permutations=reference_permutations,
                      reference_seed=reference_seed, reference_evaluations=reference_work,
                      reference_seconds=reference_exp.seconds, curves=curves, points=found, skipped=skipped)
