"""What every CAM method shares: the context it computes its coefficients from.

A method is a small class with a ``key``, a ``title`` and one function,
``coefficients(ctx, **options) -> α`` of shape (B, K); the map itself is made by
:mod:`camlib.cam` for all methods alike (Eq. 1), as pytorch-grad-cam's BaseCAM subclasses only
supply weights.
"""

from __future__ import annotations

import dataclasses
from functools import cached_property
from typing import Callable

import torch

from camlib import blocklinear

Progress = Callable[[float], None]


@dataclasses.dataclass
class Context:
    """Everything a method may use, for a batch of B images at the CAM layer l.

    ``activations`` A = f^[l](x) (B, K, h, w); ``fixed``: tail inputs held fixed (VQA question
    embedding); ``logits`` F(A) (B, C); ``target`` c (B,). Gradients are computed on first use.
    """

    model: "object"  # camlib.zoo.CamModel
    split: "object"  # camlib.split.Split
    images: torch.Tensor
    extra: tuple
    activations: torch.Tensor
    fixed: tuple
    logits: torch.Tensor
    target: torch.Tensor
    batch_size: int = 64
    progress: Progress | None = None
    info: dict = dataclasses.field(default_factory=dict)
    tail_state: object = None  # what the method's tail pass kept (see CamMethod.tail_pass)

    @property
    def batch(self) -> int:
        return self.activations.shape[0]

    @property
    def n_maps(self) -> int:
        return self.activations.shape[1]

    def report(self, fraction: float) -> None:
        if self.progress is not None:
            self.progress(min(max(float(fraction), 0.0), 1.0))

    def fixed_for(self, i: int, n: int) -> tuple:
        """The held-fixed tail inputs of image i, expanded to a batch of n."""
        return tuple(f[i:i + 1].expand(n, *f.shape[1:]) for f in self.fixed)

    @cached_property
    def gradients(self) -> torch.Tensor:
        """∂F^c(A)/∂A (B, K, h, w): one backward pass through the tail only (through the graph of
        :meth:`GradientMethod.tail_pass` when the method kept it, else after a new tail pass)."""
        state = self.tail_state
        if isinstance(state, blocklinear.BlockLinearPass) and state.x is not None:
            return state.gradients(self.target)
        a, out = state if isinstance(state, GradientState) else tail_with_graph(self.split, self.activations, self.fixed)
        (grad,) = torch.autograd.grad(out.gather(1, self.target[:, None]).sum(), a)
        return grad

    @cached_property
    def gradient_sums(self) -> torch.Tensor:
        """Σ_ij ∂F^c(A)/∂A_k(i, j) (B, K): from the block-linear pass when the method's tail pass
        made one (:mod:`camlib.blocklinear`), else from :attr:`gradients`."""
        if isinstance(self.tail_state, blocklinear.BlockLinearPass) and "sum" in self.tail_state.directions:
            return self.tail_state.per_map("sum", self.target)
        return self.gradients.sum(dim=(2, 3))

    @cached_property
    def gradient_dots(self) -> torch.Tensor:
        """Σ_ij A_k(i, j) · ∂F^c(A)/∂A_k(i, j) (B, K), as :attr:`gradient_sums`."""
        if isinstance(self.tail_state, blocklinear.BlockLinearPass) and "dot" in self.tail_state.directions:
            return self.tail_state.per_map("dot", self.target)
        return (self.activations * self.gradients).sum(dim=(2, 3))

    def target_logits_of_tail(self, i: int, activations: torch.Tensor) -> torch.Tensor:
        """F^c on a batch of modified activations of image i, in chunks (no gradients)."""
        values = []
        with torch.inference_mode():
            for start in range(0, activations.shape[0], self.batch_size):
                chunk = activations[start:start + self.batch_size]
                out = self.split.tail(chunk, *self.fixed_for(i, chunk.shape[0]))
                values.append(out[:, self.target[i]])
        return torch.cat(values)


class GradientState(tuple):
    """(A with requires_grad, F(A) with its autograd graph): kept by a gradient method's tail pass."""


def tail_with_graph(split, activations: torch.Tensor, fixed: tuple) -> GradientState:
    """One pass through the tail F with autograd, from a copy of A that requires gradients."""
    a = activations.detach().requires_grad_(True)
    with torch.enable_grad():
        return GradientState((a, split.tail(a, *fixed)))


class CamMethod:
    """Base of all methods: subclasses set ``key``, ``title`` and implement ``coefficients``.

    ``tail_pass`` gives the logits F(A) that the target is chosen from; a method that needs more
    of the tail than its output (gradients, DeepLIFT multipliers) overrides it so that the tail
    runs once, and reads what it kept from ``ctx.tail_state``.
    """

    key: str = ""
    title: str = ""
    summary: str = ""

    def tail_pass(self, model, split, activations: torch.Tensor, fixed: tuple) -> tuple[torch.Tensor, object]:
        """(logits F(A) (B, C), state for ``coefficients``); by default one pass in inference mode."""
        with torch.inference_mode():
            return split.tail(activations, *fixed), None

    def coefficients(self, ctx: Context, **options) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class GradientMethod(CamMethod):
    """A method built on ∂F^c/∂A: the tail pass keeps its autograd graph for ``ctx.gradients``.

    A method lists what it reads in ``needs``: "sum" (``ctx.gradient_sums``), "dot"
    (``ctx.gradient_dots``), "gradients" (``ctx.gradients``). On a "pooling → flatten → fully
    connected" tail its tail pass then reads the FC weights once, or for "gradients" only the rows
    whose ReLU is on, instead of twice (:mod:`camlib.blocklinear`).
    """

    needs: tuple[str, ...] = ()

    def tail_pass(self, model, split, activations: torch.Tensor, fixed: tuple) -> tuple[torch.Tensor, object]:
        tail = blocklinear.applicable(model, split, activations, fixed) if self.needs else None
        if tail is not None:
            state = blocklinear.gradient_pass(model, tail, split.layer, activations, self.needs)
            return state.logits.detach(), state
        state = tail_with_graph(split, activations, fixed)
        return state[1].detach(), state
