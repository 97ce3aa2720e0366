"""DeepLIFT-Rescale through the tail F, with the zero reference of LIFT-CAM (paper Sec. 3.3).

DeepLIFT (Shrikumar et al. 2017) assigns each input neuron a contribution C_{Δx_i Δo} to the change
of the output Δo = F^c(A) - F^c(r) relative to a reference r, with summation-to-delta (Eq. 4):
Σ_i C_{Δx_i Δo} = Δo. It is computed by one backward pass in which every nonlinearity y = g(x)
passes back the *multiplier* m = Δy / Δx instead of its derivative g'(x):

* Rescale rule (elementwise g: ReLU, ReLU6/hardtanh, sigmoid, tanh, SiLU, GELU, ...):
  m = (g(x) - g(x_ref)) / (x - x_ref), falling back to g'(x) where |x - x_ref| < EPS;
* max rule (max pooling): the window's output difference y - y_ref is split into
  (max(y, y_ref) - y_ref), routed to the argmax of the actual input, and (y - max(y, y_ref)), routed to
  the argmax of the reference input (the cross-maximum rule captum uses), then divided by Δx;
* linear operations (conv, linear, batch norm in eval mode, pooling by averaging, sums,
  concatenation, products with a held-fixed tensor) pass gradients unchanged, which are their
  exact multipliers.

The chain rule for multipliers then makes the gradient of the output with respect to the
activations the DeepLIFT multiplier, and C = m ∘ (A - r). The forward pass runs the actual input and
the reference as one batch [A; r] so that every nonlinearity sees its own reference value
(:func:`deeplift_tail`), or, when no input is held fixed, on A alone against reference values computed
once and stored (:func:`deeplift_tail_with_reference`).

This is a graph transformation of the tail built by :mod:`camlib.graph.split`: every activation is
one ``call_function`` node there (in-place, functional and reused ReLUs included), so no module hooks
are needed and nothing global is patched. Which rule a node gets comes from the one table of graph
operations, :mod:`camlib.graph.ops`. This is LIFT-CAM's reference backend
(:class:`DeepLiftRewrite`); the stored-reference and block-linear forms are fast backends
(:mod:`camlib.engine.fast`).
"""

from __future__ import annotations

import dataclasses
import functools

import torch
import torch.fx as fx
import torch.nn.functional as F

from camlib.engine.backends import Backend
from camlib.engine.quantities import DeepLift, Need, Problem
from camlib.graph import ops

EPS = 1e-7


class UnsupportedTailError(NotImplementedError):
    """The tail contains an operation DeepLIFT has no rule for here (e.g. a product of two
    activation-dependent tensors, as in squeeze-and-excitation blocks)."""


class _Rescale(torch.autograd.Function):
    """y = fn(x) on the batch [actual; reference]; backward passes the Rescale multipliers."""

    @staticmethod
    def forward(ctx, x, fn, args, kwargs):
        y = fn(x, *args, **kwargs)
        ctx.save_for_backward(x, y)
        ctx.fn, ctx.args, ctx.kwargs = fn, args, kwargs
        return y

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved_tensors
        multiplier = _rescale_multiplier(ctx, *x.chunk(2), *y.chunk(2))
        return grad * torch.cat([multiplier, multiplier]), None, None, None


def _rescale_multiplier(ctx, x_act, x_ref, y_act, y_ref) -> torch.Tensor:
    """Δy/Δx where |Δx| > EPS, else the derivative fn'(x_act) (``ctx`` holds fn, args, kwargs)."""
    dx, dy = x_act - x_ref, y_act - y_ref
    with torch.enable_grad():
        leaf = x_act.detach().requires_grad_(True)
        (derivative,) = torch.autograd.grad(ctx.fn(leaf, *ctx.args, **ctx.kwargs), leaf, torch.ones_like(leaf))
    far = dx.abs() > EPS
    return torch.where(far, dy / torch.where(far, dx, torch.ones_like(dx)), derivative)


def _unpool(values: torch.Tensor, indices: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Scatter-add pooled values back to the input positions given by max-pool indices."""
    out = torch.zeros_like(like).flatten(2)
    out.scatter_add_(2, indices.flatten(2), values.flatten(2))
    return out.view_as(like)


class _MaxPoolRule(torch.autograd.Function):
    """A max pooling on [actual; reference]; backward by DeepLIFT's max (cross-maximum) rule.
    ``pool``: x -> (y, indices) (:func:`_indexed_pool`)."""

    @staticmethod
    def forward(ctx, x, pool):
        y, indices = pool(x)
        ctx.save_for_backward(x, y, indices)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, y, indices = ctx.saved_tensors
        grad_in = _max_rule(grad.chunk(2)[0], *x.chunk(2), *y.chunk(2), *indices.chunk(2))
        return torch.cat([grad_in, grad_in]), None


def _max_rule(g, x_act, x_ref, y_act, y_ref, i_act, i_ref) -> torch.Tensor:
    """DeepLIFT's max rule: the multipliers of a max pooling's input, given the output's ``g``."""
    y_max = torch.maximum(y_act, y_ref)
    i_ref = i_ref.expand_as(i_act)
    delta_part = _unpool(g * (y_max - y_ref), i_act, x_act) + _unpool(g * (y_act - y_max), i_ref, x_act)
    dx = x_act - x_ref
    far = dx.abs() > EPS
    return torch.where(far, delta_part / torch.where(far, dx, torch.ones_like(dx)), _unpool(g, i_act, x_act))


_POOL_ARGS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")


def _pool_kwargs(args: tuple, kwargs: dict) -> dict:
    """F.max_pool2d's arguments as keywords, without return_indices, stride defaulting to the kernel."""
    kwargs = {**dict(zip(_POOL_ARGS, args)), **kwargs}
    kwargs.pop("return_indices", None)
    if kwargs.get("stride") is None:
        kwargs["stride"] = kwargs["kernel_size"]
    return kwargs


def _indexed_pool(fn, args: tuple, kwargs: dict):
    """x -> (y, indices) of the max pooling node ``fn(x, *args, **kwargs)`` (``fn`` one of
    :data:`camlib.graph.ops.MAXPOOL_FUNCTIONS`: windows given by kernel and stride, or adaptive)."""
    if fn is F.adaptive_max_pool2d:
        size = args[0] if args else kwargs["output_size"]
        return functools.partial(F.adaptive_max_pool2d, output_size=size, return_indices=True)
    return functools.partial(F.max_pool2d, **_pool_kwargs(args, kwargs), return_indices=True)


def _max_pool_rule(fn):
    def rule(x, *args, **kwargs):
        return _MaxPoolRule.apply(x, _indexed_pool(fn, args, kwargs))

    rule.__name__ = f"max_rule_{getattr(fn, '__name__', 'pool')}"
    return rule


# Max poolings handled by the max rule (function -> its DeepLIFT version).
MAXPOOL_RULES = {fn: _max_pool_rule(fn) for fn in ops.MAXPOOL_FUNCTIONS}


def _rescaled(fn):
    def rescaled(x, *args, **kwargs):
        return _Rescale.apply(x, fn, args, kwargs)

    rescaled.__name__ = f"rescaled_{getattr(fn, '__name__', 'fn')}"
    return rescaled


# Elementwise nonlinearities handled by the Rescale rule (function -> its DeepLIFT version).
RESCALE_FUNCTIONS = {fn: _rescaled(fn) for fn in ops.ELEMENTWISE_FUNCTIONS}


def deeplift_tail(tail: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``tail`` whose backward pass propagates DeepLIFT multipliers.

    Inputs must be the batch [actual; reference] concatenated along dim 0 (fixed inputs duplicated).
    Raises UnsupportedTailError when an activation-dependent operation has no rule.
    """
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    graph.output(graph.graph_copy(tail.graph, env))
    modules = dict(tail.named_modules())
    activations = next(n for n in graph.nodes if n.op == "placeholder")
    depends_set = {activations}
    for node in graph.nodes:
        if node.op in ("placeholder", "get_attr", "output"):
            continue
        if not any(a in depends_set for a in node.all_input_nodes):
            continue
        depends_set.add(node)
        elementwise = ops.elementwise_function(node)
        if elementwise is not None:
            node.op, node.target = "call_function", RESCALE_FUNCTIONS[elementwise]
        elif ops.is_max_pool(node):
            node.target = MAXPOOL_RULES[node.target]
        elif not ops.is_affine_node(node, modules, lambda a: isinstance(a, fx.Node) and a in depends_set):
            if ops.is_structural(node):
                continue
            raise UnsupportedTailError(
                f"LIFT-CAM cannot propagate DeepLIFT through {node.op} {node.target!r} "
                f"({node.name}) in the tail; choose a later layer or another method")
    gm = fx.GraphModule(tail, graph)
    gm.recompile()
    return gm


def deeplift_forward(dl_tail: fx.GraphModule, activations: torch.Tensor, reference: torch.Tensor, fixed: tuple):
    """The DeepLIFT tail on the batch [A; r] with autograd: (that input, its output F([A; r]))."""
    x = torch.cat([activations, reference.expand_as(activations)]).detach().requires_grad_(True)
    doubled = tuple(torch.cat([f, f]) for f in fixed)
    with torch.enable_grad():
        out = dl_tail(x, *doubled)
    return x, out


def contributions_from(x: torch.Tensor, out: torch.Tensor, activations: torch.Tensor, reference: torch.Tensor,
                       target: torch.Tensor):
    """Contributions C_{ΔA ΔF^c} (same shape as A) by one backward pass of a :func:`deeplift_forward`."""
    batch = activations.shape[0]
    (grad,) = torch.autograd.grad(out[:batch].gather(1, target[:, None]).sum(), x)
    return (grad[:batch] * (activations - reference)).detach()


def contributions(dl_tail: fx.GraphModule, activations: torch.Tensor, reference: torch.Tensor,
                  fixed: tuple, target: torch.Tensor):
    """DeepLIFT contributions C_{ΔA ΔF^c} of every activation neuron (same shape as A).

    Returns (contributions, logits F(A), reference logits F(r)); Σ contributions[b] equals
    F^c(A_b) - F^c(r_b) (summation-to-delta, Eq. 4 / Eq. 8) up to float rounding.
    """
    batch = activations.shape[0]
    x, out = deeplift_forward(dl_tail, activations, reference, fixed)
    contrib = contributions_from(x, out, activations, reference, target)
    return contrib, out[:batch].detach(), out[batch:].detach()


# -- The backend ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DeepLiftTail:
    """A split's tail rewritten by :func:`deeplift_tail` (built once per split)."""

    graph: fx.GraphModule


class DeepLiftRewrite(Backend):
    """LIFT-CAM's reference: the DeepLIFT tail on the batch [A; 0], fixed inputs duplicated; one
    forward pass (its first half gives F(A)) and one backward pass per target."""

    name = "deeplift-rewrite"
    provides = frozenset({Need.DEEPLIFT})
    reference = True

    def start(self, problem: Problem, needs: frozenset) -> "_BatchedPass":
        dl_tail = problem.split.memo(DeepLiftTail, lambda: DeepLiftTail(deeplift_tail(problem.split.tail))).graph
        x, out = deeplift_forward(dl_tail, problem.activations, torch.zeros_like(problem.activations[:1]),
                                  problem.fixed)
        return _BatchedPass(problem, x, out)


class _BatchedPass:
    def __init__(self, problem: Problem, x: torch.Tensor, out: torch.Tensor):
        self.problem, self.x, self.out = problem, x, out
        self.logits = out[:problem.batch].detach()

    def deeplift(self, target: torch.Tensor) -> DeepLift:
        batch = self.problem.batch
        selected = self.out[:batch].gather(1, target[:, None]).sum()
        (grad,) = torch.autograd.grad(selected, self.x)
        alpha = (grad[:batch] * self.problem.activations).sum(dim=(2, 3))  # C = m ∘ (A - 0), summed per map
        return DeepLift(alpha, self.out[:batch].detach(), self.out[batch:].detach())
