"""Backends provide the quantities of :mod:`camlib.engine.quantities`; the engine picks them.

For every need there is a **reference** backend that always applies (autograd through the tail,
DeepLIFT by graph rewrite on the batch [A; 0], naive coalition evaluation, plain network passes)
and there may be **fast** backends that say whether they apply to a problem (a tail of a certain
shape, a device, a batch size) and then give the same quantity with less work:

=================================  ============================================  ==========================
need                               fast backends, in the order they are tried    reference
=================================  ============================================  ==========================
gradients, gradient sums / dots    block-linear FC pass (:mod:`.fast.blocklinear`) autograd
DeepLIFT contributions             block-linear FC pass; stored zero reference     DeepLIFT rewrite on [A; 0]
coalition game                     fast coalitions (+ fused kernel)                naive (masked tail passes)
masked-input scores                NNPACK stages (:mod:`.fast.nnpack`)             network passes in groups
LRP relevance                      (none)                                          LRP-ε rewrite
=================================  ============================================  ==========================

The engine (:class:`Engine`) takes, per family of needs, the first fast backend that applies, else
the reference; ``backend="reference"`` (or the environment variable ``CAMLIB_BACKEND=reference``)
forces the reference for every need. Every fast backend has a parametrised agreement test
against its reference (``tests/engine/test_agreement.py``).

A backend's :meth:`Backend.start` returns a *provider*: an object with the methods named after the
needs it provides (``gradients(target)``, ``deeplift(target)``, ``game(i, target)``, ...) and a
``logits`` attribute, F(A), when starting it ran the tail (the gradient and DeepLIFT backends do:
the tail pass that picks the target is the same pass their backward goes through); the engine
then takes the logits from it instead of running the tail again.
"""

from __future__ import annotations

import os

import torch

from camlib.engine.quantities import Problem, Quantities

#: Environment variable that forces the reference backends ("reference"), e.g. to check a result.
BACKEND_ENV = "CAMLIB_BACKEND"
CHOICES = ("auto", "reference")


class Backend:
    """One way of computing some needs. Subclasses set ``name``, ``provides`` and implement
    :meth:`start`; fast ones override :meth:`applies`."""

    name: str = ""
    provides: frozenset = frozenset()
    reference: bool = False

    def applies(self, problem: Problem, needs: frozenset) -> bool:
        """Whether this backend can compute ``needs`` (a subset of ``provides``) for ``problem``."""
        return True

    def start(self, problem: Problem, needs: frozenset):  # pragma: no cover - interface
        raise NotImplementedError


def families() -> list[list[Backend]]:
    """The backends of each family of needs, fast first, the reference last."""
    from camlib.engine.fast import blocklinear, coalitions as fast_coalitions, nnpack, stored_reference
    from camlib.engine.reference import autograd, coalitions, deeplift, lrp, network

    return [
        [blocklinear.BlockLinearGradients(), autograd.Autograd()],
        [blocklinear.BlockLinearDeepLift(), stored_reference.StoredReferenceDeepLift(), deeplift.DeepLiftRewrite()],
        [fast_coalitions.FastCoalitionGame(), coalitions.NaiveCoalitionGame()],
        [nnpack.NnpackScores(), network.NetworkScores()],
        [lrp.LrpRewrite()],
    ]


def resolve_choice(backend: str | None) -> str:
    """``backend`` ("auto" / "reference", default: $CAMLIB_BACKEND or "auto"), checked."""
    choice = backend if backend not in (None, "") else os.environ.get(BACKEND_ENV, "auto") or "auto"
    if choice not in CHOICES:
        raise ValueError(f"backend must be one of {', '.join(CHOICES)}, got {choice!r}")
    return choice


class Engine:
    """The backends chosen for one method's needs on one problem, started: the one tail pass ran.

    ``logits``: F(A) (B, C), from the pass of a gradient or DeepLIFT backend when the method needs
    one, else from a plain tail pass in inference mode; ``chosen``: need -> backend name.
    """

    def __init__(self, problem: Problem, needs: frozenset, backend: str | None = "auto"):
        self.problem = problem
        self.needs = frozenset(needs)
        reference_only = resolve_choice(backend) == "reference"
        self.providers: dict = {}
        self.chosen: dict[str, str] = {}
        logits = None
        for family in families():
            wanted = self.needs & family[-1].provides
            if not wanted:
                continue
            chosen = next(b for b in family if (b.reference or not reference_only) and b.applies(problem, wanted))
            provider = chosen.start(problem, wanted)
            for need in wanted:
                self.providers[need] = provider
                self.chosen[need.value] = chosen.name
            if logits is None:
                logits = getattr(provider, "logits", None)
        if logits is None:
            with torch.inference_mode():
                logits = problem.split.tail(problem.activations, *problem.fixed)
        self.logits = logits

    def quantities(self, target: torch.Tensor, logits: torch.Tensor | None = None,
                   needs: frozenset | None = None) -> Quantities:
        """The method's view, once the target is known (``logits``: F(A) as the caller keeps it,
        by default :attr:`logits`; ``needs``: what this view may read, a subset of the engine's,
        by default all of them, for the engine that several methods share)."""
        needs = self.needs if needs is None else frozenset(needs)
        if not needs <= self.needs:
            raise ValueError(f"the engine was not started for {', '.join(sorted(n.value for n in needs - self.needs))}")
        return Quantities(self.problem, needs, self.providers, self.logits if logits is None else logits, target)
