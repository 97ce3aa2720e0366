"""Tolerances for tests that compare two float32 computations of one quantity (issue #16).

A float32 result is off by rounding errors of the order of u = 2⁻²⁴ times the magnitudes that were
summed to make it, not times the result itself. A sum or dot product of n terms, in whatever order
a CPU, a library or a batch size picks (sequential, blocked, SIMD lanes, threads), is off by at
most n·u·Σ|terms| (products included), and in practice by a random walk of n roundings, each at
most u × a partial sum ≤ Σ|terms|: a standard deviation ≤ √n·u·Σ|terms| (Higham & Mary, SIAM J.
Sci. Comput. 41, 2019). We allow λ = 3 of those, or the deterministic n·u where that is smaller
(n ≤ 9), and the errors of a chain of layers add. So every tolerance here is ``rel × scale``:

* ``scale``: the magnitude of the values that were combined: Σ|terms| where a test can compute
  it, else max |α| of a row, the logits a difference was taken of (the terms of a last layer are of
  their size). Not each entry itself: an entry that is 0 or nearly 0 by cancellation is as
  uncertain as its neighbours (no "relative inf");
* ``rel = chain(n_1, n_2, ...)``: u·Σ_l min(n_l, 3√n_l) for a chain of layers summing n_l terms
  each (:func:`fan_ins` reads the n_l off a forward pass), twice that when both sides are float32
  computations (their errors add).

Each test states its n_l and its scale in a comment. :func:`assert_close_scaled` also refuses a
tolerance that could not see a real error: it must stay below 1 % of the largest expected value
(of each group of values sharing a scale: a row where the scale is per row or per entry), so that
a 1 % error, a lost map (an entry set to 0) or a wrong sign of the largest entry always fails the
test. With ``NUMERICS_MARGINS=path`` set, each call appends the fraction of its tolerance it used
(max |Δ| / tolerance) to that file.
"""

from __future__ import annotations

import math
import os

import torch

U = 2.0 ** -24  # float32 unit roundoff
LAMBDA = 3  # standard deviations of the random walk of roundings
DETECT = 0.01  # a tolerance must stay below this fraction of the largest expected value


def chain(*terms: int) -> float:
    """u·Σ_l min(n_l, λ√n_l): the relative float32 error of a chain of layers that sum n_l terms each."""
    return U * sum(min(n, LAMBDA * math.sqrt(n)) for n in terms)


def fan_ins(fn, *inputs) -> list[int]:
    """The number of terms each summing operation of ``fn(*inputs)`` adds up, in the order they
    run (``fn`` is run here once, under no_grad; a module, a traced tail, any function): for a
    convolution in_channels/groups × kernel area, for a matrix product its inner dimension, for a
    mean or sum the number of values reduced, for average pooling the window, 1 for a batch norm
    (a scale and a shift). Read at the level of ATen operators, so functional calls count too.
    For ``chain(*fan_ins(net, x))``."""
    from torch.utils._python_dispatch import TorchDispatchMode

    aten = torch.ops.aten
    found: list[int] = []

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            packet = func.overloadpacket
            if packet is aten.convolution:
                found.append(math.prod(args[1].shape[1:]))
            elif packet in (aten.mm, aten.addmm, aten.bmm, aten.baddbmm):
                found.append(args[-2].shape[-1] if packet in (aten.mm, aten.bmm) else args[1].shape[-1])
            elif packet in (aten.mean, aten.sum) and out.numel():
                found.append(max(1, args[0].numel() // out.numel()))
            elif packet in (aten.avg_pool2d, aten._adaptive_avg_pool2d):
                found.append(max(1, math.prod(args[0].shape[-2:]) // math.prod(out.shape[-2:])))
            elif "batch_norm" in packet.__name__:
                found.append(1)
            return out

    with torch.no_grad(), Count():
        fn(*inputs)
    return found


def assert_close_scaled(actual, expected, scale, rel: float, what: str = "values") -> None:
    """Assert |actual - expected| ≤ rel · scale everywhere, in float64.

    ``scale``: a number, or a tensor that broadcasts against the values (one magnitude per row:
    shape (B, 1)). Raises ``ValueError`` (a defect of the test, not of camlib) where the
    tolerance is not below ``DETECT`` × the largest |expected| of the values sharing a scale.
    """
    actual = torch.as_tensor(actual).detach().cpu().double()
    expected = torch.as_tensor(expected).detach().cpu().double()
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    scale = torch.as_tensor(scale).detach().cpu().double()
    tol = (rel * scale).expand(expected.shape) if scale.dim() else torch.full(expected.shape, rel * float(scale),
                                                                              dtype=torch.float64)
    # Each group of values that share a scale (the dims it broadcasts over; a row where the scale
    # is given per entry): its largest tolerance must stay below DETECT × its largest |expected|.
    padded = scale.reshape((1,) * (expected.dim() - scale.dim()) + tuple(scale.shape))
    dims = [d for d in range(expected.dim()) if padded.shape[d] == 1 and expected.shape[d] > 1]
    dims = dims or ([expected.dim() - 1] if expected.dim() else [])
    largest = expected.abs().amax(dim=dims, keepdim=True) if dims else expected.abs()
    loosest = tol.amax(dim=dims, keepdim=True) if dims else tol
    weak = (loosest >= DETECT * largest) & (largest > 0)
    if weak.any():
        i = int(weak.flatten().nonzero()[0])
        raise ValueError(f"{what}: tolerance {float(loosest.flatten()[i]):.3g} is not below {DETECT:g} × the "
                         f"largest expected value {float(largest.flatten()[i]):.3g}: the test could not see a 1 % error")
    diff = (actual - expected).abs()
    bad = ~(diff <= tol)  # NaN fails too
    if os.environ.get("NUMERICS_MARGINS"):  # a record of how close each assertion came, for the CI note
        with open(os.environ["NUMERICS_MARGINS"], "a") as log:
            used = float((diff / tol.clamp_min(1e-300)).max()) if diff.numel() else 0.0
            log.write(f"{os.environ.get('PYTEST_CURRENT_TEST', '?').split(' ')[0]}\t{what}\t{used:.4g}\n")
    if bad.any():
        worst = int(torch.where(bad, diff / tol.clamp_min(1e-300), torch.zeros_like(diff)).flatten()
                    .nan_to_num(math.inf).argmax())
        where = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), expected.shape)) if expected.dim() else ()
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {expected.numel()} differ by more than rel × scale; worst at {where}: "
            f"|{float(actual.flatten()[worst]):.9g} - {float(expected.flatten()[worst]):.9g}| = "
            f"{float(diff.flatten()[worst]):.3g} > {rel:.3g} × {float(tol.flatten()[worst]) / rel:.3g} "
            f"(rel = {rel / U:.3g} u)")


def alpha_scale(method: str, exp) -> torch.Tensor:
    """The magnitude that rounding errors of α are relative to, per image ((B, 1), or (B, K) per
    entry). Gradient and DeepLIFT methods combine gradient terms into α: max |α|. The coalition
    games difference tail values F^c(·) whose last layer sums terms of the size of the logits:
    max |logits| (SHAP-CAM), divided by |F^c(A)| for Ablation-CAM (α = drop / |F^c(A)|, Eq. 9).
    Score-CAM's α = softmax of masked scores s: |Δα_k| ≤ 2 α_k max |Δs|, s of the size of the
    logits: 2 α_k max |logits|, per entry."""
    alpha = exp.coefficients.reshape(-1, exp.coefficients.shape[-1])
    logits = exp.logits.reshape(alpha.shape[0], -1).abs().amax(1, keepdim=True)
    if method == "scorecam":
        return 2 * alpha.abs() * logits
    if method == "shapcam":
        return logits
    if method == "ablationcam":
        full = exp.logits.reshape(alpha.shape[0], -1).gather(1, exp.target.reshape(-1, 1)).abs()
        return logits / torch.where(full > 0, full, torch.ones_like(full))
    return alpha.abs().amax(1, keepdim=True)


def tail_terms(model, layer: str, exp) -> list[int]:
    """:func:`fan_ins` of the tail after ``layer`` on the first image of ``exp``'s activations
    (models without held-fixed inputs)."""
    a = exp.activations if exp.batched else exp.activations[None]
    return fan_ins(model.split(layer).tail, a[:1])


def local_accuracy_scale(exp) -> torch.Tensor:
    """The magnitudes Σα = F^c(A) - F^c(0) is made of, per image: Σ_k |α_k|, the two logits and
    max |logits| (the terms of the last layer)."""
    alpha = exp.coefficients.reshape(-1, exp.coefficients.shape[-1])
    logits = exp.logits.reshape(alpha.shape[0], -1)
    reference = exp.info["reference_logit"].reshape(-1)
    return torch.stack([alpha.abs().sum(1), logits.abs().amax(1), reference.abs()]).amax(0)
