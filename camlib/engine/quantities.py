"""What a CAM method can ask for, and the typed object through which it gets it.

A method declares its needs (:class:`Need`) and computes its coefficients α from a
:class:`Quantities` object that provides exactly those: the activations A = f^[l](x) and the
logits F(A) always, and of the declared needs only. Which backend computed each quantity
(autograd, a DeepLIFT graph rewrite, a block-linear pass, fused kernels, ...) is the engine's
choice (:mod:`camlib.engine.backends`), recorded in ``Explanation.info["backends"]``; the method
never sees it.

The quantities, for a batch of B images, K maps of h×w, target classes c (B,):

========================  ====================================================================
``gradients``             ∂F^c(A)/∂A, (B, K, h, w)
``gradient_sums``         Σ_ij ∂F^c(A)/∂A_k(i, j), (B, K)
``gradient_dots``         Σ_ij A_k(i, j) · ∂F^c(A)/∂A_k(i, j), (B, K)
``deeplift``              DeepLIFT-Rescale contributions of each map to F^c against the zero
                          reference, summed over the map (paper Eq. 7), with F(A) and F(0)
``game(i)``               the coalition game of image i: F^c(h_A(a')) for coalitions a' of maps
                          (paper Sec. 3.2), as a :class:`Game`
``masked_scores``         f^c(X ∘ s(Up(A_k))) for every map k: the whole network on the input
                          masked by each upsampled, min-max normalised map (Score-CAM)
``lrp(ε)``                LRP-ε relevance of F^c(A) through the tail, summed over each map:
                          Σ_ij R(A_k(i, j)), (B, K), with F^c(A) (the relevance put in), as an :class:`Lrp`
========================  ====================================================================
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Callable, Protocol

import torch

Progress = Callable[[float], None]


class Need(enum.Enum):
    """A quantity a method may declare (see the module docstring for each one's definition)."""

    GRADIENTS = "gradients"
    GRADIENT_SUMS = "gradient sums"
    GRADIENT_DOTS = "gradient dots"
    DEEPLIFT = "DeepLIFT contributions"
    GAME = "coalition game"
    MASKED_SCORES = "masked-input scores"
    LRP = "LRP relevance"


class UndeclaredNeedError(RuntimeError):
    """A method asked for a quantity it did not declare in ``needs``."""


class Game(Protocol):
    """The coalition game of one image (paper Sec. 3.2): a coalition a' ∈ {0,1}^K keeps the maps
    with a'_k = 1 and zeroes the others (h_A); its value is the target logit F^c(h_A(a'))."""

    n: int

    def values(self, masks: torch.Tensor) -> torch.Tensor:
        """F^c on coalitions ``masks`` (m, K) bool: (m,)."""

    def prefix_values(self, permutation: torch.Tensor) -> torch.Tensor:
        """F^c on the K + 1 prefixes of an ordering: (K + 1,)."""

    def prefix_values_many(self, permutations: torch.Tensor) -> torch.Tensor:
        """F^c on the K + 1 prefixes of each of P orderings: (P, K + 1)."""

    def leave_one_out(self) -> torch.Tensor:
        """F^c with each map removed in turn: (K,)."""


@dataclasses.dataclass(frozen=True)
class DeepLift:
    """DeepLIFT-Rescale through the tail against the zero reference (paper Sec. 3.3).

    ``contributions`` (B, K): C_{ΔA_k ΔF^c} = Σ_ij C_{ΔA_k(i,j) ΔF^c} (Eq. 7); ``logits`` (B, C):
    F(A) from the same pass; ``reference_logits`` (B, C): F(0). Summation-to-delta (Eq. 8):
    Σ_k contributions[b, k] = F^c(A_b) - F^c(0) up to float rounding.
    """

    contributions: torch.Tensor
    logits: torch.Tensor
    reference_logits: torch.Tensor


@dataclasses.dataclass(frozen=True)
class Lrp:
    """Layer-wise relevance propagation (LRP-ε) of the target logit through the tail.

    ``relevance`` (B, K): Σ_ij R(A_k(i, j)), the relevance that reaches map k when ``output``
    (B,) = F^c(A) is put on the target logit; ``logits`` (B, C): F(A) from the same pass;
    ``epsilon``: the ε-rule's stabiliser. The rules are stated in
    :mod:`camlib.engine.reference.lrp`. Conservation, Σ_k relevance[b, k] = output[b], holds where
    they conserve relevance: no biases or batch-norm shifts in the tail and ε → 0.
    """

    relevance: torch.Tensor
    logits: torch.Tensor
    output: torch.Tensor
    epsilon: float


@dataclasses.dataclass
class Problem:
    """What every backend works from: one batch of B images at the CAM layer of ``split``.

    ``images``: pixel space (B, 3, H, W) in [0, 1]; ``extra``: further network inputs (VQA: the
    question tokens); ``activations`` A (B, K, h, w) and ``fixed`` (the tail's held-fixed inputs,
    e.g. the question embedding) from the head; ``batch_size``: the most masked inputs per network
    or tail call; ``progress``: a callback of the fraction done (slow quantities report to it).
    """

    model: object  # camlib.model.CamModel
    split: object  # camlib.graph.split.Split
    images: torch.Tensor
    extra: tuple
    activations: torch.Tensor
    fixed: tuple
    batch_size: int = 64
    progress: Progress | None = None

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


class Quantities:
    """The quantities one method may read for one batch, computed on first use.

    Always: ``activations`` A (B, K, h, w), ``logits`` F(A) (B, C), ``target`` c (B,), ``batch``,
    ``n_maps``, ``layer``, ``linear_tail``; ``info`` (a dict the method may fill with extras for
    :class:`camlib.Explanation`); ``report(fraction)`` for progress. Of the needs (module
    docstring) only the declared ones; any other raises :class:`UndeclaredNeedError`.
    """

    def __init__(self, problem: Problem, needs: frozenset, providers: dict, logits: torch.Tensor,
                 target: torch.Tensor):
        self._problem = problem
        self._needs = frozenset(needs)
        self._providers = providers  # Need -> the provider started by the chosen backend
        self._cache: dict = {}
        self.logits = logits
        self.target = target
        self.info: dict = {}

    # -- always there ------------------------------------------------------------------------------

    @property
    def activations(self) -> torch.Tensor:
        return self._problem.activations

    @property
    def batch(self) -> int:
        return self._problem.batch

    @property
    def n_maps(self) -> int:
        return self._problem.n_maps

    @property
    def layer(self) -> str:
        return self._problem.split.layer

    @property
    def linear_tail(self) -> bool:
        """Whether the tail F is affine in A (e.g. global average pooling + a fully connected layer)."""
        return self._problem.split.linear_tail

    def report(self, fraction: float) -> None:
        self._problem.report(fraction)

    # -- the declared needs --------------------------------------------------------------------------

    def _provider(self, need: Need):
        if need not in self._needs:
            raise UndeclaredNeedError(f"the method did not declare {need.value!r} in its needs "
                                      f"({', '.join(sorted(n.value for n in self._needs)) or 'none'})")
        return self._providers[need]

    def _cached(self, need: Need, compute: Callable[[], object]):
        if need not in self._cache:
            self._cache[need] = compute()
        return self._cache[need]

    @property
    def gradients(self) -> torch.Tensor:
        provider = self._provider(Need.GRADIENTS)
        return self._cached(Need.GRADIENTS, lambda: provider.gradients(self.target))

    @property
    def gradient_sums(self) -> torch.Tensor:
        provider = self._provider(Need.GRADIENT_SUMS)
        return self._cached(Need.GRADIENT_SUMS, lambda: provider.gradient_sums(self.target))

    @property
    def gradient_dots(self) -> torch.Tensor:
        provider = self._provider(Need.GRADIENT_DOTS)
        return self._cached(Need.GRADIENT_DOTS, lambda: provider.gradient_dots(self.target))

    @property
    def deeplift(self) -> DeepLift:
        provider = self._provider(Need.DEEPLIFT)
        return self._cached(Need.DEEPLIFT, lambda: provider.deeplift(self.target))

    def game(self, i: int) -> Game:
        """The coalition game of image ``i`` for its target (a new evaluator per call: it holds
        per-image tensors, so a method builds one image's game at a time)."""
        return self._provider(Need.GAME).game(i, int(self.target[i]))

    @property
    def masked_scores(self) -> torch.Tensor:
        provider = self._provider(Need.MASKED_SCORES)
        return self._cached(Need.MASKED_SCORES, lambda: provider.masked_scores(self.target))

    def lrp(self, epsilon: float) -> Lrp:
        """LRP-ε relevance of the target logit per map, with the stabiliser ``epsilon`` > 0."""
        provider = self._provider(Need.LRP)
        return self._cached((Need.LRP, float(epsilon)), lambda: provider.lrp(self.target, epsilon))
