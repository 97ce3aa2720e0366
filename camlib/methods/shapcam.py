"""SHAP-CAM_|Π| (the paper, Sec. 3.2, Algorithm 1): SHAP values of the maps by sampled orderings."""

from __future__ import annotations

import torch

from camlib.methods.base import Cost, Method, Need, Quantities
from camlib.methods.shapley import ordering_estimate, ordering_options, sample_permutations


class ShapCAM(Method):
    """α_k = (1/|Π|) Σ_{π ∈ Π} [F^c(h_A(a'_{π,≤k})) - F^c(h_A(a'_{π,<k}))]            (Alg. 1, Eq. 6)

    Each ordering π adds the maps one by one; a map's marginal contribution is the change of the
    target logit when it joins. Options: ``permutations`` |Π| (default 10), ``seed`` (default 0;
    the same seed gives the same orderings on any device). ``info["running"]`` holds the running
    estimate after each ordering, (|Π|, B, K), for convergence plots without recomputation, and
    ``info["permutations"]`` the orderings (|Π|, K).
    """

    key, title = "shapcam", "SHAP-CAM"
    summary = "Shapley values of the maps, averaged over random orderings (Algorithm 1)"
    needs = frozenset({Need.GAME})
    cost = Cost.PER_ORDERING
    options = ordering_options()
    label_options = ("permutations",)

    def coefficients(self, q: Quantities, permutations: int, seed: int) -> torch.Tensor:
        return ordering_estimate(q, sample_permutations(q.n_maps, permutations, seed))
