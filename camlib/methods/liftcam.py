"""LIFT-CAM (the paper, Sec. 3.3): DeepLIFT-Rescale contributions of the activation maps."""

from __future__ import annotations

import torch

from camlib.deeplift import contributions, deeplift_tail
from camlib.methods.base import CamMethod, Context


class LiftCAM(CamMethod):
    """α_k = C_{ΔA_k ΔF^c} = Σ_{(i,j)} C_{ΔA_k(i,j) ΔF^c}                                  (Eq. 7)

    DeepLIFT-Rescale of the target logit through the tail F with the reference r = 0 at layer l
    (absence of a map, as in SHAP), one forward pass of [A; 0] and one backward pass through the
    tail. Local accuracy (Eq. 8): Σ_k α_k = F^c(A) - F^c(0), recorded in ``info["local_accuracy"]``
    as (Σα, F^c(A) - F^c(0)). On a linear tail α is exactly the SHAP values.
    """

    key, title = "liftcam", "LIFT-CAM"
    summary = "DeepLIFT contribution of each map to the target logit (≈ SHAP values)"

    def coefficients(self, ctx: Context, **options) -> torch.Tensor:
        dl_tail = ctx.model.derived(("deeplift", ctx.split.layer), lambda: deeplift_tail(ctx.split.tail))
        reference = torch.zeros_like(ctx.activations[:1])
        contrib, _, ref_logits = contributions(dl_tail, ctx.activations, reference, ctx.fixed, ctx.target)
        alpha = contrib.sum(dim=(2, 3))
        delta = ctx.logits.gather(1, ctx.target[:, None])[:, 0] - ref_logits.gather(1, ctx.target[:, None])[:, 0]
        ctx.info["local_accuracy"] = (alpha.sum(1), delta)
        ctx.info["reference_logit"] = ref_logits.gather(1, ctx.target[:, None])[:, 0]
        return alpha
