"""Batches: camlib explaining N images in one call against N calls of one image each."""

from __future__ import annotations

import statistics
import time

import camlib
from camlib.bench.speed.cases import method_options
from camlib.bench.speed.machine import sync
from camlib.bench.speed.subject import Subject, sample_images


def time_batches(s: Subject, methods, images: int, repeats: int, single_seconds: dict, budget: float,
                 permutations: int, batch_size: int, log=print) -> list[dict]:
    """Per-image seconds of camlib explaining ``images`` images in one call vs one call each.

    A method whose one-image time makes 2 × images × t exceed ``budget`` seconds runs on fewer
    images (at least 2) and once; the row says how many."""
    rows = []
    for method in methods:
        options = method_options(method, permutations=permutations)
        t1 = single_seconds.get(method)
        n, reps = images, repeats
        if t1 is not None and 2 * images * t1 * repeats > budget:
            reps = 1
            n = max(2, min(images, int(budget / (2 * t1))))
        x = sample_images(s.model, n)

        def batch():
            return camlib.explain(s.model, x, method, s.layer, batch_size=batch_size, **options)

        def single():
            for i in range(n):
                camlib.explain(s.model, x[i], method, s.layer, batch_size=batch_size, **options)

        if reps > 1 or t1 is None or t1 < 2:
            batch(), single()  # warm-up
        tb, ts = [], []
        for _ in range(reps):
            for fn, store in ((batch, tb), (single, ts)):
                sync(s.device)
                start = time.perf_counter()
                fn()
                sync(s.device)
                store.append((time.perf_counter() - start) / n)
        row = {"model": s.name, "layer": s.layer, "method": method, "images": n, "runs": reps,
               "single": statistics.median(ts), "batch": statistics.median(tb)}
        row["ratio"] = row["batch"] / row["single"]
        log(f"  batch {method:12s} {n} images: {row['batch']:.4f} s/img vs one at a time {row['single']:.4f} "
            f"s/img ({row['ratio']:.2f}x)")
        rows.append(row)
    return rows
