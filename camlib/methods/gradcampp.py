"""Grad-CAM++ (Chattopadhyay et al., WACV 2018), the closed form of their Eq. 19."""

from __future__ import annotations

import torch

from camlib.methods.base import Method, Need, Quantities


class GradCAMPlusPlus(Method):
    """α_k = Σ_{i,j} a_k^{ij} · ReLU(g_k^{ij}),  with g = ∂F^c/∂A and

        a_k^{ij} = g_{ij}^2 / (2 g_{ij}^2 + Σ_{a,b} A_k(a, b) · g_{ij}^3)        (their Eq. 19)

    which is exact for an exponential score exp(F^c), whose higher derivatives are powers of the
    first one. As in their paper and pytorch-grad-cam, ReLU(g) uses the logit's gradient (the
    common positive factor exp(F^c) is left out: it would scale every α_k alike). Where the
    denominator vanishes (g = 0) a_k^{ij} = 0. Unlike torchcam 0.5, the Σ_{a,b} A_k(a, b) term is
    really in the denominator (torchcam's normalisation is a no-op there).
    """

    key, title = "gradcampp", "Grad-CAM++"
    summary = "positive gradients weighted by second/third-order terms (closed form)"
    needs = frozenset({Need.GRADIENTS})
    default = paper = True

    def coefficients(self, q: Quantities) -> torch.Tensor:
        g = q.gradients
        g2 = g.pow(2)
        g3 = g2 * g
        sum_a = q.activations.sum(dim=(2, 3), keepdim=True)
        denominator = 2 * g2 + sum_a * g3
        nonzero = denominator != 0
        a = torch.where(nonzero, g2 / torch.where(nonzero, denominator, torch.ones_like(denominator)),
                        torch.zeros_like(g))
        return (a * torch.relu(g)).sum(dim=(2, 3))
