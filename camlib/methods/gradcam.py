"""Grad-CAM (Selvaraju et al., ICCV 2017) and the original CAM (Zhou et al., CVPR 2016)."""

from __future__ import annotations

import torch

from camlib.methods.base import Context, GradientMethod


class GradCAM(GradientMethod):
    """α_k = (1 / (h·w)) Σ_{i,j} ∂F^c(A) / ∂A_k(i, j): the spatial mean of the gradient."""

    key, title = "gradcam", "Grad-CAM"
    summary = "average gradient of the target logit over each activation map"
    needs = ("sum",)

    def coefficients(self, ctx: Context, **options) -> torch.Tensor:
        return ctx.gradient_sums / (ctx.activations.shape[2] * ctx.activations.shape[3])


class CAM(GradientMethod):
    """CAM: α_k = w_{c,k}, the weight of the target class on the globally average-pooled map k.

    Defined only for a linear tail F(A) = W · GAP(A) + b. There ∂F^c/∂A_k(i, j) = w_{c,k} / (h·w) at
    every position, so α_k = Σ_{i,j} ∂F^c/∂A_k(i, j) = w_{c,k} exactly, for any such head.
    """

    key, title = "cam", "CAM"
    summary = "the classifier's weight of each map (only for GAP + linear heads)"
    needs = ("sum",)

    def coefficients(self, ctx: Context, **options) -> torch.Tensor:
        if not ctx.split.linear_tail:
            raise ValueError(f"CAM needs a linear (GAP + fully connected) tail, but the tail after layer "
                             f"{ctx.split.layer!r} is nonlinear; use Grad-CAM or LIFT-CAM, or the last layer")
        return ctx.gradient_sums
