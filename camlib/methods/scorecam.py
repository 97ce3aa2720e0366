"""Score-CAM (Wang et al., CVPR-W 2020)."""

from __future__ import annotations

import torch

from camlib.methods.base import Cost, Method, Need, Quantities


class ScoreCAM(Method):
    """Score-CAM as in Algorithm 1 of Wang et al. (the variant pytorch-grad-cam implements):

        H_k = s(Up(A_k)),   S_k = f^c(X ∘ H_k),   α = softmax_k(S)

    Up: bilinear upsampling to the input size (align_corners=True, as pytorch-grad-cam);
    s: per-map min-max normalisation with +1e-8 in the denominator; X: the network's
    (normalised) input tensor, so a masked-out pixel becomes the dataset mean; f^c: the target
    logit; the softmax runs over the K maps. We follow this published variant, rather than the
    paper's Eq. with a baseline subtraction, because it is what practitioners compare against and
    lets the benchmark check our coefficients against pytorch-grad-cam's. The scores S are the
    engine's masked-input scores (one network pass per map that is not constant; see
    :mod:`camlib.engine.reference.network`).
    """

    key, title = "scorecam", "Score-CAM"
    summary = "softmax of the target score of the image masked by each upsampled map"
    needs = frozenset({Need.MASKED_SCORES})
    cost = Cost.PER_MAP
    network_passes = True
    paper = True

    def coefficients(self, q: Quantities) -> torch.Tensor:
        return torch.softmax(q.masked_scores, dim=1)
