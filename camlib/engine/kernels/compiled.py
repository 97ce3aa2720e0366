"""camlib's compiled CPU kernels (numba): loaded where numba works, run over torch's threads.

The kernels live in modules of their own (``_clampsum_kernel``, ``_blockdot_kernel`` beside this one)
so that importing camlib never needs numba; each caller falls back to tensor code where
:func:`kernel` gives None. The kernels release the GIL, so :func:`spread` can run independent
ranges of one call on several threads, and concurrent callers are safe.
"""

from __future__ import annotations

import concurrent.futures
import importlib
from typing import Callable

import numpy as np
import torch


def kernel(module: str, name: str) -> Callable | None:
    """``module.name`` compiled, or None where numba does not import or initialise."""
    try:
        return getattr(importlib.import_module(module), name)
    except Exception:  # ImportError, or a numba that fails to initialise on this platform
        return None


def spread(run: Callable[[int, int], object], n: int, threads: int | None = None) -> list:
    """[run(first, stop), ...] over ``threads`` (default: torch's intra-op threads) equal ranges of
    0..n-1, one thread each."""
    threads = max(1, min(threads or torch.get_num_threads(), n))
    bounds = np.linspace(0, n, threads + 1).astype(np.int64)
    if threads == 1:
        return [run(0, n)]
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda t: run(bounds[t], bounds[t + 1]), range(threads)))
