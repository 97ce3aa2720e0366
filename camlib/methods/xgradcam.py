"""XGrad-CAM (Fu et al., BMVC 2020)."""

from __future__ import annotations

import torch

from camlib.methods.base import Method, Need, Quantities


class XGradCAM(Method):
    """α_k = Σ_{i,j} (A_k(i, j) / Σ_{a,b} A_k(a, b)) · ∂F^c/∂A_k(i, j)

    (their Eq. 10, derived from the sensitivity and conservation axioms). A map whose values sum
    to zero gets α_k = 0 (it contributes nothing to L anyway).
    """

    key, title = "xgradcam", "XGrad-CAM"
    summary = "gradients weighted by the normalised activations (axiom-based)"
    needs = frozenset({Need.GRADIENT_DOTS})
    default = paper = True

    def coefficients(self, q: Quantities) -> torch.Tensor:
        total = q.activations.sum(dim=(2, 3))
        weighted = q.gradient_dots
        nonzero = total != 0
        return torch.where(nonzero, weighted / torch.where(nonzero, total, torch.ones_like(total)),
                           torch.zeros_like(total))
