"""Shapley values of the maps' coalition game (paper Sec. 3.2): the exact sum and its sampling.

The game: a coalition a' ⊆ {1..K} of maps keeps them and zeroes the others; its value is
v(a') = F^c(h_A(a')). The SHAP values solve Eq. (6):

    α_k = Σ_{a' ∌ k} |a'|! (K - |a'| - 1)! / K! · [v(a' ∪ k) - v(a')]

:func:`exact_shapley` enumerates all 2^K coalitions (a test oracle for K ≤ ~12). Algorithm 1
(SHAP-CAM) instead averages each map's marginal contribution v(prefix with k) - v(prefix before k)
over random orderings π: :func:`sample_permutations` draws them, :func:`running_estimate` walks them
on one image's game, :func:`ordering_estimate` does so for a batch. Shared by the estimators over
orderings: :mod:`camlib.methods.shapcam` (independent orderings) and its variance-reduced samplers,
:mod:`camlib.methods.antishapcam` (:func:`antithetic_permutations`) and
:mod:`camlib.methods.stratshapcam` (:func:`stratified_permutations`).

Why any of these samplers is unbiased: the estimate is the mean, over the orderings drawn, of each
map's marginal contribution, and Eq. (6) is the mean of that contribution over all K! orderings.
So the estimate is unbiased as soon as *each* ordering drawn is uniformly distributed on its own,
whatever the dependence between the orderings (linearity of expectation); the dependence only
changes the variance, and the samplers below choose it to make the variance small.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable

import torch

from camlib.methods.base import Game, Option, Quantities

# Orderings evaluated together (the CPU's fused clamp-readout kernel reads the tail's per-map
# contributions once per group: per ordering 7.3 ms alone, 2.7 ms in 4, 1.7 ms in 16 on Lite0 blocks.6).
ORDERINGS_PER_PASS = 16


def ordering_options(permutations_help: str = "number of random orderings |Π|") -> tuple[Option, Option]:
    """The options of the ordering estimators (SHAP-CAM and its antithetic and stratified forms):
    ``permutations`` |Π| (default 10) and ``seed`` (of :func:`sample_permutations`)."""
    return (Option("permutations", 10, 1, 1_000_000, permutations_help, symbol="|Π|"),
            Option("seed", 0, 0, 2**32 - 1, "seed of the orderings"))


def sample_permutations(n: int, count: int, seed: int) -> torch.Tensor:
    """``count`` uniformly random orderings of n maps, (count, n), reproducible from ``seed``
    on any device (drawn on the CPU)."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.stack([torch.randperm(n, generator=generator) for _ in range(count)])


def antithetic_permutations(n: int, count: int, seed: int) -> torch.Tensor:
    """``count`` orderings of n maps in antithetic pairs (π, reverse of π), (count, n): the forward
    ones are :func:`sample_permutations` (n, ⌈count/2⌉, seed), so each ordering is uniform (the
    reverse of a uniform ordering is uniform); an odd ``count`` ends with a forward one alone.
    Prefix-consistent: the first p rows are the orderings drawn for ``count`` = p."""
    forward = sample_permutations(n, (count + 1) // 2, seed)
    return torch.stack([forward, forward.flip(1)], 1).reshape(-1, n)[:count]


#: Antithetic pairs per block of :func:`stratified_permutations` (2^STRATA_LEVELS): within a block
#: each map's arrival times are stratified at every dyadic scale down to 1/512 (256 pairs, 512 orderings).
STRATA_LEVELS = 8


def nested_strata(bits: list[torch.Tensor], points: int | None = None) -> torch.Tensor:
    """Nested stratification of N = 2^L points in [0, 1) for each of n maps, from random bits.

    ``bits[m - 1]`` (n, N / 2) of 0/1 for the levels m = 1..L. Returns the strata of the first
    ``points`` (default N) points, (n, points), integers in [0, N): their first L binary digits.

    Digit m of point t is ``bits[m-1][k, g] XOR (bit m - 1 of t)``, where the group
    g = (t >> m, the point's first m - 1 digits) holds exactly two
    points of each aligned block of 2^m consecutive points, one from each half of the block. Hence,
    for every m, each aligned block of 2^m consecutive points has one point in each of the 2^m
    intervals [i/2^m, (i+1)/2^m) (the two points of a group get opposite digits, by induction on m).
    And if the bits are independent fair coins, the L digits of one point are independent fair coins
    (digit m uses a bit of a group that no earlier digit of that point used): each point's stratum is
    uniform on [0, N), and the maps are independent of each other."""
    n, half = bits[0].shape
    t = torch.arange(2 * half if points is None else points)
    prefix = torch.zeros(n, t.numel(), dtype=torch.long)
    for m, level in enumerate(bits, 1):
        group = ((t >> m) << (m - 1))[None, :] | prefix
        digit = torch.gather(level.long(), 1, group) ^ ((t >> (m - 1)) & 1)[None, :]
        prefix = (prefix << 1) | digit
    return prefix


def stratified_arrival_times(n: int, pairs: int, seed: int) -> torch.Tensor:
    """Arrival times x (pairs, n) in [0, 1) of the forward orderings of :func:`stratified_permutations`.

    Per block of B = 2^L pairs (L = :data:`STRATA_LEVELS`): y_{k,t} = (:func:`nested_strata` + U) / B
    with U uniform on [0, 1), and x_{k,t} = y_{k,t} / 2 or 1 - y_{k,t} / 2 by a fair side bit. So
    (i) in each pair t the x_{k,t} are i.i.d. uniform on [0, 1) (y is uniform, the side bit folds it
    onto either half), and (ii) for every m ≤ L, the 2^m pairs of an aligned run in a block give each
    map one time x or 1 - x in each interval of width 2^-(m+1). Drawn on the CPU from ``seed``;
    prefix-consistent (every block draws the same numbers, whatever part of it is used)."""
    generator = torch.Generator().manual_seed(int(seed))
    block = 1 << STRATA_LEVELS
    times = [torch.empty(0, n, dtype=torch.float64)]
    for start in range(0, pairs, block):
        used = min(block, pairs - start)
        bits = [torch.randint(0, 2, (n, block // 2), generator=generator) for _ in range(STRATA_LEVELS)]
        fill = torch.rand(n, block, generator=generator, dtype=torch.float64)[:, :used]
        side = torch.randint(0, 2, (n, block), generator=generator)[:, :used].bool()
        y = (nested_strata(bits, used).double() + fill) / block
        times.append(torch.where(side, 1.0 - y / 2, y / 2).T)
    return torch.cat(times)


def stratified_permutations(n: int, count: int, seed: int) -> torch.Tensor:
    """``count`` orderings of n maps, (count, n): antithetic pairs whose arrival times are stratified
    per map (the sampler of :mod:`camlib.methods.stratshapcam`; drawn on the CPU from ``seed``).

    Pair t is (argsort x_t, its reverse = argsort(1 - x_t)) for the arrival times x_t of
    :func:`stratified_arrival_times`. Per ordering the x_{k,t} are i.i.d. uniform, so the ordering is
    uniform (the argsort of i.i.d. continuous keys; its reverse too) and the estimate unbiased; across
    the orderings, each map's position is stratified. An odd ``count`` ends with a forward ordering
    alone; the first p rows are the orderings drawn for ``count`` = p."""
    forward = torch.argsort(stratified_arrival_times(n, (count + 1) // 2, seed), dim=1, stable=True)
    return torch.stack([forward, forward.flip(1)], 1).reshape(-1, n)[:count]


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


def ordering_estimate(q: Quantities, orders: torch.Tensor) -> torch.Tensor:
    """Algorithm 1 over the orderings ``orders`` (P, K) for every image of ``q``: α (B, K), the mean
    over all P. ``q.info["running"]`` (P, B, K): the running estimate after each ordering;
    ``q.info["permutations"]``: the orderings. Progress is reported to ``q.report``."""
    count = orders.shape[0]
    running = torch.empty(count, q.batch, q.n_maps, device=q.activations.device)
    for i in range(q.batch):
        running_estimate(q.game(i), orders, running[:, i],
                         lambda done, i=i: q.report((i * count + done) / (q.batch * count)))
    q.info["running"] = running
    q.info["permutations"] = orders
    return running[-1]


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
