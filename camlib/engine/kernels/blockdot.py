"""Products with a large fully connected layer that read its weights once, or only where needed.

A fully connected layer W (O, K·P) applied to K maps flattened channel after channel (VGG16's first
classifier layer: 4096 × 25088, 411 MB) takes map k through its own block of columns
W[:, kP:(k+1)P], so its output is the sum of the per-map contributions

    Y[k, o] = Σ_p W[o, kP + p] · x_k[p],          W·vec(x) = Σ_k Y[k, :]                     (1)

SHAP-CAM's coalitions need Y for the maps x = ΔA (paper Sec. 3.2: each prefix is a running sum of
them) and the gradient methods need it for directional derivatives (:mod:`camlib.engine.fast.blocklinear`).
Y has only K·O values, but tensor libraries compute (1) as a batched product over k whose blocks
of W are 4096 short strided rows each: on the development CPU 111 ms against 20 ms for the product
W·vec(x) itself. :func:`block_dots` walks W row by row, in memory order, once for all the vectors
x_r and maps k: 20 ms for one vector, as the plain product.

The backward product gᵀW of such a layer, where a ReLU follows it, needs only the rows of W whose
unit is active (g_o = 0 elsewhere): :func:`active_rows_product` reads only those (tensor code).

Float32 sums in a different order than BLAS (agreement to rounding; the tests compare with float64).
The numba kernel of :func:`block_dots` runs on the CPU when numba imports; otherwise, and on a
GPU, it is one ``einsum``.
"""

from __future__ import annotations

import numpy as np
import torch

from camlib.engine.kernels import compiled

# active_rows_product: rows gathered per gemv (6 MB of VGG16's first FC layer: in cache), and the
# fraction of active rows above which the plain product is as fast.
ACTIVE_ROWS_CHUNK = 64
ACTIVE_ROWS_DENSE = 0.75


def block_dots(weight: torch.Tensor, x: torch.Tensor, threads: int | None = None) -> torch.Tensor:
    """Y[r, k, o] = Σ_p weight[o, kP + p] · x[r, k, p] (Eq. 1) for ``weight`` (O, K·P) and
    ``x`` (R, K, P): (R, K, O), in ``x``'s dtype. On the CPU with numba, one pass over ``weight``
    spread over ``threads`` threads (default: torch's intra-op threads); the kernel releases the
    GIL, so concurrent callers are safe."""
    n_vectors, n_maps, width = x.shape
    if weight.dim() != 2 or weight.shape[1] != n_maps * width:
        raise ValueError(f"weight {tuple(weight.shape)} does not take {n_maps} maps of {width} values")
    blocks = weight.view(weight.shape[0], n_maps, width)
    kernel = _kernel() if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) else None
    if kernel is None:
        return torch.einsum("okp,rkp->rko", blocks.to(x.dtype), x)
    w = weight.detach().to(x.dtype).contiguous().numpy()
    v = x.detach().contiguous().numpy()
    out = np.empty((w.shape[0], n_vectors, n_maps), dtype=v.dtype)
    compiled.spread(lambda first, stop: kernel(w, v, out, first, stop), w.shape[0], threads)
    return torch.from_numpy(out).permute(1, 2, 0)


def active_rows_product(weight: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """gᵀW = Σ_{o: g_o ≠ 0} g_o · W[o, :] for ``weight`` (O, N) and ``g`` (O,): (N,).

    The backward product of a fully connected layer that a ReLU follows: g_o = 0 wherever the ReLU
    is off, and those rows of W need not be read (VGG16's first FC layer: about half of its 4096
    rows on random weights, more on trained ones), while BLAS's gemv reads them all. The needed
    rows are gathered ``ACTIVE_ROWS_CHUNK`` at a time into a buffer that stays in cache, and each
    chunk is one gemv: on the development CPU 11 ms with half the rows active, against 18 ms for
    ``g @ weight``. Where most rows are active it is ``g @ weight``.
    """
    rows = (g != 0).nonzero().flatten()
    if rows.numel() > ACTIVE_ROWS_DENSE * g.numel():
        return g @ weight
    out = torch.zeros(weight.shape[1], dtype=weight.dtype, device=weight.device)
    buffer = torch.empty(min(ACTIVE_ROWS_CHUNK, rows.numel()), weight.shape[1], dtype=weight.dtype,
                         device=weight.device)
    for start in range(0, rows.numel(), ACTIVE_ROWS_CHUNK):
        chunk = rows[start:start + ACTIVE_ROWS_CHUNK]
        gathered = torch.index_select(weight, 0, chunk, out=buffer[:chunk.numel()])
        out.addmv_(gathered.T, g[chunk])
    return out


def available() -> bool:
    """Whether the compiled kernel can be used (numba importable)."""
    return _kernel() is not None


def _kernel():
    return compiled.kernel("camlib.engine.kernels._blockdot_kernel", "block_dots_rows")
