"""SHAP-CAM's prefix evaluation: the two coalition backends timed against each other, and SHAP-CAM_|Π|
end to end.

This section benchmarks the backends themselves, so it is the one place in the benchmark that uses
camlib's engine directly: the reference :class:`~camlib.engine.reference.coalitions.NaiveCoalitions`
(K + 1 tail passes per ordering) against the fast
:class:`~camlib.engine.fast.coalitions.FastCoalitions` on the same activations, tail, target and
orderings, and whether the fast one's fused clamp-readout kernel (``FastCoalitions.readout``,
:mod:`camlib.engine.kernels.clampsum`) applies. Everything else in the benchmark goes through
``camlib.explain`` and learns which backend ran from ``Explanation.info["backends"]``.
"""

from __future__ import annotations

import statistics
import time

import torch

import camlib
from camlib.bench.speed.machine import sync
from camlib.bench.speed.subject import Subject
from camlib.engine.fast.coalitions import FastCoalitions
from camlib.engine.reference.coalitions import NaiveCoalitions
from camlib.methods.shapley import ORDERINGS_PER_PASS, sample_permutations

#: The method this section times end to end (its ``permutations`` option is |Π|); the section runs
#: when it is among ``--methods``.
METHOD = "shapcam"
# SHAP-CAM prefix-evaluation layers per model (the issue's: VGG16's last ReLU, Lite0 blocks.6).
SHAP_LAYERS = {"vgg16": ("features.29",), "efficientnet_lite0": ("blocks.6", "bn2"), "resnet50": ("layer4",),
               "resnet18": ("layer4",)}


def time_shap(s: Subject, layer: str, repeats: int, permutation_counts, batch_size: int, log=print) -> dict:
    """Naive vs fast prefix evaluation of SHAP-CAM at ``layer``: per-ordering times, the one-off
    cost of building FastCoalitions, SHAP-CAM_|Π| end to end.

    The fast path is timed as SHAP-CAM runs it, on groups of ``ORDERINGS_PER_PASS`` orderings
    (``prefix_values_many``; per ordering = the group's time / its size), and also on one ordering
    alone; the naive path costs the same per ordering either way (K + 1 tail passes each)."""
    split = s.model.split(layer)
    with torch.inference_mode():
        a, *fixed = split.head(s.model.normalize(s.image))
    a = a.clone()
    fixed = tuple(f.clone() for f in fixed)
    k = a.shape[1]
    group = ORDERINGS_PER_PASS
    orders = sample_permutations(k, repeats * group, 0).view(repeats, group, k)
    naive = NaiveCoalitions(split.tail, a, fixed, s.target, batch_size)
    warm = FastCoalitions(split.tail, a, fixed, s.target, batch_size)  # warm-up (and the kernel's compilation)
    warm.prefix_values(orders[0, 0])
    warm.prefix_values_many(orders[0])
    naive.prefix_values(orders[0, 0])
    t_naive, t_build, t_fast, t_single, diffs = [], [], [], [], []
    for r in range(repeats):
        sync(s.device)
        start = time.perf_counter()
        v_naive = naive.prefix_values(orders[r, 0])
        sync(s.device)
        t_naive.append(time.perf_counter() - start)
        start = time.perf_counter()
        fast = FastCoalitions(split.tail, a, fixed, s.target, batch_size)
        sync(s.device)
        t_build.append(time.perf_counter() - start)
        start = time.perf_counter()
        v_fast = fast.prefix_values_many(orders[r])
        sync(s.device)
        t_fast.append((time.perf_counter() - start) / group)
        start = time.perf_counter()
        v_single = fast.prefix_values(orders[r, 0])
        sync(s.device)
        t_single.append(time.perf_counter() - start)
        diffs.append(max((v_naive.double() - v_fast[0].double()).abs().max().item(),
                         (v_naive.double() - v_single.double()).abs().max().item()))
    row = {"model": s.name, "layer": split.layer, "maps": k, "linear": split.linear_tail,
           "naive": statistics.median(t_naive), "build": statistics.median(t_build),
           "fast": statistics.median(t_fast), "fast_single": statistics.median(t_single), "group": group,
           "kernel": warm.readout is not None, "max_diff": max(diffs), "runs": repeats}
    row["speedup"] = row["naive"] / row["fast"] if row["fast"] > 0 else float("inf")
    row["shapcam"] = {}
    for count in permutation_counts:
        ts = []
        for _ in range(1 if row["fast"] * count > 20 else repeats):
            sync(s.device)
            start = time.perf_counter()
            camlib.explain(s.model, s.image[0], METHOD, layer, s.target, permutations=count, batch_size=batch_size)
            sync(s.device)
            ts.append(time.perf_counter() - start)
        row["shapcam"][count] = statistics.median(ts)
        # amortised speed-up of the whole SHAP-CAM_|Π| over |Π| naive orderings
        row[f"speedup_{count}"] = row["naive"] * count / row["shapcam"][count]
    log(f"  shap {s.name} {layer}: naive {row['naive']:.4f} s/ordering, fast {row['fast']:.5f} s/ordering "
        f"in groups of {group} ({row['fast_single']:.5f} alone{', fused kernel' if row['kernel'] else ''}) "
        f"(+{row['build']:.4f} s once), x{row['speedup']:.1f}; " +
        ", ".join(f"SHAP-CAM_{c} {t:.3f} s" for c, t in row["shapcam"].items()))
    return row
