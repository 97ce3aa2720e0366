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

This is a graph transformation of the tail built by :mod:`camlib.split`: every activation is one
``call_function`` node there (in-place, functional and reused ReLUs included), so no module hooks
are needed and nothing global is patched.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn.functional as F

from camlib.split import is_affine_node

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
    """F.max_pool2d on [actual; reference]; backward by DeepLIFT's max (cross-maximum) rule."""

    @staticmethod
    def forward(ctx, x, kwargs):
        y, indices = F.max_pool2d(x, **kwargs, return_indices=True)
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


def _max_pool(x, *args, **kwargs):
    return _MaxPoolRule.apply(x, _pool_kwargs(args, kwargs))


def _rescaled(fn):
    def rescaled(x, *args, **kwargs):
        return _Rescale.apply(x, fn, args, kwargs)

    rescaled.__name__ = f"rescaled_{getattr(fn, '__name__', 'fn')}"
    return rescaled


# Elementwise nonlinearities handled by the Rescale rule (function -> its DeepLIFT version).
RESCALE_FUNCTIONS = {fn: _rescaled(fn) for fn in (
    F.relu, torch.relu, F.hardtanh, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.silu, F.gelu,
    F.leaky_relu, F.elu, F.hardswish, F.hardsigmoid, F.softplus, F.mish, torch.clamp)}
RESCALE_METHODS = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "clamp": torch.clamp}
MAXPOOL_FUNCTIONS = (F.max_pool2d, torch.max_pool2d)


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
        if node.op == "call_function" and node.target in RESCALE_FUNCTIONS:
            node.target = RESCALE_FUNCTIONS[node.target]
        elif node.op == "call_method" and node.target in RESCALE_METHODS:
            node.op, node.target = "call_function", RESCALE_FUNCTIONS[RESCALE_METHODS[node.target]]
        elif node.op == "call_function" and node.target in MAXPOOL_FUNCTIONS:
            node.target = _max_pool
        elif not is_affine_node(node, modules, lambda a: isinstance(a, fx.Node) and a in depends_set):
            if node.op == "call_function" and node.target in (getattr, operator.getitem):
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


# -- The reference computed once --------------------------------------------------------------------
#
# For a classifier the reference r = 0 at layer l gives the same values at every node of the tail for
# every image: F(0) and the input of each nonlinearity can be computed once per (model, layer). The
# tail then runs on the actual activations alone, each nonlinearity reading its stored reference
# input, which halves the cost of the fully connected layers of a VGG-style tail (a two-row matrix
# product costs two one-row products on a CPU). The multipliers are the same as above.


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
    """F.max_pool2d on the actual batch; backward by the max rule against the stored x_ref."""

    @staticmethod
    def forward(ctx, x, x_ref, kwargs):
        y, indices = F.max_pool2d(x, **kwargs, return_indices=True)
        y_ref, i_ref = F.max_pool2d(x_ref, **kwargs, return_indices=True)
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


def _max_pool_against(x, x_ref, *args, **kwargs):
    return _MaxPoolAgainst.apply(x, x_ref, _pool_kwargs(args, kwargs))


def deeplift_tail_with_reference(tail: fx.GraphModule, reference: torch.Tensor) -> tuple[fx.GraphModule, torch.Tensor]:
    """(a DeepLIFT tail for the actual batch alone, F(r) (1, C)) for a tail without fixed inputs.

    The reference ``reference`` (1, K, h, w) is run once; each nonlinearity of :func:`deeplift_tail`
    gets its reference input as a stored buffer. Same multipliers, hence the same contributions, as
    the batched [A; r] form.
    """
    dl = deeplift_tail(tail)
    if sum(1 for n in dl.graph.nodes if n.op == "placeholder") != 1:
        raise ValueError("the stored reference needs a tail without fixed inputs")
    rules = {n for n in dl.graph.nodes if n.op == "call_function" and (n.target in _AGAINST or n.target is _max_pool)}
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
        node.target = _max_pool_against if node.target is _max_pool else _AGAINST[node.target]
        node.args = (node.args[0], buffer, *node.args[1:])
    dl.recompile()
    return dl, ref_logits.detach()
