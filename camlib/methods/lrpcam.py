"""LRP-CAM (the paper's Supplementary Material, ref. [2]): LRP relevance of the activation maps."""

from __future__ import annotations

import torch

from camlib.methods.base import Method, Need, Option, Quantities


class LrpCAM(Method):
    """α_k = Σ_{(i,j)} R(A_k(i, j)): the layer-wise relevance that reaches map k

    when the target logit's value F^c(A) is handed back through the tail F by LRP-ε (Bach et al.
    2015, the paper's ref. [2]; one of the additive feature attribution methods of its framework,
    Sec. 3.1, Eq. 5), as the authors' code does with captum's ``LRP`` on F. At every affine node
    z = Wx + b (convolution, linear layer, batch norm, average pooling, residual sum, product with a
    held-fixed input) and at max pooling, the ε-rule

        R_p = Σ_q x_p W_qp / (z_q + ε·sign(z_q)) · R_q,

    and relevance unchanged through ReLU, ReLU6, SiLU and the like (all rules, with captum's:
    :mod:`camlib.engine.reference.lrp`). One forward and one backward pass through the tail.

    Conservation Σ_k α_k = F^c(A) holds where no bias or batch-norm shift absorbs relevance and
    ε → 0; ``info["conservation"]`` records (Σ_k α_k, F^c(A)). Two closed forms: on a tail of global
    average pooling and a linear layer α_k = w_ck·mean(A_k)·(1 + O(ε)), the same α as LIFT-CAM; on a
    tail whose activations are ReLUs, ε → 0 gives gradient × input, α_k = Σ_ij A_k ∂F^c/∂A_k(i, j)
    (R_z / z is then the gradient at every node, Ancona et al. 2018); ReLU6 saturation, SiLU and
    ε > 0 make it differ.

    Not in the default set, although single-pass: at the default model's default layer (Lite0's bn2,
    a linear tail) it equals LIFT-CAM (measured cosine 1.000 on 20 dev images), so it would show the
    same map twice, and at Lite0's inner layers it is not robust (on the same images, blocks.6.0.bn2:
    Σα has the opposite sign of F^c on the median image and 3 of 20 maps are all zero; blocks.6: 2 of
    20). ``epsilon`` (default 1e-9, captum's) is the ε-rule's stabiliser.
    """

    key, title = "lrpcam", "LRP-CAM"
    summary = "layer-wise relevance (LRP-ε) of each map for the target logit"
    needs = frozenset({Need.LRP})
    options = (Option("epsilon", 1e-9, 1e-12, 1e3,
                      "LRP stabiliser ε: relevance of weaker neurons (|z| ≲ ε) is absorbed (captum: 1e-9)"),)

    def coefficients(self, q: Quantities, epsilon: float = 1e-9) -> torch.Tensor:
        lrp = q.lrp(epsilon)
        alpha = lrp.relevance
        q.info["conservation"] = (alpha.sum(1), lrp.output)
        return alpha
