"""Gradients of the target logit with respect to the activations, by autograd through the tail.

The reference backend of the gradient family: one forward pass of the tail F with autograd from a
copy of A that requires gradients (its output is F(A), the logits the target is chosen from), then
one backward pass of F^c for the target:

    gradients      g = ∂F^c(A)/∂A                      (B, K, h, w)
    gradient sums  Σ_ij g_k(i, j)                      (B, K)
    gradient dots  Σ_ij A_k(i, j) · g_k(i, j)          (B, K)

Never through the head: the activations come in detached (they were computed in inference mode).
"""

from __future__ import annotations

import torch

from camlib.engine.backends import Backend
from camlib.engine.quantities import Need, Problem

GRADIENT_NEEDS = frozenset({Need.GRADIENTS, Need.GRADIENT_SUMS, Need.GRADIENT_DOTS})


def tail_with_graph(split, activations: torch.Tensor, fixed: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """(A as a leaf that requires gradients, F(A) with its autograd graph): one pass through the tail."""
    a = activations.detach().requires_grad_(True)
    with torch.enable_grad():
        return a, split.tail(a, *fixed)


class Autograd(Backend):
    name = "autograd"
    provides = GRADIENT_NEEDS
    reference = True

    def start(self, problem: Problem, needs: frozenset) -> "GradientPass":
        a, out = tail_with_graph(problem.split, problem.activations, problem.fixed)
        return GradientPass(problem, a, out)


class GradientPass:
    """The tail pass with its graph; the backward pass runs once, for the first target asked."""

    def __init__(self, problem: Problem, a: torch.Tensor, out: torch.Tensor):
        self.problem, self.a, self.out = problem, a, out
        self.logits = out.detach()
        self._gradients = None

    def gradients(self, target: torch.Tensor) -> torch.Tensor:
        if self._gradients is None:
            (self._gradients,) = torch.autograd.grad(self.out.gather(1, target[:, None]).sum(), self.a)
        return self._gradients

    def gradient_sums(self, target: torch.Tensor) -> torch.Tensor:
        return self.gradients(target).sum(dim=(2, 3))

    def gradient_dots(self, target: torch.Tensor) -> torch.Tensor:
        return (self.problem.activations * self.gradients(target)).sum(dim=(2, 3))
