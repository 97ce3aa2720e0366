"""The coalition game of activation maps, evaluated by the plain tail (the reference backend).

A coalition a' ∈ {0,1}^K keeps the maps A_k with a'_k = 1 and zeroes the others (h_A, paper
Sec. 3.2); its value is F^c(h_A(a')), here computed by running the tail F on the masked
activations, ``batch_size`` coalitions per pass. :mod:`camlib.engine.fast.coalitions` gives the same
values with less work.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from camlib.engine.backends import Backend
from camlib.engine.quantities import Need, Problem


def prefix_masks(permutation: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """Coalitions of the prefixes j = start..stop-1 of an ordering: mask[j, k] = (rank of k) < j."""
    n = permutation.numel()
    stop = n + 1 if stop is None else stop
    rank = torch.empty_like(permutation)
    rank[permutation] = torch.arange(n, device=permutation.device)
    return rank[None, :] < torch.arange(start, stop, device=permutation.device)[:, None]




class NaiveCoalitions:
    """F^c(h_A(a')) by running the tail on masked activations of one image, in chunks."""

    def __init__(self, tail: fx.GraphModule, activations: torch.Tensor, fixed: tuple, target: int,
                 batch_size: int = 64):
        self.tail, self.a, self.fixed, self.target, self.batch_size = tail, activations, fixed, target, batch_size
        self.n = activations.shape[1]

    @torch.inference_mode()
    def values(self, masks: torch.Tensor) -> torch.Tensor:
        out = []
        for start in range(0, masks.shape[0], self.batch_size):
            m = masks[start:start + self.batch_size].to(self.a.device)
            chunk = self.a * m[:, :, None, None].to(self.a.dtype)
            fixed = tuple(f.expand(chunk.shape[0], *f.shape[1:]) for f in self.fixed)
            out.append(self.tail(chunk, *fixed)[:, self.target])
        return torch.cat(out)

    def prefix_values(self, permutation: torch.Tensor) -> torch.Tensor:
        return self.values(prefix_masks(permutation))

    def prefix_values_many(self, permutations: torch.Tensor) -> torch.Tensor:
        """F^c on the K + 1 prefixes of each of P orderings: (P, K + 1)."""
        return torch.stack([self.prefix_values(p) for p in permutations])

    def leave_one_out(self) -> torch.Tensor:
        return self.values(~torch.eye(self.n, dtype=torch.bool))


class NaiveCoalitionGame(Backend):
    name = "naive-coalitions"
    provides = frozenset({Need.GAME})
    reference = True

    def start(self, problem: Problem, needs: frozenset) -> "_NaiveGames":
        return _NaiveGames(problem)


class _NaiveGames:
    def __init__(self, problem: Problem):
        self.problem = problem

    def game(self, i: int, target: int) -> NaiveCoalitions:
        p = self.problem
        return NaiveCoalitions(p.split.tail, p.activations[i:i + 1], p.fixed_for(i, 1), target, p.batch_size)
