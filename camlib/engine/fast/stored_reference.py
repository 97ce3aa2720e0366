"""LIFT-CAM's DeepLIFT tail against a reference computed once per layer (a fast backend).

For a classifier the reference r = 0 at layer l gives the same values at every node of the tail for
every image: F(0) and the input of each nonlinearity can be computed once per split. The tail then
runs on the actual activations alone, each nonlinearity reading its stored reference input, which
halves the cost of the fully connected layers of a VGG-style tail (a two-row matrix product costs
two one-row products on a CPU). The multipliers are those of the batched [A; r] form
(:mod:`camlib.engine.reference.deeplift`), hence the same contributions. It applies when the tail
holds no fixed inputs (a VQA question differs per image, so its reference does too).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.fx as fx

from camlib.engine.backends import Backend
from camlib.engine.quantities import DeepLift, Need, Problem
from camlib.engine.reference.deeplift import (MAXPOOL_RULES, RESCALE_FUNCTIONS, _indexed_pool, _max_rule,
                                              _rescale_multiplier, deeplift_tail)


class _RescaleAgainst(torch.autograd.Function):
    """y = fn(x) on the actual batch; backward: Rescale multipliers against the stored x_ref."""

    @staticmethod
    def forward(ctx, x, x_ref, fn, args, kwargs):
        y = fn(x, *args, **kwargs)
        ctx.save_for_backward(x, y, x_ref, fn(x_ref, *args, **kwargs))
        ctx.fn, ctx.args, ctx.kwargs = fn, args, kwargs
        return y

    @staticmethod
    def backward(ctx, grad):
        x, y, x_ref, y_ref = ctx.saved_tensors
        return grad * _rescale_multiplier(ctx, x, x_ref, y, y_ref), None, None, None, None


class _MaxPoolAgainst(torch.autograd.Function):
    """A max pooling on the actual batch; backward by the max rule against the stored x_ref."""

    @staticmethod
    def forward(ctx, x, x_ref, pool):
        y, indices = pool(x)
        y_ref, i_ref = pool(x_ref)
        ctx.save_for_backward(x, y, indices, x_ref, y_ref, i_ref)
        return y

    @staticmethod
    def backward(ctx, g):
        x, y, i_act, x_ref, y_ref, i_ref = ctx.saved_tensors
        return _max_rule(g, x, x_ref, y, y_ref, i_act, i_ref), None, None


def _rescaled_against(fn):
    def rescaled(x, x_ref, *args, **kwargs):
        return _RescaleAgainst.apply(x, x_ref, fn, args, kwargs)

    rescaled.__name__ = f"rescaled_against_{getattr(fn, '__name__', 'fn')}"
    return rescaled


_AGAINST = {rescaled: _rescaled_against(fn) for fn, rescaled in RESCALE_FUNCTIONS.items()}


def _max_pool_against(fn):
    def rule(x, x_ref, *args, **kwargs):
        return _MaxPoolAgainst.apply(x, x_ref, _indexed_pool(fn, args, kwargs))

    rule.__name__ = f"max_rule_against_{getattr(fn, '__name__', 'pool')}"
    return rule


_MAX_AGAINST = {rule: _max_pool_against(fn) for fn, rule in MAXPOOL_RULES.items()}


def deeplift_tail_with_reference(tail: fx.GraphModule, reference: torch.Tensor) -> tuple[fx.GraphModule, torch.Tensor]:
    """(a DeepLIFT tail for the actual batch alone, F(r) (1, C)) for a tail without fixed inputs.

    The reference ``reference`` (1, K, h, w) is run once; each nonlinearity of :func:`deeplift_tail`
    gets its reference input as a stored buffer. Same multipliers, hence the same contributions, as
    the batched [A; r] form.
    """
    dl = deeplift_tail(tail)
    if sum(1 for n in dl.graph.nodes if n.op == "placeholder") != 1:
        raise ValueError("the stored reference needs a tail without fixed inputs")
    rules = {n for n in dl.graph.nodes if n.op == "call_function" and (n.target in _AGAINST or n.target in _MAX_AGAINST)}
    recorded: dict[str, torch.Tensor] = {}

    class _Record(fx.Interpreter):
        def run_node(self, node):
            if node in rules:
                recorded[node.name] = self.env[node.args[0]].detach().clone()
            return super().run_node(node)

    with torch.no_grad():
        ref_logits = _Record(dl).run(reference.detach()[:1])
    for i, node in enumerate(sorted(rules, key=lambda n: list(dl.graph.nodes).index(n))):
        name = f"_deeplift_reference_{i}"
        dl.register_buffer(name, recorded[node.name])
        with dl.graph.inserting_before(node):
            buffer = dl.graph.get_attr(name)
        node.target = _MAX_AGAINST[node.target] if node.target in _MAX_AGAINST else _AGAINST[node.target]
        node.args = (node.args[0], buffer, *node.args[1:])
    dl.recompile()
    return dl, ref_logits.detach()


@dataclasses.dataclass(frozen=True)
class StoredReference:
    """A split's DeepLIFT tail for the actual batch alone and F(0) (1, C), built once per split."""

    graph: fx.GraphModule
    logits: torch.Tensor


class StoredReferenceDeepLift(Backend):
    """DeepLIFT on A alone against the stored reference (no fixed inputs)."""

    name = "stored-reference"
    provides = frozenset({Need.DEEPLIFT})

    def applies(self, problem: Problem, needs: frozenset) -> bool:
        return not problem.fixed

    def start(self, problem: Problem, needs: frozenset) -> "_StoredPass":
        zero = torch.zeros_like(problem.activations[:1])
        stored = problem.split.memo(StoredReference,
                                    lambda: StoredReference(*deeplift_tail_with_reference(problem.split.tail, zero)))
        x = problem.activations.detach().requires_grad_(True)
        with torch.enable_grad():
            out = stored.graph(x)
        return _StoredPass(problem, x, out, stored.logits.expand(out.shape[0], -1))


class _StoredPass:
    def __init__(self, problem: Problem, x: torch.Tensor, out: torch.Tensor, reference_logits: torch.Tensor):
        self.problem, self.x, self.out, self.reference_logits = problem, x, out, reference_logits
        self.logits = out.detach()

    def deeplift(self, target: torch.Tensor) -> DeepLift:
        selected = self.out.gather(1, target[:, None]).sum()
        (grad,) = torch.autograd.grad(selected, self.x)
        alpha = (grad[:self.problem.batch] * self.problem.activations).sum(dim=(2, 3))  # m ∘ (A - 0), per map
        return DeepLift(alpha, self.out.detach(), self.reference_logits)
