"""Score-CAM (Wang et al., CVPR-W 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from camlib.methods.base import CamMethod, Context


class ScoreCAM(CamMethod):
    """Score-CAM as in Algorithm 1 of Wang et al. (the variant pytorch-grad-cam implements):

        H_k = s(Up(A_k)),   S_k = f^c(X ∘ H_k),   α = softmax_k(S)

    Up: bilinear upsampling to the input size (align_corners=True, as pytorch-grad-cam);
    s: per-map min-max normalisation with +1e-8 in the denominator; X: the network's
    (normalised) input tensor, so a masked-out pixel becomes the dataset mean; f^c: the target
    logit; the softmax runs over the K maps. We follow this published variant, rather than the
    paper's Eq. with a baseline subtraction, because it is what practitioners compare against and
    lets the benchmark check our coefficients against pytorch-grad-cam's.

    Cost: K forward passes of the whole network. They run in chunks of ``batch_size`` masked
    images made on the fly (never all K at once) under inference mode.
    """

    key, title = "scorecam", "Score-CAM"
    summary = "softmax of the target score of the image masked by each upsampled map"

    def coefficients(self, ctx: Context, **options) -> torch.Tensor:
        size = ctx.images.shape[-2:]
        inputs = ctx.model.normalize(ctx.images)
        scores = torch.empty(ctx.batch, ctx.n_maps, device=ctx.activations.device)
        steps = ctx.batch * ctx.n_maps
        with torch.inference_mode():
            for i in range(ctx.batch):
                for start in range(0, ctx.n_maps, ctx.batch_size):
                    maps = ctx.activations[i, start:start + ctx.batch_size, None]
                    up = F.interpolate(maps, size=size, mode="bilinear", align_corners=True)
                    flat = up.flatten(1)
                    low = flat.min(1).values[:, None, None, None]
                    high = flat.max(1).values[:, None, None, None]
                    masks = (up - low) / (high - low + 1e-8)
                    batch = inputs[i:i + 1] * masks
                    extra = tuple(e[i:i + 1].expand(batch.shape[0], *e.shape[1:]) for e in ctx.extra)
                    scores[i, start:start + maps.shape[0]] = ctx.model.module(batch, *extra)[:, ctx.target[i]]
                    ctx.report((i * ctx.n_maps + start + maps.shape[0]) / steps)
        return torch.softmax(scores, dim=1)
