"""The compiled loop of :mod:`camlib.engine.kernels.clampsum` (imported lazily: it needs numba)."""

import numba
import numpy as np

# Reassociation lets the dot products vectorise; no "no-NaN / no-Inf" assumption (hi may be +inf).
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


@numba.njit(nogil=True, cache=True, fastmath=_FASTMATH, boundscheck=False)
def prefix_readout_blocks(base, d, orders, weight, lo, hi, block, first, stop):  # pragma: no cover (compiled)
    """Σ_m weight_m · clamp(S_j[m], lo, hi) over the column blocks first..stop-1, for every prefix j
    of every ordering; S_0 = base, S_j = S_{j-1} + d[orders[p, j-1]]. Returns (P, K + 1) float64."""
    n_orders, n_maps = orders.shape
    width = base.shape[0]
    out = np.zeros((n_orders, n_maps + 1))
    for b in range(first, stop):
        c0 = b * block
        n = min(width, c0 + block) - c0
        v = weight[c0:c0 + n].copy()
        s = np.empty(n, dtype=base.dtype)
        for p in range(n_orders):
            s[:] = base[c0:c0 + n]
            for j in range(n_maps + 1):
                if j > 0:
                    row = d[orders[p, j - 1], c0:c0 + n]
                    for i in range(n):
                        s[i] += row[i]
                acc = s.dtype.type(0)
                for i in range(n):
                    x = s[i]
                    x = x if x > lo else lo
                    x = x if x < hi else hi
                    acc += v[i] * x
                out[p, j] += acc
    return out
