"""LIFT-CAM (the paper, Sec. 3.3): DeepLIFT-Rescale contributions of the activation maps."""

from __future__ import annotations

import torch

from camlib import blocklinear
from camlib.deeplift import deeplift_forward, deeplift_tail, deeplift_tail_with_reference
from camlib.methods.base import CamMethod, Context


class LiftCAM(CamMethod):
    """α_k = C_{ΔA_k ΔF^c} = Σ_{(i,j)} C_{ΔA_k(i,j) ΔF^c}                                  (Eq. 7)

    DeepLIFT-Rescale of the target logit through the tail F with the reference r = 0 at layer l
    (absence of a map, as in SHAP): one forward and one backward pass through the tail, on A alone
    against the stored reference values (or on [A; 0] when an input is held fixed). Local accuracy
    (Eq. 8): Σ_k α_k = F^c(A) - F^c(0), recorded in ``info["local_accuracy"]`` as (Σα, F^c(A) - F^c(0)).
    On a linear tail α is exactly the SHAP values.
    """

    key, title = "liftcam", "LIFT-CAM"
    summary = "DeepLIFT contribution of each map to the target logit (≈ SHAP values)"

    def tail_pass(self, model, split, activations: torch.Tensor, fixed: tuple):
        """The one tail pass. Without fixed inputs the reference is the same for every image, so
        it is run once per (model, layer) and stored, and the DeepLIFT tail runs on A alone;
        with fixed inputs (VQA: the question) it runs on the batch [A; 0]. On a "pooling → flatten →
        fully connected" tail it reads the FC weights once (:func:`camlib.blocklinear.lift_pass`)."""
        tail = blocklinear.applicable(model, split, activations, fixed)
        if tail is not None:
            state = blocklinear.lift_pass(model, tail, split.layer, activations)
            return state.logits.detach(), state
        if not fixed:
            zero = torch.zeros_like(activations[:1])
            dl_tail, ref_logits = model.derived(("deeplift-reference", split.layer),
                                                lambda: deeplift_tail_with_reference(split.tail, zero))
            x = activations.detach().requires_grad_(True)
            with torch.enable_grad():
                out = dl_tail(x)
            return out.detach(), (x, out, ref_logits.expand(out.shape[0], -1))
        dl_tail = model.derived(("deeplift", split.layer), lambda: deeplift_tail(split.tail))
        x, out = deeplift_forward(dl_tail, activations, torch.zeros_like(activations[:1]), fixed)
        batch = activations.shape[0]
        return out[:batch].detach(), (x[:batch], out[:batch], out[batch:].detach(), x)

    def coefficients(self, ctx: Context, **options) -> torch.Tensor:
        state = ctx.tail_state if ctx.tail_state is not None else \
            self.tail_pass(ctx.model, ctx.split, ctx.activations, ctx.fixed)[1]
        if isinstance(state, blocklinear.LiftPass):
            alpha = state.coefficients(ctx.target)
            self._record(ctx, alpha, state.logits.detach(), state.reference_logits.expand(ctx.batch, -1))
            return alpha
        x, out, ref_out = state[:3]
        wrt = state[3] if len(state) > 3 else x  # the batched form differentiates [A; 0]
        selected = out.gather(1, ctx.target[:, None]).sum()
        (grad,) = torch.autograd.grad(selected, wrt)
        alpha = (grad[:ctx.batch] * ctx.activations).sum(dim=(2, 3))  # C = m ∘ (A - 0), summed per map
        self._record(ctx, alpha, out.detach(), ref_out)
        return alpha

    @staticmethod
    def _record(ctx: Context, alpha: torch.Tensor, logits: torch.Tensor, ref_logits: torch.Tensor) -> None:
        """Local accuracy (Σα, F^c(A) - F^c(0)) and F^c(0) into ``ctx.info``."""
        ref = ref_logits.gather(1, ctx.target[:, None])[:, 0]
        ctx.info["local_accuracy"] = (alpha.sum(1), logits.gather(1, ctx.target[:, None])[:, 0] - ref)
        ctx.info["reference_logit"] = ref
