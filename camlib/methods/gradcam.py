"""Grad-CAM (Selvaraju et al., ICCV 2017) and the original CAM (Zhou et al., CVPR 2016)."""

from __future__ import annotations

import torch

from camlib.methods.base import Method, Need, Quantities


class GradCAM(Method):
    """α_k = (1 / (h·w)) Σ_{i,j} ∂F^c(A) / ∂A_k(i, j): the spatial mean of the gradient."""

    key, title = "gradcam", "Grad-CAM"
    summary = "average gradient of the target logit over each activation map"
    needs = frozenset({Need.GRADIENT_SUMS})
    default = paper = True

    def coefficients(self, q: Quantities) -> torch.Tensor:
        return q.gradient_sums / (q.activations.shape[2] * q.activations.shape[3])


class CAM(Method):
    """CAM: α_k = w_{c,k}, the weight of the target class on the globally average-pooled map k.

    Defined only for a linear tail F(A) = W · GAP(A) + b. There ∂F^c/∂A_k(i, j) = w_{c,k} / (h·w) at
    every position, so α_k = Σ_{i,j} ∂F^c/∂A_k(i, j) = w_{c,k} exactly, for any such head.
    """

    key, title = "cam", "CAM"
    summary = "the classifier's weight of each map (only for GAP + linear heads)"
    needs = frozenset({Need.GRADIENT_SUMS})

    def coefficients(self, q: Quantities) -> torch.Tensor:
        if not q.linear_tail:
            raise ValueError(f"CAM needs a linear (GAP + fully connected) tail, but the tail after layer "
                             f"{q.layer!r} is nonlinear; use Grad-CAM or LIFT-CAM, or the last layer")
        return q.gradient_sums
