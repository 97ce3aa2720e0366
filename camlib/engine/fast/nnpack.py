"""NNPACK convolutions for large inference batches on the CPU (a fast backend of Score-CAM's
masked-input scores).

PyTorch ships NNPACK (fast-convolution algorithms) beside oneDNN, but only picks it when oneDNN is
switched off by a process-wide flag, which would change every convolution of every app session.
Here it is chosen per graph instead: :func:`rewrite` returns a copy of a GraphModule in which
each 3×3, stride-1, ungrouped ``nn.Conv2d`` runs ``torch._nnpack_spatial_convolution`` on the
same (shared, not copied) weights; the original graph and module are untouched.

Measured on the development CPU (2 cores, AVX-512; torch 2.14, inference mode, ms per image,
oneDNN channels-last → NNPACK) at a batch of 32: 256→256 channels at 56×56 16.0 → 10.7, 256→512
at 28×28 8.5 → 4.6, 512→512 at 28×28 16.2 → 9.9, 512→512 at 14×14 4.0 → 2.7; but 64→64 at
224×224 21.3 → 23.0 and at a batch of 4 NNPACK is slower throughout. So it pays for large batches
of small feature maps only: Score-CAM runs the layers from 1/4 of the input's side onwards on 16
masked images at once through it (VGG16: 0.15 → 0.12 s per masked image; 16 rather than 32, as
fast, because NNPACK keeps a per-thread workspace that grows with the batch: ~200 MiB for 16
images at 512 channels, 28×28). Outputs equal oneDNN's to float rounding (3.8e-6 of the largest
value after VGG16's 10 such layers; oneDNN itself differs by 3.4e-6 between batch sizes).

``CAMLIB_NNPACK=0`` in the environment switches it off (for a CPU where it is slower).
"""

from __future__ import annotations

import copy
import dataclasses
import os

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from camlib.engine.quantities import Problem
from camlib.engine.reference.network import NetworkScores
from camlib.graph.ops import attribute


def available(device) -> bool:
    """Whether NNPACK can run convolutions on ``device`` (the CPU, where PyTorch was built with it
    and the processor is supported) and is not switched off by ``CAMLIB_NNPACK=0``."""
    if torch.device(device).type != "cpu" or os.environ.get("CAMLIB_NNPACK", "1") == "0":
        return False
    return bool(torch._nnpack_available())  # also initialises NNPACK, once per process


def eligible(module: nn.Module) -> bool:
    """A plain float32 3×3 convolution with stride 1, no dilation, no groups and zero padding
    smaller than the kernel: the case NNPACK handles and that was measured faster."""
    return (type(module) is nn.Conv2d and module.kernel_size == (3, 3) and module.stride == (1, 1)
            and module.dilation == (1, 1) and module.groups == 1 and module.padding_mode == "zeros"
            and isinstance(module.padding, tuple) and all(p < 3 for p in module.padding)
            and module.weight.dtype == torch.float32)


class NnpackConv2d(nn.Module):
    """``conv`` (an :func:`eligible` nn.Conv2d) computed by NNPACK; shares its parameters."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            return torch._nnpack_spatial_convolution(x.contiguous(), self.conv.weight, self.conv.bias,
                                                     list(self.conv.padding))
        except RuntimeError:  # NNPACK refused (its workspace could not be allocated): oneDNN's then
            return self.conv(x)


def rewrite(gm: fx.GraphModule) -> fx.GraphModule | None:
    """A copy of ``gm`` whose convolutions all run through NNPACK; None when it has none or any of
    them is not :func:`eligible`. All or nothing because NNPACK wants large batches in NCHW, where
    oneDNN's other convolutions lose: ResNet50 from its max pooling to ``layer4`` (3×3 and 1×1
    convolutions) took 87–92 ms per image this way, against 55–60 ms in batches of 4 channels-last."""
    if not torch._nnpack_available():  # which also initialises NNPACK (once per process)
        return None
    modules = dict(gm.named_modules())
    root: dict[str, object] = {}
    convolutions = 0
    for node in gm.graph.nodes:
        if node.op == "call_module":
            module = modules[node.target]
            if isinstance(module, nn.modules.conv._ConvNd):
                if not eligible(module):
                    return None
                convolutions += 1
                module = NnpackConv2d(module)
            root[node.target] = module
        elif node.op == "get_attr":
            root[node.target] = attribute(gm, node.target)
        elif node.op == "call_function" and node.target in (F.conv2d, F.conv1d, F.conv3d, F.conv_transpose2d):
            return None
    return fx.GraphModule(root, copy.deepcopy(gm.graph)) if convolutions else None


# Score-CAM's middle stage: the layers from 1/4 of the input's side onwards, on this many images
# (VGG16's peak memory 718 MiB with 32, 597 with 16, about as fast: docs/PERFORMANCE.md runs M, N).
MIDDLE_BATCH = 16


@dataclasses.dataclass(frozen=True)
class NnpackGraphs:
    """A split's middle and tail with their convolutions through NNPACK (built once per split);
    ``middle`` is None when the middle is not all eligible convolutions."""

    cut: str
    middle: fx.GraphModule | None
    tail: fx.GraphModule


def stages(problem: Problem) -> tuple[fx.GraphModule, fx.GraphModule, fx.GraphModule] | None:
    """Score-CAM's network in three parts for NNPACK: (head, middle, tail), with ``middle ∘ head``
    equal to ``split.head``. The cut is the first layer whose side is at most 1/4 of the input's
    (VGG16: ``features.9``, 128×56×56); the middle and the tail run their :func:`eligible`
    convolutions through NNPACK (:func:`rewrite`). None when there is no such layer before the CAM
    layer, when the middle has a convolution that is not eligible (ResNet's 1×1, EfficientNet's
    depthwise ones) or none, when the tail reads a value held fixed or the network takes further
    inputs, or where NNPACK is not :func:`available` on the model's device."""
    model, split = problem.model, problem.split
    if split.n_fixed or problem.extra or not available(model.device):
        return None
    h, w = model.input_size
    names = [info.name for info in model.layers]
    end = model.layer_info(split.layer).name
    if end not in names:
        return None
    cut = next((info.name for info in model.layers[:names.index(end)]
                if info.shape[1] * 4 <= h and info.shape[2] * 4 <= w), None)
    if cut is None:
        return None

    def build() -> NnpackGraphs:
        middle = model.segment(cut, end)
        return NnpackGraphs(cut, rewrite(middle) if middle is not None else None, rewrite(split.tail) or split.tail)

    graphs = split.memo(NnpackGraphs, build)
    return None if graphs.middle is None else (model.split(graphs.cut).head, graphs.middle, graphs.tail)


class NnpackScores(NetworkScores):
    """Score-CAM's passes with the layers from 1/4 of the input's side on ``MIDDLE_BATCH`` masked
    images at once through NNPACK, the tail on ``batch_size``; same scores to float rounding."""

    name = "nnpack-stages"
    reference = False

    def applies(self, problem: Problem, needs: frozenset) -> bool:
        return stages(problem) is not None

    def stages(self, problem: Problem) -> tuple:
        head, middle, tail = stages(problem)
        return head, [(middle, min(problem.batch_size, MIDDLE_BATCH)), (tail, problem.batch_size)]
