"""The coalition game of activation maps evaluated fast (paper Sec. 3.2; a fast backend).

The game: a coalition a' ∈ {0,1}^K keeps the maps A_k with a'_k = 1 and zeroes the others
(h_A, the reference of absence is 0); its value is F^c(h_A(a')). SHAP-CAM (Algorithm 1) needs F^c on
the K + 1 prefixes of sampled orderings π, Ablation-CAM on the K leave-one-out coalitions.

Evaluating those prefixes naively costs K + 1 tail passes per ordering (the reference backend,
:mod:`camlib.engine.reference.coalitions`). ``FastCoalitions`` instead interprets the tail graph
once per image, tracking how each value depends on the coalition:

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
  the prefixes of many orderings go through one fused kernel (:mod:`camlib.engine.kernels.clampsum`).

A linear tail is ``Add`` up to the logits, so F^c on any coalition is base_c + Σ a'_k D_k,c without
any tail pass, and every ordering gives the exact SHAP values D_k,c. Which node keeps channels
separate, flattens or clamps comes from :mod:`camlib.graph.ops`. The tests check that both
evaluators give the same values.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from camlib.engine.backends import Backend
from camlib.engine.kernels import clampsum
from camlib.engine.kernels.blockdot import block_dots
from camlib.engine.quantities import Need, Problem
from camlib.engine.reference.coalitions import prefix_masks
from camlib.graph import ops

# Largest Add representation (numel of D) kept before falling back to per-coalition evaluation
# (512 MB in float32). EfficientNet-Lite0's blocks.6.0.bn2 needs 1152 maps × 1280 × 7 × 7 = 72 M
# after conv_head: below this it ran conv_head once per coalition, ~5 s per ordering instead of ~0.08 s
# (peak memory 1.8 GB with the model).
MAX_ADD_NUMEL = 128 * 1024 * 1024
# Elements of materialised prefixes per chunk (~4 MB in float32: the passes over them are memory bound).
PREFIX_CHUNK_NUMEL = 1024 * 1024



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
            return Fixed(ops.run_node(node, self.modules, self.tail, args, kwargs), any(v.batched for v in inputs))
        if any(isinstance(v, Opaque) for v in inputs) or "tensor_meta" not in node.meta:
            return OPAQUE
        dependent = [v for v in inputs if not isinstance(v, Fixed)]
        if all(isinstance(v, Sep) for v in dependent):
            if ops.is_channelwise(node, self.modules, self.n,
                              lambda a: env[a].value if isinstance(env[a], Fixed) else ops.DEPENDENT):
                return self._apply_sep(node, env)
            if node.op == "call_module" and ops.is_zero_padded_conv(self.modules[node.target]) \
                    and self.modules[node.target].groups == 1 and len(node.all_input_nodes) == 1:
                return self._conv_of_sep(node, env[node.all_input_nodes[0]])
            if ops.is_flatten(node, self.modules):
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
            base = ops.run_node(node, self.modules, self.tail, *base_args)
            d = ops.run_node(node, self.modules, self.tail, *d_args) - ops.run_node(node, self.modules, self.tail, *zero_args)
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
        return ops.is_affine_node(node, self.modules, lambda a: isinstance(a, fx.Node) and not isinstance(env[a], Fixed))

    def _apply_sep(self, node: fx.Node, env: dict) -> Sep:
        out = []
        for part in ("v1", "v0"):
            args, kwargs = fx.node.map_arg(
                (node.args, node.kwargs),
                lambda a: env[a].value if isinstance(env[a], Fixed) else getattr(env[a], part))
            out.append(ops.run_node(node, self.modules, self.tail, args, kwargs))
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
        if ops.is_conv_same(module):
            from timm.layers.padding import pad_same
            delta = pad_same(delta, module.kernel_size, module.stride, module.dilation)
            padding = 0
        else:
            padding = module.padding
        d = F.conv2d(delta, grouped, None, module.stride, padding, module.dilation, groups=self.n)
        return Add(base, d.view(self.n, out_channels, *d.shape[2:]))

    def _linear_of_sepflat(self, module: nn.Linear, sep: Sep) -> Add:
        """A fully connected layer of a flattened Sep value: D_k = W[:, block k] · Δ_k, in one read
        of W (:func:`camlib.engine.kernels.blockdot.block_dots`)."""
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
        bounds = ops.clamp_bounds(clamp)
        modules = dict(self.opaque.named_modules())
        rest = [n for n in nodes if n is not clamp]
        if bounds is None or clamp.args[0] is not placeholder or not all(
                n.op == "get_attr" or ops.is_affine_node(n, modules, lambda a: isinstance(a, fx.Node)) for n in rest):
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


class FastCoalitionGame(Backend):
    """The coalition game by :class:`FastCoalitions` (closed form on linear tails, incremental
    prefixes, the fused clamp-readout kernel on the CPU). It applies to every tail: what it cannot
    interpret it evaluates per coalition on the boundary values."""

    name = "fast-coalitions"
    provides = frozenset({Need.GAME})

    def start(self, problem: Problem, needs: frozenset) -> "_FastGames":
        return _FastGames(problem)


class _FastGames:
    def __init__(self, problem: Problem):
        self.problem = problem

    def game(self, i: int, target: int) -> FastCoalitions:
        p = self.problem
        return FastCoalitions(p.split.tail, p.activations[i:i + 1], p.fixed_for(i, 1), target, p.batch_size)
