"""LIFT-CAM (the paper, Sec. 3.3): DeepLIFT-Rescale contributions of the activation maps."""

from __future__ import annotations

import torch

from camlib.deeplift import contributions_from, deeplift_forward, deeplift_tail
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

    def tail_pass(self, model, split, activations: torch.Tensor, fixed: tuple):
        """The one tail pass: the DeepLIFT tail on [A; 0], whose first half is F(A)."""
        dl_tail = model.derived(("deeplift", split.layer), lambda: deeplift_tail(split.tail))
        x, out = deeplift_forward(dl_tail, activations, torch.zeros_like(activations[:1]), fixed)
        return out[:activations.shape[0]].detach(), (x, out)

    def coefficients(self, ctx: Context, **options) -> torch.Tensor:
        batch = ctx.batch
        reference = torch.zeros_like(ctx.activations[:1])
        x, out = ctx.tail_state if ctx.tail_state is not None else \
            self.tail_pass(ctx.model, ctx.split, ctx.activations, ctx.fixed)[1]
        alpha = contributions_from(x, out, ctx.activations, reference, ctx.target).sum(dim=(2, 3))
        ref_logits = out[batch:].detach().gather(1, ctx.target[:, None])[:, 0]
        delta = out[:batch].detach().gather(1, ctx.target[:, None])[:, 0] - ref_logits
        ctx.info["local_accuracy"] = (alpha.sum(1), delta)
        ctx.info["reference_logit"] = ref_logits
        return alpha
