"""LIME-CAM (the paper's framework, Sec. 3.1 and its supplementary; the authors' public code):
LIME's weighted linear fit of the explanation model (Eq. 5) over coalitions of maps."""

from __future__ import annotations

import numpy as np
import torch

from camlib.methods.base import Cost, Method, Need, Option, Quantities

# Coalitions per call to the game (progress is reported between calls).
CHUNK = 256
# Coordinate-descent sweeps before the lasso gives up (it then returns its last iterate and
# flags it in info["converged"]); on the tails tried, 10-80 sweeps reach the exact solution.
MAX_SWEEPS = 5000


class LimeCAM(Method):
    """α = β of the LIME surrogate g(a') = β_0 + Σ_k β_k a'_k (Eq. 5) fitted to the coalition game:

        β = argmin_{β_0, β} 1/(2 Σ_i π_i) Σ_i π_i (F^c(h_A(a'_i)) - β_0 - β·a'_i)²
                            + lasso ‖β‖_1 + ridge/(2 Σ_i π_i) ‖β‖²

    over n coalitions a'_i ∈ {0,1}^K, each map present with probability 1/2 independently, the
    absent maps set to 0, weighted by the exponential kernel on the cosine distance between the
    masked activations and A:

        π_i = exp(-d_i² / (2 w²)),   d_i = 1 - cos(A, h_A(a'_i)) = 1 - sqrt(Σ_{k∈a'_i} ‖A_k‖² / Σ_k ‖A_k‖²)

    This is the authors' LIME-CAM: captum 0.9's ``Lime`` on the tail with one feature per map, zero
    baselines and ``n_samples = N_l``; its defaults are that sampler (``default_perturb_func``:
    Bernoulli(0.5) per feature, the original input is not among the samples), that kernel
    (``get_exp_kernel_similarity_function("cosine", kernel_width=1.0)``) and that fit
    (``SkLearnLasso(alpha=0.01)``: scikit-learn's Lasso with an unpenalised intercept and the
    kernel as sample weights). Options: ``samples`` n (0: N_l, the authors' choice), ``kernel_width``
    w, the fit's ``lasso`` strength (scikit-learn's Lasso alpha; default 0.01 as captum) and
    ``ridge`` strength (scikit-learn's Ridge alpha, as captum's SkLearnRidge; default 0);
    lasso = ridge = 0 is weighted least squares (the minimum-norm solution when the coalitions do
    not determine β), ``seed`` of the coalitions (the same on any device and for every image of a
    batch). The fits run in float64 with numpy and torch (see :func:`fit_linear`).

    Cost: n tail evaluations per image (duplicated coalitions are evaluated once). ``info``:
    ``coalitions`` (n, K) bool, ``weights`` π (B, n), ``values`` F^c(h_A(a'_i)) (B, n), ``intercept``
    β_0 (B,), ``converged`` (B,) (whether the lasso reached its exact solution). LIME promises no local accuracy: Σα need not be
    F^c(A) - F^c(0), and with the default n = N_l < K + 1 the coalitions cannot determine β (the
    lasso's penalty picks one solution).
    """

    key, title = "limecam", "LIME-CAM"
    summary = "weighted linear fit (LIME) of the target logit on random coalitions of maps"
    needs = frozenset({Need.GAME})
    cost = Cost.PER_SAMPLE
    options = (Option("samples", 0, 0, 100_000, "random coalitions of maps (0: one per map, N_l, as the authors)"),
               Option("kernel_width", 1.0, 0.1, 100.0, "width w of the exponential kernel on the cosine distance"),
               Option("lasso", 0.01, 0.0, 1e6, "L1 strength of the fit (captum's default Lasso: 0.01)"),
               Option("ridge", 0.0, 0.0, 1e6, "L2 strength of the fit (as scikit-learn's Ridge alpha)"),
               Option("seed", 0, 0, 2**32 - 1, "seed of the coalitions"))

    label_options = ("samples",)  # samples=0 (automatic) is left out: "limecam"

    def coefficients(self, q: Quantities, samples: int, kernel_width: float, lasso: float, ridge: float,
                     seed: int) -> torch.Tensor:
        n = samples or q.n_maps
        masks = sample_coalitions(n, q.n_maps, seed)
        unique, inverse = torch.unique(masks, dim=0, return_inverse=True)
        x = masks.double()
        alpha = torch.empty(q.batch, q.n_maps, dtype=torch.float64)
        weights = torch.empty(q.batch, n, dtype=torch.float64)
        values = torch.empty(q.batch, n, dtype=torch.float64)
        intercept = torch.empty(q.batch, dtype=torch.float64)
        converged = torch.empty(q.batch, dtype=torch.bool)
        for i in range(q.batch):
            game = q.game(i)
            parts = []
            for start in range(0, unique.shape[0], CHUNK):
                parts.append(game.values(unique[start:start + CHUNK]).detach().double().cpu())
                q.report((i + min(start + CHUNK, unique.shape[0]) / unique.shape[0]) / q.batch)
            values[i] = torch.cat(parts)[inverse]
            norms = q.activations[i].detach().double().pow(2).sum((1, 2)).cpu()
            weights[i] = kernel_weights(x, norms, kernel_width)
            alpha[i], intercept[i], converged[i] = fit_linear(x, values[i], weights[i], lasso, ridge)
        q.info.update(coalitions=masks, weights=weights, values=values, intercept=intercept, converged=converged)
        return alpha.to(q.activations.device)


def sample_coalitions(n: int, k: int, seed: int) -> torch.Tensor:
    """n coalitions of k maps, (n, k) bool, each map present with probability 1/2 independently
    (captum's ``default_perturb_func``), reproducible from ``seed`` on any device (drawn on the CPU)."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.bernoulli(torch.full((n, k), 0.5, dtype=torch.float64), generator=generator).bool()


def kernel_weights(x: torch.Tensor, norms: torch.Tensor, width: float) -> torch.Tensor:
    """π_i = exp(-(1 - cos(A, h_A(a'_i)))² / (2 w²)) for coalitions ``x`` (n, K) of maps with squared
    norms ``norms`` ‖A_k‖² (K,): cos(A, A ∘ a') = ‖A ∘ a'‖ / ‖A‖ because ⟨A, A ∘ a'⟩ = ‖A ∘ a'‖².
    All-zero maps give cos = 0 (as torch's CosineSimilarity on a zero vector)."""
    total = float(norms.sum())
    cos = (x @ norms / total).clamp(0, 1).sqrt() if total > 0 else torch.zeros(x.shape[0], dtype=torch.float64)
    return torch.exp(-(1 - cos) ** 2 / (2 * width ** 2))


def fit_linear(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, lasso: float = 0.0,
               ridge: float = 0.0) -> tuple[torch.Tensor, float, bool]:
    """(β, β_0, exact) minimising 1/(2 Σw) Σ_i w_i (y_i - β_0 - x_i·β)² + lasso ‖β‖_1 + ridge/(2 Σw) ‖β‖²,
    in float64; x (n, K), y (n,), w (n,) > 0.

    This is scikit-learn's objective for ``Lasso(alpha=lasso)`` and (scaled by 1/(2 Σw)) for
    ``Ridge(alpha=ridge)``, with the intercept unpenalised and ``sample_weight=w``; without either
    penalty it is weighted least squares, whose minimum-norm solution is returned (as
    ``LinearRegression``). The intercept is eliminated by centring with the weighted means. Ridge
    and least squares are solved by Cholesky on the normal equations (least squares by ``lstsq``
    when they are singular, e.g. n <= K); the lasso by cyclic coordinate descent on the weighted
    Gram matrix H = X̃ᵀWX̃/Σw (over the nonzero coefficients until they settle, then over all),
    finished by solving its optimality conditions exactly on the support S with signs s,
    (H_SS + ridge/Σw) β_S = X̃_SᵀWỹ/Σw - lasso·s, accepted when the signs hold and
    |X̃_jᵀW(ỹ - X̃β)/Σw| <= lasso off S (the KKT conditions, a certificate of optimality). ``exact``
    is False when that certificate was not reached within :data:`MAX_SWEEPS` sweeps.
    """
    x, y, w = x.double(), y.double(), w.double()
    total = w.sum()
    x_mean, y_mean = w @ x / total, w @ y / total
    xc, yc = x - x_mean, y - y_mean
    gram = (xc * (w / total)[:, None]).T @ xc
    corr = (xc * (w / total)[:, None]).T @ yc
    rho = ridge / float(total)
    exact = True
    if lasso > 0:
        solution, exact = _lasso(gram.numpy(), corr.numpy(), float(lasso), rho)
        beta = torch.from_numpy(solution)
    elif ridge > 0:  # positive definite
        factor = torch.linalg.cholesky(gram + rho * torch.eye(gram.shape[0], dtype=torch.float64))
        beta = torch.cholesky_solve(corr[:, None], factor)[:, 0]
    else:
        factor = _cholesky(gram)
        if factor is not None:
            beta = torch.cholesky_solve(corr[:, None], factor)[:, 0]
        else:  # least squares that the coalitions do not determine: the minimum-norm solution
            root = w.sqrt()
            beta = torch.linalg.lstsq(root[:, None] * xc, (root * yc)[:, None], driver="gelsd").solution[:, 0]
    return beta, float(y_mean - x_mean @ beta), exact


def _cholesky(h: torch.Tensor) -> torch.Tensor | None:
    """The Cholesky factor of a symmetric ``h``, or None when h is singular to float64 precision
    (a pivot below 1e-10 of the largest diagonal entry: rounding of an exactly singular h leaves
    pivots of about 1e-16 of it)."""
    if h.numel() == 0:
        return h
    factor, info = torch.linalg.cholesky_ex(h)
    if int(info) != 0 or float(factor.diagonal().min()) ** 2 <= 1e-10 * float(h.diagonal().max()):
        return None
    return factor


def _lasso(gram: np.ndarray, corr: np.ndarray, l1: float, rho: float) -> tuple[np.ndarray, bool]:
    """argmin_β ½ βᵀHβ - cᵀβ + l1 ‖β‖_1 + ½ rho ‖β‖² (H = ``gram``, c = ``corr``): coordinate descent,
    then the exact solution on the support (:func:`_polish`); see :func:`fit_linear`.

    The sweeps run until no coefficient moves by more than ``settle``·max|β| (first over the nonzero
    coefficients, then over all); then the support, less the coefficients below ``settle``·max|β|
    (coordinate descent approaches a zero of a degenerate problem only linearly), is polished. If
    the KKT conditions fail, ``settle`` shrinks tenfold, down to float64's resolution."""
    k = corr.shape[0]
    beta, grad = np.zeros(k), np.zeros(k)  # grad = H β, kept up to date
    diag = np.diag(gram).tolist()
    denominator = [d + rho for d in diag]
    c = corr.tolist()
    every = [j for j in range(k) if denominator[j] > 0]  # a map present in all coalitions or none: β_j = 0
    active, full, settle = every, True, 1e-3
    for _ in range(MAX_SWEEPS):
        change = 0.0
        for j in (every if full else active):
            old = beta[j]
            r = c[j] - grad[j] + diag[j] * old
            new = (r - l1) / denominator[j] if r > l1 else (r + l1) / denominator[j] if r < -l1 else 0.0
            if new != old:
                grad += (new - old) * gram[j]
                beta[j] = new
                change = max(change, abs(new - old))
        scale = np.abs(beta).max()
        if change > settle * scale:
            if full:  # sweep the nonzero coefficients until they settle
                active, full = np.flatnonzero(beta).tolist(), False
            continue
        if not full:  # settled on the support: check every coefficient
            full = True
            continue
        solution = _polish(gram, corr, l1, rho, np.where(np.abs(beta) > settle * scale, beta, 0.0))
        if solution is not None:
            return solution, True
        if settle <= 1e-15:
            break
        settle /= 10
    return beta, False


def _polish(gram: np.ndarray, corr: np.ndarray, l1: float, rho: float, beta: np.ndarray) -> np.ndarray | None:
    """The lasso's exact solution on the support and signs of ``beta``, or None if it violates the
    KKT conditions (a sign flips, or |c_j - (Hβ)_j| > l1 off the support)."""
    support = np.flatnonzero(beta)
    signs = np.sign(beta[support])
    solution = np.zeros_like(beta)
    if support.size:
        factor = _cholesky(torch.from_numpy(gram[np.ix_(support, support)])
                           + rho * torch.eye(support.size, dtype=torch.float64))
        if factor is None:
            return None
        rhs = torch.from_numpy(corr[support] - l1 * signs)[:, None]
        solution[support] = torch.cholesky_solve(rhs, factor)[:, 0].numpy()
        if not np.array_equal(np.sign(solution[support]), signs):
            return None
    residual = corr - (torch.from_numpy(gram) @ torch.from_numpy(solution)).numpy()
    residual[support] = 0.0
    slack = 1e-9 * l1 + 1e-13 * np.abs(corr).max()  # float64 rounding of H β (K terms)
    return solution if np.abs(residual).max(initial=0.0) <= l1 + slack else None
