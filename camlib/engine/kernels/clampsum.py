"""Prefix values of a "clamp, then linear readout" tail, in one fused pass (CPU, numba).

Many classifiers end, after their first channel-mixing layer, in an elementwise clamp followed by
linear operations only: EfficientNet-Lite / MobileNet's ``conv_head → BN → ReLU6 → pool → FC``,
ResNet's last ``conv3 → BN → (+ identity) → ReLU → pool → FC``. With the maps of the CAM layer as
players, :class:`camlib.engine.fast.coalitions.FastCoalitions` holds that first layer as running sums
S_j = base + Σ_{i<j} D_{π(i)} (paper Sec. 3.2, Algorithm 1: the prefixes of an ordering π), and the
rest of the tail is the readout

    F^c(prefix j of π) = c + Σ_m V_m · clamp(S_j[m], lo, hi)                                  (1)

(V: the linear remainder's weights, one per element m of S; c its constant). Evaluated with
tensor operations, every prefix writes and re-reads all of S_j (K × |S| floats per ordering: 80 MB
for EfficientNet-Lite0's ``blocks.6``), and the passes are memory bound. The kernel here keeps a
block of S in registers / L1, walks the ordering once per block and accumulates (1) on the fly,
for several orderings per block of D (read from memory once for all of them): one pass over D per
group of orderings instead of ~4 passes over K × |S| values per ordering.

Exact in float32 up to summation order (the tests compare it to the tensor path and to the naive
tail passes). Used on the CPU when numba imports (``requirements.txt`` has it); otherwise, and on a
GPU, ``FastCoalitions`` uses its tensor path.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from camlib.engine.kernels import compiled

# Columns of S per block: one row of a block is 4 KB (float32), a block of D (K rows) stays in L2.
BLOCK = 1024


def available() -> bool:
    """Whether the compiled kernel can be used (numba importable)."""
    return _kernel() is not None


def prefix_readout(base: torch.Tensor, d: torch.Tensor, orders: torch.Tensor, weight: torch.Tensor,
                   lo: float, hi: float, threads: int | None = None) -> torch.Tensor:
    """Σ_m V_m · clamp(S_j[m], lo, hi) of Eq. (1) without c, for every prefix j = 0..K of every
    ordering: (P, K + 1) float64.

    ``base`` (M,), ``d`` (K, M), ``weight`` (M,): CPU tensors of one float dtype; ``orders`` (P, K):
    orderings of 0..K-1. Blocks of columns are spread over ``threads`` threads (default: torch's
    intra-op threads); the kernel releases the GIL, so concurrent callers are safe.
    """
    kernel = _kernel()
    base_np = base.detach().contiguous().numpy()
    d_np = d.detach().contiguous().numpy()
    weight_np = weight.detach().to(d.dtype).contiguous().numpy()
    orders_np = orders.detach().to(torch.int64).contiguous().numpy()
    lo_, hi_ = d_np.dtype.type(lo), d_np.dtype.type(hi)

    def run(first: int, stop: int) -> np.ndarray:  # the column blocks first..stop-1
        return kernel(base_np, d_np, orders_np, weight_np, lo_, hi_, BLOCK, first, stop)

    parts = compiled.spread(run, math.ceil(base_np.shape[0] / BLOCK), threads)
    return torch.from_numpy(np.sum(parts, axis=0))


def _kernel():
    return compiled.kernel("camlib.engine.kernels._clampsum_kernel", "prefix_readout_blocks")
