"""The one table of graph operations: what camlib knows about each node of a traced tail.

Every part of camlib that reads an fx graph asks this module, and only this module, what a node
does:

* :mod:`camlib.graph.split` rewrites activations to out-of-place canonical functions
  (:func:`canonical_activation`, :data:`INPLACE_FUNCTIONS`, :data:`INPLACE_METHODS`), makes head
  activations in place where safe (:data:`INPLACE_ACTIVATIONS`, :func:`is_linear_producer`) and flags
  linear tails (:func:`is_affine_node`);
* DeepLIFT picks its rule per node (:func:`elementwise_function`: the Rescale rule;
  :func:`is_max_pool`: the max rule; :func:`is_affine_node`: the gradient is the exact multiplier;
  :func:`is_structural`: ``getattr``/``getitem`` that carry no value);
* LRP picks its rule per node (:func:`is_rearrangement`: values moved, copied or selected, relevance
  follows them; :func:`maps_zero_to_zero`: an elementwise activation with g(0) = 0, relevance passes
  unchanged; :func:`is_affine_node` and :func:`is_max_pool`: the ε-rule);
* the coalition evaluators and the block-linear pass ask which nodes keep channels separate
  (:func:`is_channelwise`), which flatten maps into blocks (:func:`is_flatten`), where a clamp is
  (:func:`clamp_bounds`), and run nodes on values of their own (:func:`run_node`);
* everything reads ``get_attr`` values with :func:`attribute` and recognises timm's dynamically
  padded convolution with :func:`is_conv_same`.

Nothing here holds state: the tables are constants.
"""

from __future__ import annotations

import functools
import math
import operator
from typing import Callable

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

# --------------------------------------------------------------------------------------------
# Values and modules
# --------------------------------------------------------------------------------------------


def attribute(gm: fx.GraphModule, target: str):
    """The value a ``get_attr`` node of ``gm`` reads: the parameter, buffer or constant at the
    dotted path ``target``."""
    return functools.reduce(getattr, target.split("."), gm)


def is_conv_same(module: nn.Module) -> bool:
    """timm's ``Conv2dSame`` (TF "same" padding computed at run time: an affine convolution)."""
    try:
        from timm.layers import Conv2dSame
    except Exception:  # timm absent or changed
        return False
    return isinstance(module, Conv2dSame)


def run_node(node: fx.Node, modules: dict, gm: fx.GraphModule, args, kwargs):
    """Run one node of ``gm`` on arguments of the caller's choosing."""
    if node.op == "call_module":
        return modules[node.target](*args, **kwargs)
    if node.op == "call_function":
        return node.target(*args, **kwargs)
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    if node.op == "get_attr":
        return attribute(gm, node.target)
    raise ValueError(node.op)


# --------------------------------------------------------------------------------------------
# Activations: canonical, out-of-place functions
# --------------------------------------------------------------------------------------------


def canonical_activation(module: nn.Module):
    """(function, extra args, kwargs) equivalent to an activation module, or None."""
    table = {
        nn.ReLU: (F.relu, (), {}),
        nn.ReLU6: (F.hardtanh, (0.0, 6.0), {}),
        nn.Sigmoid: (torch.sigmoid, (), {}),
        nn.Tanh: (torch.tanh, (), {}),
        nn.SiLU: (F.silu, (), {}),
        nn.Hardswish: (F.hardswish, (), {}),
        nn.Hardsigmoid: (F.hardsigmoid, (), {}),
        nn.Mish: (F.mish, (), {}),
    }
    for cls, spec in table.items():
        if type(module) is cls:
            return spec
    if type(module) is nn.Hardtanh:
        return F.hardtanh, (module.min_val, module.max_val), {}
    if type(module) is nn.LeakyReLU:
        return F.leaky_relu, (module.negative_slope,), {}
    if type(module) is nn.ELU:
        return F.elu, (module.alpha,), {}
    if type(module) is nn.GELU:
        return F.gelu, (), {"approximate": module.approximate}
    if type(module) is nn.Softplus:
        return F.softplus, (module.beta, module.threshold), {}
    return None


#: In-place functions and methods -> their out-of-place forms.
INPLACE_FUNCTIONS = {
    torch.relu_: torch.relu,
    F.relu_: F.relu,
    F.hardtanh_: F.hardtanh,
    F.leaky_relu_: F.leaky_relu,
    F.elu_: F.elu,
    operator.iadd: operator.add,
    operator.imul: operator.mul,
}
INPLACE_METHODS = {"relu_": "relu", "add_": "add", "mul_": "mul", "clamp_": "clamp", "sigmoid_": "sigmoid"}

#: Activations that may overwrite their input, with the position of each one's ``inplace`` argument.
INPLACE_ACTIVATIONS = {F.relu: 1, F.hardtanh: 3, F.leaky_relu: 2, F.elu: 2, F.silu: 1, F.hardswish: 1,
                       F.hardsigmoid: 1, F.mish: 1}
# Producers whose backward does not need their own output (so that an in-place activation after
# them stays correct under autograd too).
_LINEAR_PRODUCERS = (nn.Conv2d, nn.Linear, nn.BatchNorm2d)
_LINEAR_FUNCTIONS = (F.conv2d, F.linear, F.batch_norm, operator.add, torch.add)


def is_linear_producer(node: fx.Node, modules: dict) -> bool:
    """A convolution, linear layer, batch norm or sum: its backward does not read its output."""
    return (node.op == "call_module" and type(modules[node.target]) in _LINEAR_PRODUCERS) or \
        (node.op == "call_function" and node.target in _LINEAR_FUNCTIONS)


# --------------------------------------------------------------------------------------------
# Elementwise nonlinearities (the Rescale rule) and max pooling (the max rule)
# --------------------------------------------------------------------------------------------

#: Elementwise nonlinearities y = g(x): DeepLIFT passes back Δy/Δx through them (Rescale rule).
ELEMENTWISE_FUNCTIONS = (F.relu, torch.relu, F.hardtanh, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.silu,
                         F.gelu, F.leaky_relu, F.elu, F.hardswish, F.hardsigmoid, F.softplus, F.mish, torch.clamp)
#: Tensor methods that are elementwise nonlinearities -> the function they call.
ELEMENTWISE_METHODS = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "clamp": torch.clamp}
#: Max poolings (DeepLIFT's max rule); :mod:`camlib.graph.split` turns the pooling modules into these.
MAXPOOL_FUNCTIONS = (F.max_pool2d, torch.max_pool2d, F.adaptive_max_pool2d)


def elementwise_function(node: fx.Node) -> Callable | None:
    """The elementwise nonlinearity a node applies to its first argument (a function of
    :data:`ELEMENTWISE_FUNCTIONS`), or None."""
    if node.op == "call_function" and node.target in ELEMENTWISE_FUNCTIONS:
        return node.target
    if node.op == "call_method" and node.target in ELEMENTWISE_METHODS:
        return ELEMENTWISE_METHODS[node.target]
    return None


def is_max_pool(node: fx.Node) -> bool:
    """Max pooling as a function, by window or adaptive (:mod:`camlib.graph.split` turns
    ``nn.MaxPool2d`` and ``nn.AdaptiveMaxPool2d`` into one)."""
    return node.op == "call_function" and node.target in MAXPOOL_FUNCTIONS


def is_structural(node: fx.Node) -> bool:
    """``getattr`` / ``getitem``: reading a field of a value (shapes, tuple entries), no arithmetic."""
    return node.op == "call_function" and node.target in (getattr, operator.getitem)


def clamp_bounds(node: fx.Node) -> tuple[float, float] | None:
    """(lo, hi) when ``node`` is clamp(x, lo, hi) of its first argument with constant bounds
    (ReLU, ReLU6 as hardtanh, hardtanh, clamp); else None."""
    def number(value, default):
        value = default if value is None else value
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    args, kwargs = node.args, node.kwargs
    if node.op == "call_function" and node.target in (F.relu, torch.relu) or \
            node.op == "call_method" and node.target == "relu":
        return 0.0, math.inf
    if node.op == "call_function" and node.target is F.hardtanh:
        lo = number(args[1] if len(args) > 1 else kwargs.get("min_val"), -1.0)
        hi = number(args[2] if len(args) > 2 else kwargs.get("max_val"), 1.0)
    elif node.op == "call_function" and node.target is torch.clamp or \
            node.op == "call_method" and node.target == "clamp":
        lo = number(args[1] if len(args) > 1 else kwargs.get("min"), -math.inf)
        hi = number(args[2] if len(args) > 2 else kwargs.get("max"), math.inf)
    else:
        return None
    return None if lo is None or hi is None or lo > hi else (lo, hi)


# --------------------------------------------------------------------------------------------
# Affine operations
# --------------------------------------------------------------------------------------------

# Ops through which the tail is affine in the activations.
_AFFINE_MODULES = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d, nn.AdaptiveAvgPool2d,
                   nn.AvgPool2d, nn.Flatten, nn.Identity, nn.Dropout)
_AFFINE_FUNCTIONS = {operator.add, operator.sub, operator.neg, torch.add, torch.sub, torch.flatten, torch.sum,
                     torch.cat, torch.mean, F.adaptive_avg_pool2d, F.avg_pool2d, F.linear, F.conv2d,
                     F.batch_norm, F.pad, operator.getitem}
_AFFINE_METHODS = {"view", "reshape", "flatten", "mean", "sum", "contiguous", "add", "sub", "squeeze",
                   "unsqueeze", "permute", "transpose", "size", "dim", "repeat", "expand"}


def is_affine_node(node: fx.Node, modules: dict[str, nn.Module], depends: Callable[[object], bool]) -> bool:
    """Whether ``node`` is affine in its activation-dependent inputs (given ``depends(arg)``)."""
    if node.op == "call_module":
        module = modules[node.target]
        return type(module) in _AFFINE_MODULES or is_conv_same(module)
    if node.op == "call_function":
        if node.target in _AFFINE_FUNCTIONS:
            return True
        if node.target in (operator.mul, torch.mul, operator.truediv):
            # Product with a constant (e.g. a fixed question embedding) is linear; of two
            # activation-dependent values it is not.
            return sum(depends(a) for a in node.args) <= 1 and not (
                node.target is operator.truediv and depends(node.args[1]))
        return False
    if node.op == "call_method":
        if node.target in _AFFINE_METHODS:
            return True
        if node.target == "mul":
            return sum(depends(a) for a in node.args) <= 1
    return False


# --------------------------------------------------------------------------------------------
# Layer-wise relevance propagation: rearrangements and activations that map 0 to 0
# --------------------------------------------------------------------------------------------

# Operations that only move, copy or select values (no arithmetic): relevance follows the values
# (their ordinary backward pass: a copy's relevance is summed back, a dropped value gets none).
_REARRANGING_MODULES = (nn.Flatten, nn.Identity)
_REARRANGING_FUNCTIONS = {torch.flatten, torch.reshape, torch.cat, torch.squeeze, torch.unsqueeze, torch.permute,
                          torch.transpose, operator.getitem, F.pad}
_REARRANGING_METHODS = {"view", "reshape", "flatten", "contiguous", "squeeze", "unsqueeze", "permute", "transpose",
                        "repeat", "expand", "size", "dim"}

#: Elementwise activations with g(0) = 0 for every setting of their parameters (hardtanh and clamp:
#: only when their bounds contain 0, :func:`maps_zero_to_zero`). LRP passes relevance through them
#: unchanged; sigmoid, hard sigmoid and softplus (g(0) ≠ 0) are not among them.
ZERO_AT_ZERO_FUNCTIONS = (F.relu, torch.relu, torch.tanh, F.tanh, F.silu, F.gelu, F.leaky_relu, F.elu, F.hardswish,
                          F.mish)


def is_rearrangement(node: fx.Node, modules: dict) -> bool:
    """Whether ``node`` only moves, copies or selects values of its inputs: flatten, reshape and
    views, concatenation, indexing, padding (the padded values are constants), shape queries."""
    if node.op == "call_module":
        return type(modules[node.target]) in _REARRANGING_MODULES
    if node.op == "call_function":
        return node.target in _REARRANGING_FUNCTIONS
    return node.op == "call_method" and node.target in _REARRANGING_METHODS


def maps_zero_to_zero(node: fx.Node) -> bool:
    """Whether ``node`` is an elementwise activation g with g(0) = 0 (ReLU, ReLU6 as hardtanh(0, 6),
    tanh, SiLU, GELU, leaky ReLU, ELU, hard swish, Mish, a clamp whose bounds contain 0)."""
    fn = elementwise_function(node)
    if fn in (F.hardtanh, torch.clamp):
        bounds = clamp_bounds(node)
        return bounds is not None and bounds[0] <= 0.0 <= bounds[1]
    return fn in ZERO_AT_ZERO_FUNCTIONS


# --------------------------------------------------------------------------------------------
# Channels: which operations keep map k in channel k
# --------------------------------------------------------------------------------------------

_CHANNELWISE_FUNCTIONS = {*ELEMENTWISE_FUNCTIONS, *MAXPOOL_FUNCTIONS, F.avg_pool2d, F.adaptive_avg_pool2d,
                          F.batch_norm}
_CHANNELWISE_METHODS = {*ELEMENTWISE_METHODS, "contiguous"}
_ARITHMETIC = {operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.sub, torch.mul}

DEPENDENT = object()  # what ``value_of`` of :func:`is_channelwise` gives for a map-dependent input


def is_zero_padded_conv(module: nn.Module) -> bool:
    """An ``nn.Conv2d`` with zero padding (whose convolution of a sum is the sum of convolutions)."""
    return isinstance(module, nn.Conv2d) and module.padding_mode == "zeros"


def is_flatten(node: fx.Node, modules: dict) -> bool:
    """Whether ``node`` flattens all dimensions from 1 on (channel k -> a contiguous block)."""
    if node.op == "call_module" and type(modules[node.target]) is nn.Flatten:
        return modules[node.target].start_dim == 1 and modules[node.target].end_dim == -1
    if (node.op == "call_function" and node.target is torch.flatten) or \
            (node.op == "call_method" and node.target == "flatten"):
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        return start == 1 and len(node.args) <= 2 and "end_dim" not in node.kwargs
    return False


def is_channelwise(node: fx.Node, modules: dict, n_maps: int, value_of: Callable[[fx.Node], object]) -> bool:
    """Whether channel k of ``node``'s output depends only on channel k of its map-dependent inputs.

    ``value_of(a)``: the value of an input that does not depend on the maps, else ``DEPENDENT``.
    """
    if node.op == "call_function" and node.target in _CHANNELWISE_FUNCTIONS:
        return all(value_of(a) is not DEPENDENT for a in node.all_input_nodes[1:])
    if node.op == "call_method" and node.target in _CHANNELWISE_METHODS:
        return len(node.all_input_nodes) == 1
    if node.op == "call_method" and node.target == "mean" or \
            node.op == "call_function" and node.target is torch.mean:
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        dims = (dims,) if isinstance(dims, int) else dims
        return dims is not None and all(d in (2, 3, -1, -2) for d in dims) and \
            (node.kwargs.get("keepdim", False) or (len(node.args) > 2 and node.args[2]))
    if node.op == "call_module":
        module = modules[node.target]
        if type(module) in (nn.BatchNorm2d, nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.MaxPool2d,
                            nn.AdaptiveMaxPool2d):
            return True
        if (is_zero_padded_conv(module) or is_conv_same(module)) and \
                module.groups == module.in_channels == module.out_channels == n_maps:
            return True  # depthwise convolution
        return False
    if node.op == "call_function" and node.target in _ARITHMETIC:
        for a in node.args:
            if isinstance(a, fx.Node) and value_of(a) is not DEPENDENT:
                v = value_of(a)
                if isinstance(v, torch.Tensor) and v.dim() > 0 and \
                        not (v.shape[0] == 1 and (v.dim() < 2 or v.shape[1] in (1, n_maps))
                             and all(s == 1 for s in v.shape[2:])):
                    return False
        return True
    return False
