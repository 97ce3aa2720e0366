"""Masked-input scores by network passes (the reference backend of Score-CAM's quantity).

For every map k of every image, the target logit of the network on the input masked by that map:

    H_k = s(Up(A_k)),   S_k = f^c(X ∘ H_k)

Up: bilinear upsampling to the input size (align_corners=True, as pytorch-grad-cam); s: per-map
min-max normalisation with +1e-8 in the denominator; X: the network's (normalised) input tensor,
so a masked-out pixel becomes the dataset mean; f^c: the target logit.

Cost: one forward pass per map that is not constant, plus one per batch: a constant map
(max = min; often half of EfficientNet-Lite0's last layer, zero after its ReLU6) has the all-zero
mask H_k = 0, so all of them share the one score f^c(X ∘ 0) = f^c(0), the same for every image.
The passes run in chunks of masked images made on the fly (never all K at once) under inference
mode, in stages (:meth:`NetworkScores.stages`): the head (the convolutions) on ``batch_size``
images at most, and on the CPU 4 (``devices.network_batch``: larger batches cost more per image
there), channels-last (``devices.network_input``: 1.3× faster per image for VGG16, 1.5× for
Lite0); the tail on the joined head outputs of ``batch_size`` masked images at once, so that
VGG16's 480 MB of FC weights are read once per 64 images rather than once per 4 (7.8 s of its 85 s
on the CPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from camlib.devices import network_batch, network_input
from camlib.engine.backends import Backend
from camlib.engine.batching import run_in_groups
from camlib.engine.quantities import Need, Problem


class NetworkScores(Backend):
    name = "network-passes"
    provides = frozenset({Need.MASKED_SCORES})
    reference = True

    def stages(self, problem: Problem) -> tuple:
        """(the head, run on each chunk of masked images; [(later graph, images per call), ...])."""
        return problem.split.head, [(problem.split.tail, problem.batch_size)]

    def start(self, problem: Problem, needs: frozenset) -> "_Scores":
        return _Scores(problem, *self.stages(problem))


class _Scores:
    def __init__(self, problem: Problem, head, stages):
        self.problem, self.head, self.stages = problem, head, stages

    def masked_scores(self, target: torch.Tensor) -> torch.Tensor:
        p = self.problem
        size = p.images.shape[-2:]
        inputs = p.model.normalize(p.images)
        scores = torch.empty(p.batch, p.n_maps, device=p.activations.device)
        flat = p.activations.flatten(2)
        varying = flat.amax(2) > flat.amin(2)  # (B, K); the others are constant maps
        chunk_size = max(1, min(p.batch_size, network_batch(inputs.device)))
        steps = int(varying.sum()) + p.batch
        done = 0

        def chunks(i: int, extra: tuple):
            """(maps, head outputs) for the masked images of image i, a few at a time."""
            nonlocal done
            index = varying[i].nonzero().flatten()
            for start in range(0, index.numel(), chunk_size):
                chunk = index[start:start + chunk_size]
                up = F.interpolate(p.activations[i, chunk, None], size=size, mode="bilinear",
                                   align_corners=True)
                low = up.amin((1, 2, 3), keepdim=True)
                high = up.amax((1, 2, 3), keepdim=True)
                batch = network_input(inputs[i:i + 1] * ((up - low) / (high - low + 1e-8)))
                held = tuple(e.expand(batch.shape[0], *e.shape[1:]) for e in extra)
                yield chunk, self.head(batch, *held)
                done += chunk.numel()
                p.report(done / steps)

        with torch.inference_mode():
            # The all-zero mask gives the input X ∘ 0 = 0 whatever the image: one pass for the batch
            # (one per image when further inputs, e.g. a question, differ between images).
            blank = None if p.extra else p.model.module(torch.zeros_like(inputs[:1]))[0]
            for i in range(p.batch):
                extra = tuple(e[i:i + 1] for e in p.extra)
                c = target[i]
                zero = blank if blank is not None else p.model.module(torch.zeros_like(inputs[:1]), *extra)[0]
                scores[i] = zero[c]
                done += 1
                for maps, logits in run_in_groups(self.stages, chunks(i, extra)):
                    scores[i, maps] = logits[:, c]
        return scores
