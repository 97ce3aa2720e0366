"""SHAP values of activation maps (paper Sec. 3.2): the coalition game, its exact solution by
enumeration, and fast evaluation of the tail on many coalitions.

The game: a coalition a' ∈ {0,1}^K keeps the maps A_k with a'_k = 1 and zeroes the others
(h_A, the reference of absence is 0); its value is F^c(h_A(a')). SHAP values solve Eq. (6):

    α_k = Σ_{a' ∌ k} |a'|! (K - |a'| - 1)! / K! · [F^c(h_A(a' ∪ k)) - F^c(h_A(a'))]

``exact_shapley`` enumerates all 2^K coalitions (a test oracle for K ≤ ~12); SHAP-CAM (Algorithm 1)
samples orderings π and needs F^c on the K + 1 prefixes of each π.

Evaluating those prefixes naively costs K + 1 tail passes per ordering. ``FastCoalitions`` instead
interprets the tail graph once per image, tracking how each value depends on the coalition:

* ``Sep``: channel k of the value is v1_k when map k is present and v0_k otherwise. The activations
  start so (v1 = A, v0 = 0) and stay so through channel-wise operations (activations, batch norm,
  max/average pooling, depthwise convolutions, sums of such values), because masking whole channels
  commutes with them.
* ``Add``: the value is base + Σ_k a'_k D_k. The first channel-mixing linear operation (a convolution,
  a fully connected layer after flattening) turns a ``Sep`` value into this form at the cost of one
  pass (a grouped convolution or an einsum over per-map contributions), and every further affine
  operation keeps it (applied to base and to the D_k).
* ``Opaque``: anything after a nonlinearity of an ``Add`` value; evaluated per coalition, on the
  boundary values materialised in one shot (where() for Sep, cumulative sums along the ordering for
  Add) and, when the tail ends with a fully connected layer, with only its target row.
  When that remainder is an elementwise clamp (ReLU, ReLU6, hardtanh) of the one ``Add`` value and
  then linear operations only, it is the readout c + Σ_m V_m clamp(S[m], lo, hi), and on the CPU
  the prefixes of many orderings go through one fused kernel (:mod:`camlib.clampsum`).

A linear tail is ``Add`` up to the logits, so F^c on any coalition is base_c + Σ a'_k D_k,c without
any tail pass, and every ordering gives the exact SHAP values D_k,c. ``NaiveCoalitions`` evaluates
the plain tail on masked activations; tests check both give the same values.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import operator
from typing import Callable

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from camlib import clampsum
from camlib.blockdot import block_dots
from camlib.deeplift import MAXPOOL_FUNCTIONS, RESCALE_FUNCTIONS, RESCALE_METHODS
from camlib.split import attribute, is_affine_node

# Largest Add representation (numel of D) kept before falling back to per-coalition evaluation.
MAX_ADD_NUMEL = 64 * 1024 * 1024
# Elements of materialised prefixes per chunk (~4 MB in float32: the passes over them are memory bound).
PREFIX_CHUNK_NUMEL = 1024 * 1024


# ------------------------------------------------------------------------------------------------
# Orderings and the exact oracle
# ------------------------------------------------------------------------------------------------


def sample_permutations(n: int, count: int, seed: int) -> torch.Tensor:
    """``count`` uniformly random orderings of n maps, (count, n), reproducible from ``seed``
    on any device (drawn on the CPU)."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.stack([torch.randperm(n, generator=generator) for _ in range(count)])


def prefix_masks(permutation: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """Coalitions of the prefixes j = start..stop-1 of an ordering: mask[j, k] = (rank of k) < j."""
    n = permutation.numel()
    stop = n + 1 if stop is None else stop
    rank = torch.empty_like(permutation)
    rank[permutation] = torch.arange(n, device=permutation.device)
    return rank[None, :] < torch.arange(start, stop, device=permutation.device)[:, None]


def exact_shapley(values: Callable[[torch.Tensor], torch.Tensor], n: int) -> torch.Tensor:
    """Exact Shapley values (Eq. 6) by enumerating all 2^n coalitions; ``values(masks (m, n) bool)``
    returns the game's value of each coalition. Exponential: for tests with n ≤ ~12."""
    masks = torch.tensor(list(itertools.product([False, True], repeat=n)))
    v = values(masks).double()
    index = {tuple(m.tolist()): i for i, m in enumerate(masks)}
    phi = torch.zeros(n, dtype=torch.float64)
    for i, m in enumerate(masks):
        size = int(m.sum())
        for k in range(n):
            if m[k]:
                continue
            with_k = m.clone()
            with_k[k] = True
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            phi[k] += weight * (v[index[tuple(with_k.tolist())]] - v[i])
    return phi


# ------------------------------------------------------------------------------------------------
# Coalition evaluators
# ------------------------------------------------------------------------------------------------


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


@dataclasses.dataclass
class Fixed:
    value: object
    batched: bool = False  # has the batch dimension (derived from a fixed input), unlike a parameter


@dataclasses.dataclass
class Sep:
    v1: torch.Tensor  # (1, K, ...): channel k when map k is present
    v0: torch.Tensor  # (1, K, ...): channel k when map k is absent


@dataclasses.dataclass
class SepFlat:
    sep: Sep  # flattened from dim 1: channel k -> a contiguous block of features


@dataclasses.dataclass
class Add:
    base: torch.Tensor  # (1, ...): value of the empty coalition
    d: torch.Tensor  # (K, ...): contribution of each map


class Opaque:
    pass


OPAQUE = Opaque()

_CHANNELWISE_FUNCTIONS = {*RESCALE_FUNCTIONS, *MAXPOOL_FUNCTIONS, F.avg_pool2d, F.adaptive_avg_pool2d,
                          F.adaptive_max_pool2d, F.batch_norm}
_CHANNELWISE_METHODS = {*RESCALE_METHODS, "contiguous"}
_ARITHMETIC = {operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.sub, torch.mul}


def _conv_groups_ok(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.padding_mode == "zeros"


def _is_conv_same(module: nn.Module) -> bool:
    try:
        from timm.layers import Conv2dSame
    except Exception:
        return False
    return isinstance(module, Conv2dSame)


def _run(node: fx.Node, modules: dict, gm: fx.GraphModule, args, kwargs):
    if node.op == "call_module":
        return modules[node.target](*args, **kwargs)
    if node.op == "call_function":
        return node.target(*args, **kwargs)
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    if node.op == "get_attr":
        return attribute(gm, node.target)
    raise ValueError(node.op)


DEPENDENT = object()  # what ``value_of`` of :func:`is_channelwise` gives for a map-dependent input


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
        if (_conv_groups_ok(module) or _is_conv_same(module)) and \
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


class FastCoalitions:
    """F^c(h_A(a')) for one image by the Sep / Add / Opaque interpretation of the tail (see module
    docstring). Same interface as :class:`NaiveCoalitions`."""

    def __init__(self, tail: fx.GraphModule, activations: torch.Tensor, fixed: tuple, target: int,
                 batch_size: int = 64, kernel: bool | None = None):
        self.tail, self.target, self.batch_size = tail, target, batch_size
        self.n = activations.shape[1]
        self.device = activations.device
        # Prefix sums: in-place running adds in cache-sized chunks on the CPU, cumsum elsewhere.
        self.cumulative = self.device.type != "cpu"
        self.modules = dict(tail.named_modules())
        with torch.inference_mode():
            self.env = self._interpret(activations, fixed)
            self._build_opaque_graph()
        # The clamp readout (module docstring), for the fused CPU kernel; ``kernel``: None = when
        # possible, False = never (the tensor path), True = required.
        usable = kernel is not False and self.device.type == "cpu" and clampsum.available()
        self.readout = self._clamp_readout() if usable else None
        if kernel and self.readout is None:
            raise ValueError("the fused clamp-readout kernel does not apply to this tail or device "
                             "(or numba is not installed)")

    # -- interpretation ---------------------------------------------------------------------------

    def _interpret(self, activations: torch.Tensor, fixed: tuple) -> dict:
        env: dict[fx.Node, object] = {}
        placeholders = [n for n in self.tail.graph.nodes if n.op == "placeholder"]
        env[placeholders[0]] = Sep(activations, torch.zeros_like(activations))
        for node, value in zip(placeholders[1:], fixed):
            env[node] = Fixed(value, batched=True)
        for node in self.tail.graph.nodes:
            if node.op in ("placeholder", "output"):
                continue
            env[node] = self._value(node, env)
        return env

    def _value(self, node: fx.Node, env: dict):
        inputs = [env[a] for a in node.all_input_nodes]
        if all(isinstance(v, Fixed) for v in inputs):
            args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda a: env[a].value)
            return Fixed(_run(node, self.modules, self.tail, args, kwargs), any(v.batched for v in inputs))
        if any(isinstance(v, Opaque) for v in inputs) or "tensor_meta" not in node.meta:
            return OPAQUE
        dependent = [v for v in inputs if not isinstance(v, Fixed)]
        if all(isinstance(v, Sep) for v in dependent):
            if is_channelwise(node, self.modules, self.n,
                              lambda a: env[a].value if isinstance(env[a], Fixed) else DEPENDENT):
                return self._apply_sep(node, env)
            if node.op == "call_module" and _conv_groups_ok(self.modules[node.target]) \
                    and self.modules[node.target].groups == 1 and len(node.all_input_nodes) == 1:
                return self._conv_of_sep(node, env[node.all_input_nodes[0]])
            if is_flatten(node, self.modules):
                return SepFlat(env[node.all_input_nodes[0]])
            return OPAQUE
        if all(isinstance(v, SepFlat) for v in dependent) and len(node.all_input_nodes) == 1 \
                and node.op == "call_module" and type(self.modules[node.target]) is nn.Linear:
            return self._linear_of_sepflat(self.modules[node.target], env[node.all_input_nodes[0]].sep)
        if all(isinstance(v, Add) for v in dependent) and self._affine(node, env):
            shape = node.meta["tensor_meta"].shape
            if math.prod(shape[1:]) * self.n > MAX_ADD_NUMEL:
                return OPAQUE
            base_args = fx.node.map_arg((node.args, node.kwargs), lambda a: self._pick(env[a], "base"))
            d_args = fx.node.map_arg((node.args, node.kwargs), lambda a: self._pick(env[a], "d"))
            zero_args = fx.node.map_arg((node.args, node.kwargs), lambda a: self._pick(env[a], "zero"))
            base = _run(node, self.modules, self.tail, *base_args)
            d = _run(node, self.modules, self.tail, *d_args) - _run(node, self.modules, self.tail, *zero_args)
            return Add(base, d)
        return OPAQUE

    @staticmethod
    def _pick(value, part: str):
        if isinstance(value, Fixed):
            return value.value
        if part == "base":
            return value.base
        if part == "d":
            return value.d
        return torch.zeros_like(value.d[:1])

    def _affine(self, node: fx.Node, env: dict) -> bool:
        return is_affine_node(node, self.modules, lambda a: isinstance(a, fx.Node) and not isinstance(env[a], Fixed))

    def _apply_sep(self, node: fx.Node, env: dict) -> Sep:
        out = []
        for part in ("v1", "v0"):
            args, kwargs = fx.node.map_arg(
                (node.args, node.kwargs),
                lambda a: env[a].value if isinstance(env[a], Fixed) else getattr(env[a], part))
            out.append(_run(node, self.modules, self.tail, args, kwargs))
        return Sep(*out)

    def _conv_of_sep(self, node: fx.Node, sep: Sep) -> Add:
        """A convolution of a Sep value: base = conv(v0), D_k = conv of (v1 - v0) on channel k alone,
        for all k in one grouped convolution (groups = K, one input channel each)."""
        module = self.modules[node.target]
        base = module(sep.v0)
        delta = sep.v1 - sep.v0
        weight = module.weight  # (O, K, kh, kw)
        out_channels = weight.shape[0]
        grouped = weight.transpose(0, 1).reshape(self.n * out_channels, 1, *weight.shape[2:])
        if _is_conv_same(module):
            from timm.layers.padding import pad_same
            delta = pad_same(delta, module.kernel_size, module.stride, module.dilation)
            padding = 0
        else:
            padding = module.padding
        d = F.conv2d(delta, grouped, None, module.stride, padding, module.dilation, groups=self.n)
        return Add(base, d.view(self.n, out_channels, *d.shape[2:]))

    def _linear_of_sepflat(self, module: nn.Linear, sep: Sep) -> Add:
        """A fully connected layer of a flattened Sep value: D_k = W[:, block k] · Δ_k, in one read
        of W (:func:`camlib.blockdot.block_dots`)."""
        base = module(sep.v0.flatten(1))
        delta = (sep.v1 - sep.v0).reshape(1, self.n, -1)
        return Add(base, block_dots(module.weight, delta)[0].contiguous())

    # -- the opaque remainder -----------------------------------------------------------------------

    def _build_opaque_graph(self) -> None:
        output = next(n for n in self.tail.graph.nodes if n.op == "output")
        result = output.args[0]
        self.final = self.env[result]
        self.head_row = None
        if not isinstance(self.final, Opaque):
            return
        # Of a final fully connected layer only the target row is needed.
        last = result
        if result.op == "call_module" and type(self.modules[result.target]) is nn.Linear \
                and isinstance(self.env[result.args[0]], Opaque):
            module = self.modules[result.target]
            bias = module.bias[self.target] if module.bias is not None else torch.zeros((), device=self.device)
            self.head_row = (module.weight[self.target], bias)
            last = result.args[0]
        graph = fx.Graph()
        mapping: dict[fx.Node, fx.Node] = {}
        self.boundary: list[fx.Node] = []
        for node in self.tail.graph.nodes:
            if node.op in ("placeholder", "output") or not isinstance(self.env[node], Opaque):
                continue
            for a in node.all_input_nodes:
                if a not in mapping:
                    mapping[a] = graph.placeholder(f"boundary_{len(self.boundary)}")
                    self.boundary.append(a)
            mapping[node] = graph.node_copy(node, lambda a: mapping[a])
            if node is last:
                break
        graph.output(mapping[last])
        self.opaque = fx.GraphModule(self.tail, graph)

    def _clamp_readout(self):
        """(lo, hi, V, c) when the opaque remainder is c + Σ V ⊙ clamp(S, lo, hi) of the one Add
        boundary S and its target value is linear after the clamp; else None."""
        if not isinstance(self.final, Opaque) or len(self.boundary) != 1 \
                or not isinstance(self.env[self.boundary[0]], Add):
            return None
        nodes = [n for n in self.opaque.graph.nodes if n.op not in ("placeholder", "output")]
        placeholder = next(n for n in self.opaque.graph.nodes if n.op == "placeholder")
        if len(placeholder.users) != 1:
            return None
        clamp = next(iter(placeholder.users))
        bounds = _clamp_bounds(clamp)
        modules = dict(self.opaque.named_modules())
        rest = [n for n in nodes if n is not clamp]
        if bounds is None or clamp.args[0] is not placeholder or not all(
                n.op == "get_attr" or is_affine_node(n, modules, lambda a: isinstance(a, fx.Node)) for n in rest):
            return None
        # The linear remainder after the clamp, as a graph of its own; V = its gradient, c = its value at 0.
        graph = fx.Graph()
        mapping = {clamp: graph.placeholder("clamped")}
        for node in rest:
            mapping[node] = graph.node_copy(node, lambda a: mapping[a])
        graph.output(mapping[next(n for n in self.opaque.graph.nodes if n.op == "output").args[0]])
        remainder = fx.GraphModule(self.opaque, graph)
        base = self.env[self.boundary[0]].base
        with torch.inference_mode(False), torch.enable_grad():
            x = torch.zeros(base.shape, dtype=base.dtype, device=base.device, requires_grad=True)
            out = remainder(x)
            if self.head_row is not None:
                weight, bias = self.head_row
                value = out @ weight.clone() + bias.clone()
            else:
                value = out[:, self.target]
            (grad,) = torch.autograd.grad(value.sum(), x)
        return bounds[0], bounds[1], grad.detach().reshape(-1), float(value.detach().sum())

    def _materialize(self, value, masks: torch.Tensor, permutation=None, start=0, carry=None):
        """A boundary value on a batch of coalitions."""
        m = masks.shape[0]
        if isinstance(value, Fixed):
            v = value.value
            if value.batched and isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == 1:
                return v.expand(m, *v.shape[1:])
            return v
        if isinstance(value, SepFlat):
            return self._materialize(value.sep, masks).flatten(1)
        if isinstance(value, Sep):
            shape = (m, self.n) + (1,) * (value.v1.dim() - 2)
            return torch.where(masks.view(shape), value.v1, value.v0)
        if isinstance(value, Add):
            return value.base + (masks.to(value.d.dtype) @ value.d.flatten(1)).view(m, *value.d.shape[1:])
        raise TypeError(value)

    def _finish(self, boundary_values) -> torch.Tensor:
        out = self.opaque(*boundary_values)
        if self.head_row is not None:
            weight, bias = self.head_row
            return out @ weight + bias
        return out[:, self.target]

    @torch.inference_mode()
    def values(self, masks: torch.Tensor) -> torch.Tensor:
        masks = masks.to(self.device)
        if isinstance(self.final, Add):
            return self.final.base[0, self.target] + masks.to(self.final.d.dtype) @ self.final.d[:, self.target]
        out = []
        for start in range(0, masks.shape[0], self.batch_size):
            chunk = masks[start:start + self.batch_size]
            out.append(self._finish([self._materialize(self.env[b], chunk) for b in self.boundary]))
        return torch.cat(out)

    @torch.inference_mode()
    def prefix_values(self, permutation: torch.Tensor) -> torch.Tensor:
        """F^c on the K + 1 prefixes of an ordering; Add boundaries by running sums along it."""
        permutation = permutation.to(self.device)
        if self.readout is not None:
            return self.prefix_values_many(permutation[None])[0]
        if isinstance(self.final, Add):  # in float64: the differences of prefixes are the D_k
            steps = self.final.d[permutation, self.target].double()
            base = self.final.base[0, self.target].double()
            return torch.cat([base.view(1), base + torch.cumsum(steps, 0)])
        # Chunks of prefixes sized to stay in cache (these passes are memory bound).
        width = max(math.prod(self.env[b].base.shape[1:]) for b in self.boundary
                    if isinstance(self.env[b], Add)) if self._has_add_boundary else 1
        rows = self.batch_size if self.cumulative else max(1, min(self.batch_size, PREFIX_CHUNK_NUMEL // width))
        out, running = [], {}
        for start in range(0, self.n + 1, rows):
            stop = min(start + rows, self.n + 1)
            masks = prefix_masks(permutation, start, stop)
            values = [self._prefix_sums(self.env[b], permutation, start, stop, running, b, self.cumulative)
                      if isinstance(self.env[b], Add) else self._materialize(self.env[b], masks)
                      for b in self.boundary]
            out.append(self._finish(values))
        return torch.cat(out)

    @torch.inference_mode()
    def prefix_values_many(self, permutations: torch.Tensor) -> torch.Tensor:
        """F^c on the K + 1 prefixes of each of P orderings: (P, K + 1). The clamp readout on the
        CPU takes all P orderings in one fused pass (each block of D read once for all of them)."""
        if self.readout is None:
            return torch.stack([self.prefix_values(p) for p in permutations])
        lo, hi, weight, constant = self.readout
        add = self.env[self.boundary[0]]
        sums = clampsum.prefix_readout(add.base.reshape(-1), add.d.reshape(self.n, -1),
                                       permutations.cpu(), weight, lo, hi)
        return (sums + constant).to(add.base.dtype)

    @property
    def _has_add_boundary(self) -> bool:
        return any(isinstance(self.env[b], Add) for b in self.boundary)

    @staticmethod
    def _prefix_sums(value: Add, permutation, start, stop, running: dict, key, cumulative: bool) -> torch.Tensor:
        """base + Σ_{i<j} D_{π(i)} for the prefixes j = start..stop-1, one in-place add per map
        (``running[key]`` carries the last prefix of the previous chunk); or one ``cumsum`` per chunk."""
        if cumulative:  # accelerators: one cumulative sum beats many small kernels
            first = value.base[0] if start == 0 else running[key]
            steps = value.d[permutation[max(start - 1, 0):stop - 1]]
            out = torch.cat([first.unsqueeze(0), first + torch.cumsum(steps, 0)]) if start == 0 \
                else first + torch.cumsum(steps, 0)
            running[key] = out[-1]
            return out
        out = torch.empty((stop - start, *value.base.shape[1:]), dtype=value.base.dtype, device=value.base.device)
        previous = running.get(key)
        for row, j in enumerate(range(start, stop)):
            if j == 0:
                out[row] = value.base[0]
            else:
                torch.add(previous, value.d[permutation[j - 1]], out=out[row])
            previous = out[row]
        running[key] = previous
        return out

    @torch.inference_mode()
    def leave_one_out(self) -> torch.Tensor:
        """F^c with each map removed in turn (Ablation-CAM); Add boundaries as total - D_k."""
        full = torch.ones(1, self.n, dtype=torch.bool, device=self.device)
        if isinstance(self.final, Add):
            total = self.final.base[0, self.target] + self.final.d[:, self.target].sum()
            return total - self.final.d[:, self.target]
        out = []
        for start in range(0, self.n, self.batch_size):
            idx = torch.arange(start, min(start + self.batch_size, self.n), device=self.device)
            masks = full.expand(idx.numel(), self.n).clone()
            masks[torch.arange(idx.numel()), idx] = False
            values = []
            for b in self.boundary:
                value = self.env[b]
                if isinstance(value, Add):
                    total = value.base + value.d.sum(0, keepdim=True)
                    values.append(total - value.d[idx])
                else:
                    values.append(self._materialize(value, masks))
            out.append(self._finish(values))
        return torch.cat(out)


def _clamp_bounds(node: fx.Node) -> tuple[float, float] | None:
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


def coalitions(split, activations: torch.Tensor, fixed: tuple, target: int, batch_size: int = 64,
               fast: bool = True):
    """The coalition evaluator for one image (activations (1, K, h, w)): fast or naive."""
    cls = FastCoalitions if fast else NaiveCoalitions
    return cls(split.tail, activations, fixed, target, batch_size)
