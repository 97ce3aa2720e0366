"""The compiled loop of :mod:`camlib.engine.kernels.blockdot` (imported lazily: it needs numba)."""

import numba

# Reassociation lets the dot products vectorise.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


@numba.njit(nogil=True, cache=True, fastmath=_FASTMATH, boundscheck=False)
def block_dots_rows(weight, x, out, first, stop):  # pragma: no cover (compiled)
    """out[o, r, k] = Σ_p weight[o, k·P + p] · x[r, k, p] for the rows o = first..stop-1 of weight:
    each row of weight is read once, for all r and k."""
    n_vectors, n_maps, width = x.shape
    for o in range(first, stop):
        row = weight[o]
        for k in range(n_maps):
            c0 = k * width
            for r in range(n_vectors):
                acc = x.dtype.type(0)
                for p in range(width):
                    acc += row[c0 + p] * x[r, k, p]
                out[o, r, k] = acc

