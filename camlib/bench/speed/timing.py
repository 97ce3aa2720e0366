"""A timed case and the interleaved timing loop.

A :class:`Case` is one (library, method) call as a user writes it: ``open()`` installs what the
library needs (hooks, an extractor) and returns ``(run, close)``; ``run()`` is the timed call and
returns the coefficients α it computed (B, K); ``close()`` removes the hooks. Installing and
removing happen outside the timed region.

:func:`time_cases` times the cases of one model together: one warm-up run each (not for slow
cases), then ``repeats`` rounds (``slow_repeats`` for slow cases) in which every case runs once,
in an order rotated per round, so that a change of machine load hits all cases alike.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import torch

from camlib.bench.speed.machine import sync


@dataclasses.dataclass
class Case:
    library: str
    method: str
    open: Callable[[], tuple[Callable[[], object], Callable[[], None]]]
    slow: bool = False  # hundreds of forward passes: --slow-repeats runs, no warm-up run
    note: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return self.library, self.method


def run_case(case: Case, device: torch.device):
    """One timed run: (seconds, coefficients); hooks are installed and removed outside the timing."""
    run, close = case.open()
    try:
        sync(device)
        start = time.perf_counter()
        out = run()
        sync(device)
        return time.perf_counter() - start, out
    finally:
        close()


def time_cases(cases: list[Case], device: torch.device, repeats: int, slow_repeats: int,
               log=print) -> tuple[dict, dict]:
    """Interleaved timing: (seconds per case key, last coefficients per case key)."""
    seconds = {c.key: [] for c in cases}
    outputs, failed = {}, set()

    def attempt(case):
        try:
            return run_case(case, device)
        except Exception as exc:  # a peer that cannot handle this model/layer: report, go on
            failed.add(case.key)
            case.note = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
            log(f"  {case.library} {case.method} {case.note}")
            return None

    for case in cases:  # warm-up (fx splits, DeepLIFT tails, caches, allocator), not for slow cases
        if not case.slow and (result := attempt(case)) is not None:
            outputs[case.key] = result[1]
    for rep in range(max(repeats, slow_repeats)):
        order = cases[rep % len(cases):] + cases[:rep % len(cases)]
        for case in order:
            if rep >= (slow_repeats if case.slow else repeats) or case.key in failed:
                continue
            result = attempt(case)
            if result is None:
                continue
            t, outputs[case.key] = result
            seconds[case.key].append(t)
            if case.slow:
                log(f"  {case.library:8s} {case.method:12s} run {rep + 1}: {t:.2f} s")
    return seconds, outputs
