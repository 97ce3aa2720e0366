"""LIFT-CAM (the paper, Sec. 3.3): DeepLIFT-Rescale contributions of the activation maps."""

from __future__ import annotations

import torch

from camlib.methods.base import Method, Need, Quantities


class LiftCAM(Method):
    """α_k = C_{ΔA_k ΔF^c} = Σ_{(i,j)} C_{ΔA_k(i,j) ΔF^c}                                  (Eq. 7)

    DeepLIFT-Rescale of the target logit through the tail F with the reference r = 0 at layer l
    (absence of a map, as in SHAP): one forward and one backward pass through the tail. Local
    accuracy (Eq. 8): Σ_k α_k = F^c(A) - F^c(0), recorded in ``info["local_accuracy"]`` as
    (Σα, F^c(A) - F^c(0)), and F^c(0) in ``info["reference_logit"]``. On a linear tail α is
    exactly the SHAP values.
    """

    key, title = "liftcam", "LIFT-CAM"
    summary = "DeepLIFT contribution of each map to the target logit (≈ SHAP values)"
    needs = frozenset({Need.DEEPLIFT})
    default = paper = True

    def coefficients(self, q: Quantities) -> torch.Tensor:
        lift = q.deeplift
        alpha = lift.contributions
        reference = lift.reference_logits.gather(1, q.target[:, None])[:, 0]
        q.info["local_accuracy"] = (alpha.sum(1), lift.logits.gather(1, q.target[:, None])[:, 0] - reference)
        q.info["reference_logit"] = reference
        return alpha
