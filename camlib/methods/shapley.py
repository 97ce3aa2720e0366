"""Shapley values of the maps' coalition game (paper Sec. 3.2): the exact sum and its sampling.

The game: a coalition a' ⊆ {1..K} of maps keeps them and zeroes the others; its value is
v(a') = F^c(h_A(a')). The SHAP values solve Eq. (6):

    α_k = Σ_{a' ∌ k} |a'|! (K - |a'| - 1)! / K! · [v(a' ∪ k) - v(a')]

:func:`exact_shapley` enumerates all 2^K coalitions (a test oracle for K ≤ ~12). Algorithm 1
(SHAP-CAM) instead averages each map's marginal contribution v(prefix with k) - v(prefix before k)
over random orderings π: :func:`sample_permutations` draws them, :func:`running_estimate` walks them
on one image's game. Shared by the estimators over orderings (:mod:`camlib.methods.shapcam` and its
faster samplers).
"""

from __future__ import annotations

import itertools
import math
from typing import Callable

import torch

from camlib.methods.base import Game

# Orderings evaluated together (the CPU's fused clamp-readout kernel reads the tail's per-map
# contributions once per group: per ordering 7.3 ms alone, 2.7 ms in 4, 1.7 ms in 16 on Lite0 blocks.6).
ORDERINGS_PER_PASS = 16


def sample_permutations(n: int, count: int, seed: int) -> torch.Tensor:
    """``count`` uniformly random orderings of n maps, (count, n), reproducible from ``seed``
    on any device (drawn on the CPU)."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.stack([torch.randperm(n, generator=generator) for _ in range(count)])


def running_estimate(game: Game, orders: torch.Tensor, out: torch.Tensor,
                     report: Callable[[int], None] | None = None) -> None:
    """Algorithm 1 on one image: ``out[p]`` (P, K) = the mean over the first p + 1 orderings of
    each map's marginal contribution, accumulated in float64. ``orders`` (P, K) on the CPU;
    ``report(done)`` after each group of :data:`ORDERINGS_PER_PASS` orderings."""
    total = torch.zeros(orders.shape[1], device=out.device, dtype=torch.float64)
    for start in range(0, orders.shape[0], ORDERINGS_PER_PASS):
        group = orders[start:start + ORDERINGS_PER_PASS].to(out.device)
        values = game.prefix_values_many(group).double()
        for p, (order, v) in enumerate(zip(group, values), start):
            total[order] += v[1:] - v[:-1]
            out[p] = (total / (p + 1)).to(out.dtype)
        if report is not None:
            report(start + len(group))


def exact_shapley(values: Callable[[torch.Tensor], torch.Tensor], n: int) -> torch.Tensor:
    """Exact Shapley values (Eq. 6) by enumerating all 2^n coalitions; ``values(masks (m, n) bool)``
    returns the game's value of each coalition. Exponential: for tests with n ≤ ~12."""
    masks = torch.tensor(list(itertools.product([False, True], repeat=n)))
    v = values(masks).double()
    index = {tuple(m.tolist()): i for i, m in enumerate(masks)}
    phi = torch.zeros(n, dtype=torch.float64)
    for i, m in enumerate(masks):
        size = int(m.sum())
        for k in range(n):
            if m[k]:
                continue
            with_k = m.clone()
            with_k[k] = True
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            phi[k] += weight * (v[index[tuple(with_k.tolist())]] - v[i])
    return phi
