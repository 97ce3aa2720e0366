"""KernelSHAP-CAM (the paper's framework, Sec. 3.1-3.2 and its supplementary; Lundberg & Lee 2017):
the SHAP values of the maps (Eq. 6) as a weighted linear fit of the explanation model (Eq. 5)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from camlib.methods.base import Cost, Method, Need, Option, Quantities

# Coalitions per call to the game (progress is reported between calls).
CHUNK = 256


class KernelShapCAM(Method):
    """α = argmin_φ Σ_i π(a'_i) (F^c(h_A(a'_i)) - F^c(0) - φ·a'_i)²   s.t.   Σ_k φ_k = F^c(A) - F^c(0)

    with the Shapley kernel π(a') = (K - 1) / (C(K, |a'|) |a'| (K - |a'|)) over coalitions
    0 < |a'| < K of the K maps (absent maps set to 0). Lundberg & Lee (2017, Theorem 2): over all
    2^K - 2 coalitions the solution is exactly the SHAP values of Eq. 6; the empty and the full
    coalition (infinite weight) become the intercept φ_0 = F^c(0) and the efficiency constraint, which
    holds exactly here: Σα = F^c(A) - F^c(0) up to float rounding (local accuracy, Eq. 8).

    The coalitions, as the shap library's KernelExplainer chooses them (Lundberg & Lee's
    implementation): the sizes pair up as {s, K - s}, whose coalitions carry the kernel mass
    Ω_s = (K - 1)/(s (K - s)) per size. Going from s = 1 up, a pair is enumerated (every coalition
    of both sizes, with weight π) while the budget left times the pair's share of the mass not yet
    enumerated covers its count. The rest of the budget is drawn: a pair with probability ∝ its mass,
    a uniformly random coalition of its smaller size, always together with its complement (paired
    sampling); a coalition drawn again adds to its count instead of being evaluated again, and the
    drawn coalitions share the mass left in proportion to their counts. Unlike shap, no L1 feature
    selection precedes the fit (shap's ``l1_reg="auto"``).

    The fit in float64: φ = (Δ/K)·1 + u with u ⊥ 1 (so the constraint is exact and no map is
    singled out), u from the normal equations (P ZᵀWZ P + γ 11ᵀ/K) u = P ZᵀW r, P = I - 11ᵀ/K, by
    Cholesky; if too few coalitions were drawn to determine u (fewer than about 2(K - 1): each
    complementary pair adds one direction), the minimum-norm u (an eigendecomposition), i.e. the
    solution closest to the equal split Δ/K.

    Options: ``samples`` (coalitions besides the empty and the full one; 0: 2 N_l + 2048, shap's
    default, at most 2^K - 2: then every coalition is enumerated and α is exact), ``seed``. Cost:
    samples + 2 tail evaluations per image. ``info``: ``local_accuracy`` (Σα, F^c(A) - F^c(0)) and
    ``reference_logit`` F^c(0) (B,) from the game, ``coalitions`` (n, K) bool, their ``weights`` (n,) and
    ``values`` F^c(h_A(a'_i)) (B, n).
    """

    key, title = "kernelshapcam", "KernelSHAP-CAM"
    summary = "SHAP values of the maps by Shapley-kernel weighted regression on coalitions (KernelSHAP)"
    needs = frozenset({Need.GAME})
    cost = Cost.PER_SAMPLE
    options = (Option("samples", 0, 0, 100_000, "coalitions of maps (0: 2·N_l + 2048, as shap; at most 2^N_l - 2)"),
               Option("seed", 0, 0, 2**32 - 1, "seed of the coalitions"))

    label_options = ("samples",)  # samples=0 (automatic) is left out: "kernelshapcam"

    def evaluations(self, n_maps: int, **options) -> int:
        options = self.resolve_options(options)
        enumerated, drawn = plan(n_maps, budget(n_maps, options["samples"]))
        return sum(math.comb(n_maps, s) for pair in _sizes(n_maps)[:enumerated] for s in pair) + 2 * drawn + 2

    def coefficients(self, q: Quantities, samples: int, seed: int) -> torch.Tensor:
        k = q.n_maps
        masks, weights = coalitions(k, budget(k, samples), seed)
        ends = torch.stack([torch.zeros(k, dtype=torch.bool), torch.ones(k, dtype=torch.bool)])
        everything = torch.cat([ends, masks])
        alpha = torch.empty(q.batch, k, dtype=torch.float64)
        delta = torch.empty(q.batch, dtype=torch.float64)
        reference = torch.empty(q.batch, dtype=torch.float64)
        values = torch.empty(q.batch, masks.shape[0], dtype=torch.float64)
        for i in range(q.batch):
            game = q.game(i)
            parts = []
            for start in range(0, everything.shape[0], CHUNK):
                parts.append(game.values(everything[start:start + CHUNK]).detach().double().cpu())
                q.report((i + min(start + CHUNK, everything.shape[0]) / everything.shape[0]) / q.batch)
            v = torch.cat(parts)
            reference[i], delta[i], values[i] = v[0], v[1] - v[0], v[2:]
            alpha[i] = constrained_fit(masks.double(), values[i] - v[0], weights, float(delta[i]))
        shown = alpha.to(q.activations.dtype).double()
        q.info.update(local_accuracy=(shown.sum(1), delta), reference_logit=reference, coalitions=masks,
                      weights=weights, values=values)
        return alpha.to(q.activations.device)


def budget(k: int, samples: int) -> int:
    """The coalitions asked for k maps: ``samples`` (0: 2k + 2048), at most the 2^k - 2 there are."""
    return min(int(samples) or 2 * k + 2048, 2 ** k - 2)


def _sizes(k: int) -> list[tuple[int, ...]]:
    """The size pairs (s, k - s) for s = 1 .. k // 2, the middle size alone."""
    return [(s,) if 2 * s == k else (s, k - s) for s in range(1, k // 2 + 1)]


def _mass(k: int) -> list[float]:
    """The Shapley kernel's mass on each size pair of :func:`_sizes`: Σ_s (k - 1)/(s (k - s))."""
    return [sum((k - 1) / (s * (k - s)) for s in pair) for pair in _sizes(k)]


def plan(k: int, n: int) -> tuple[int, int]:
    """(e, d): with a budget of n coalitions of k maps, the first e size pairs of :func:`_sizes` are
    enumerated (shap's rule: while the budget left times the pair's share of the mass not yet
    enumerated covers its count) and d complementary pairs are drawn from the others."""
    pairs, mass, left = _sizes(k), _mass(k), n
    for p, pair in enumerate(pairs):
        count = sum(math.comb(k, s) for s in pair)
        if left * mass[p] / sum(mass[p:]) < count * (1 - 1e-8):
            return p, left // 2
        left -= count
    return len(pairs), 0


def coalitions(k: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` (or fewer, see below) distinct coalitions of k maps, (m, k) bool, and their Shapley
    kernel weights (m,) float64 (shap's scheme, in the class docstring). Reproducible from ``seed``
    on any device. A pair that is drawn again only adds to the counts: when the coalitions not yet
    enumerated are few, up to 4n draws are made (as shap) and m can fall short of n."""
    pairs, mass = _sizes(k), _mass(k)
    enumerated, drawn = plan(k, n)
    rows, weights = [], []
    for pair in pairs[:enumerated]:
        for s in pair:
            kernel = (k - 1) / (math.comb(k, s) * s * (k - s))
            for chosen in itertools.combinations(range(k), s):
                row = np.zeros(k, dtype=bool)
                row[list(chosen)] = True
                rows.append(row)
                weights.append(kernel)
    drawn_rows, counts = _draw(k, pairs[enumerated:], mass[enumerated:], drawn, seed)
    if counts:
        rows += drawn_rows
        weights += [c * sum(mass[enumerated:]) / sum(counts) for c in counts]
    if not rows:
        return torch.zeros(0, k, dtype=torch.bool), torch.zeros(0, dtype=torch.float64)
    return torch.from_numpy(np.stack(rows)), torch.tensor(weights, dtype=torch.float64)


def _draw(k: int, pairs: list, mass: list, wanted: int, seed: int) -> tuple[list, list]:
    """``wanted`` distinct complementary pairs of coalitions from the size pairs ``pairs`` (drawn ∝
    ``mass``), as rows and counts (a pair drawn again adds 1 to both members' counts)."""
    rows, counts, seen = [], [], {}
    if wanted <= 0 or not pairs:
        return rows, counts
    generator = torch.Generator().manual_seed(int(seed))
    probabilities = torch.tensor(mass, dtype=torch.float64)
    smaller = torch.tensor([pair[0] for pair in pairs])
    draws = 0
    while len(rows) < 2 * wanted and draws < 4 * wanted:
        batch = wanted - len(rows) // 2
        sizes = smaller[torch.multinomial(probabilities, batch, replacement=True, generator=generator)]
        ranks = torch.rand(batch, k, generator=generator, dtype=torch.float64).argsort(1).argsort(1)
        for row in (ranks < sizes[:, None]).numpy():
            draws += 1
            key = np.packbits(row).tobytes()
            if key in seen:  # the pair was drawn before: both members count once more
                counts[seen[key]] += 1
                counts[seen[key] + 1] += 1
                continue
            if len(rows) // 2 == wanted:
                break
            seen[key] = len(rows)
            seen[np.packbits(~row).tobytes()] = len(rows)  # its complement names the same pair
            rows += [row, ~row]
            counts += [1, 1]
    return rows, counts


def constrained_fit(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, delta: float) -> torch.Tensor:
    """argmin_φ Σ_i w_i (y_i - z_i·φ)² subject to Σφ = ``delta``, in float64 (z (n, K) 0/1, y (n,) the
    values less F^c(0), w (n,) > 0): φ = delta/K + u, u ⊥ 1 from the projected normal equations,
    by Cholesky, or their minimum-norm solution when they are singular (class docstring)."""
    k = z.shape[1]
    if z.shape[0] == 0:
        return torch.full((k,), delta / k, dtype=torch.float64)
    r = y - z.sum(1) * (delta / k)
    weighted = z * w[:, None]
    gram = weighted.T @ z
    rhs = weighted.T @ r
    row = gram.mean(1, keepdim=True)  # P G P = G - G·J - J·G + J·G·J with J = 11ᵀ/K
    projected = gram - row - row.T + row.mean()
    rhs = rhs - rhs.mean()
    scale = float(projected.diagonal().mean()) or 1.0
    h = projected + scale / k  # + γ 11ᵀ/K with γ = scale: positive definite when u is determined
    factor, info = torch.linalg.cholesky_ex(h)
    # A pivot below 1e-10 of the diagonal: singular to float64 precision (rounding of an exactly
    # singular matrix leaves pivots of about 1e-16 of it).
    if int(info) == 0 and float(factor.diagonal().min()) ** 2 > 1e-10 * float(h.diagonal().max()):
        u = torch.cholesky_solve(rhs[:, None], factor)[:, 0]
    else:
        values, vectors = torch.linalg.eigh(projected)
        keep = values > values.abs().max() * k * torch.finfo(torch.float64).eps
        u = vectors[:, keep] @ ((vectors[:, keep].T @ rhs) / values[keep])
    return delta / k + (u - u.mean())
