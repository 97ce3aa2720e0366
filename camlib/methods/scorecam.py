"""Score-CAM (Wang et al., CVPR-W 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from camlib.devices import network_batch, network_input
from camlib.methods.base import CamMethod, Context
from camlib import nnpack
from camlib.split import run_in_groups


class ScoreCAM(CamMethod):
    """Score-CAM as in Algorithm 1 of Wang et al. (the variant pytorch-grad-cam implements):

        H_k = s(Up(A_k)),   S_k = f^c(X ∘ H_k),   α = softmax_k(S)

    Up: bilinear upsampling to the input size (align_corners=True, as pytorch-grad-cam);
    s: per-map min-max normalisation with +1e-8 in the denominator; X: the network's
    (normalised) input tensor, so a masked-out pixel becomes the dataset mean; f^c: the target
    logit; the softmax runs over the K maps. We follow this published variant, rather than the
    paper's Eq. with a baseline subtraction, because it is what practitioners compare against and
    lets the benchmark check our coefficients against pytorch-grad-cam's.

    Cost: one forward pass per map that is not constant, plus one per batch: a constant map
    (max = min; often half of EfficientNet-Lite0's last layer, zero after its ReLU6) has the
    all-zero mask H_k = 0, so all of them share the one score f^c(X ∘ 0) = f^c(0), the same for
    every image. The passes run in chunks of masked images made on the fly (never all K at once)
    under inference mode, in stages (:meth:`_stages`): the head (the convolutions) on
    ``batch_size`` images at most, and on the CPU 4 (``devices.network_batch``: larger batches
    cost more per image there), channels-last (``devices.network_input``: 1.3× faster per image
    for VGG16, 1.5× for Lite0); later stages on the joined outputs of more masked images.
    """

    key, title = "scorecam", "Score-CAM"
    summary = "softmax of the target score of the image masked by each upsampled map"

    def coefficients(self, ctx: Context, **options) -> torch.Tensor:
        size = ctx.images.shape[-2:]
        inputs = ctx.model.normalize(ctx.images)
        scores = torch.empty(ctx.batch, ctx.n_maps, device=ctx.activations.device)
        flat = ctx.activations.flatten(2)
        varying = flat.amax(2) > flat.amin(2)  # (B, K); the others are constant maps
        chunk_size = max(1, min(ctx.batch_size, network_batch(inputs.device)))
        head, stages = self._stages(ctx)
        steps = int(varying.sum()) + ctx.batch
        done = 0

        def chunks(i: int, extra: tuple):
            """(maps, head outputs) for the masked images of image i, a few at a time."""
            nonlocal done
            index = varying[i].nonzero().flatten()
            for start in range(0, index.numel(), chunk_size):
                chunk = index[start:start + chunk_size]
                up = F.interpolate(ctx.activations[i, chunk, None], size=size, mode="bilinear",
                                   align_corners=True)
                low = up.amin((1, 2, 3), keepdim=True)
                high = up.amax((1, 2, 3), keepdim=True)
                batch = network_input(inputs[i:i + 1] * ((up - low) / (high - low + 1e-8)))
                held = tuple(e.expand(batch.shape[0], *e.shape[1:]) for e in extra)
                yield chunk, head(batch, *held)
                done += chunk.numel()
                ctx.report(done / steps)

        with torch.inference_mode():
            # The all-zero mask gives the input X ∘ 0 = 0 whatever the image: one pass for the batch
            # (one per image when further inputs, e.g. a question, differ between images).
            blank = None if ctx.extra else ctx.model.module(torch.zeros_like(inputs[:1]))[0]
            for i in range(ctx.batch):
                extra = tuple(e[i:i + 1] for e in ctx.extra)
                target = ctx.target[i]
                zero = blank if blank is not None else ctx.model.module(torch.zeros_like(inputs[:1]), *extra)[0]
                scores[i] = zero[target]
                done += 1
                for maps, logits in run_in_groups(stages, chunks(i, extra)):
                    scores[i, maps] = logits[:, target]
        return torch.softmax(scores, dim=1)

    @staticmethod
    def _stages(ctx: Context) -> tuple:
        """The head, run on each chunk, and the later stages with how many images each takes.

        By default the tail runs on the head outputs of ``batch_size`` masked images at once, so
        that VGG16's 480 MB of FC weights are read once per 64 images rather than once per 4 (7.8 s
        of its 85 s on the CPU). On the CPU with NNPACK (``camlib.nnpack.stages``) the head is cut
        again at 1/4 of the input's side, and the middle runs on ``nnpack.MIDDLE_BATCH`` (16) masked
        images at once through NNPACK."""
        plan = None if ctx.extra else nnpack.stages(ctx.model, ctx.split)
        if plan is None:
            return ctx.split.head, [(ctx.split.tail, ctx.batch_size)]
        head, middle, tail = plan
        return head, [(middle, min(ctx.batch_size, nnpack.MIDDLE_BATCH)), (tail, ctx.batch_size)]
