"""Per-map gradient sums, gradients and LIFT-CAM through a "pooling → flatten → fully connected"
tail, without a second full read of the fully connected weights.

VGG and AlexNet classify their last convolutional maps as

    F(A) = R(h),   h = W · vec(φ(A)) + b                                                         (1)

with φ channel-wise (pooling: channel k of x = φ(A) depends on A_k alone), W (O, K·P) a fully
connected layer (VGG16: 4096 × 25088, 411 MB, 3/4 of the tail's weights) and R the rest of the
classifier. Autograd reads W twice, W·x forward and Wᵀg backward: on the development CPU 20 ms
each, a tenth of VGG16's forward pass. But Grad-CAM, XGrad-CAM and LIFT-CAM use the gradient only
summed over each map, and those sums are derivatives along one direction per map, which the
per-map contributions Y^V[k, o] = Σ_p W[o, kP + p] · V_k[p] of :mod:`camlib.engine.kernels.blockdot` give in
the forward pass:

    Σ_ij ∂F^c/∂A_k(i, j)             = Σ_o g_o · Y^T[k, o],   T = J_φ(A) · 1     (Grad-CAM)
    Σ_ij A_k(i, j) · ∂F^c/∂A_k(i, j)  = Σ_o g_o · Y^U[k, o],   U = J_φ(A) · A     (XGrad-CAM)
    α_k (LIFT-CAM, Eq. 7)             = Σ_o m_o · Y^Δ[k, o],   Δ = φ(A) - φ(0)

g = ∂F^c/∂h and m = the DeepLIFT-Rescale multipliers of F^c at h against h_ref = W·vec(φ(0)) + b
come from the small rest R alone. J_φ(A)·V is φ's derivative in the direction V: one
pass for all K maps at once, because φ does not mix channels. Pools make the common case cheaper
still: T_k is constant on each map (T = 1), so Y^T = T_k · S with the block sums
S[k, o] = Σ_p W[o, kP + p] stored once per layer, and the forward product stays BLAS's W·x; and
U = Δ = x (pools are positively homogeneous and φ(0) = 0), so the one kernel pass for Y^x gives h =
Σ_k Y^x[k] + b as well. Either way W is read once. Grad-CAM++ needs ∂F^c/∂A at every position
(its weights are nonlinear in it): J_φᵀ(gᵀW), where g_o = 0 wherever a ReLU after the layer is off,
so only W's other rows are read (:func:`camlib.engine.kernels.blockdot.active_rows_product`).

The identities are exact (a sum over a map of the backward pass is the derivative along that map;
DeepLIFT's rules satisfy summation-to-delta per element of the channel-wise φ); the tests compare
with autograd and with the DeepLIFT tail on the whole tail. Used on the CPU for one to
``MAX_IMAGES`` images without held-fixed inputs and for FC layers of ``MIN_WEIGHT_NUMEL`` weights
or more, where the second read of W costs; batches, GPUs, small classifiers and other tails take
the autograd path.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.fx as fx
import torch.nn as nn

from camlib.engine.backends import Backend
from camlib.engine.fast.stored_reference import deeplift_tail_with_reference
from camlib.engine.kernels import blockdot
from camlib.engine.quantities import DeepLift, Need, Problem
from camlib.graph import ops

# Images per call up to which the kernel's one read of W beats a batched BLAS forward + backward
# (the kernel's cost grows with the number of images, BLAS's barely).
MAX_IMAGES = 2
# FC weights from which the saved read pays for the pass's fixed costs: 64 MB of float32, twice
# the development CPU's L3 cache (VGG16: 103 M; EfficientNet-Lite0's and ResNet50's classifiers,
# 1.3 M and 2 M, stay in cache and were 5-10 % slower this way).
MIN_WEIGHT_NUMEL = 1 << 24


@dataclasses.dataclass(frozen=True)
class BlockLinearTail:
    """The parts of Eq. (1): ``channelwise`` A -> φ(A), ``linear`` (W, b), ``rest`` h -> logits."""

    channelwise: fx.GraphModule
    linear: nn.Linear
    rest: fx.GraphModule
    n_maps: int


def find(tail: fx.GraphModule, n_maps: int) -> BlockLinearTail | None:
    """The decomposition (1) of ``tail``, or None when it is not of that form (or holds fixed inputs)."""
    modules = dict(tail.named_modules())
    placeholders = [n for n in tail.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        return None
    chain, node = [], placeholders[0]
    while len(node.users) == 1:
        user = next(iter(node.users))
        if any(a.op != "get_attr" for a in user.all_input_nodes if a is not node):
            return None  # another input that depends on A, or a fixed input
        if ops.is_flatten(user, modules):
            linear = next(iter(user.users)) if len(user.users) == 1 else None
            if linear is None or linear.op != "call_module" or type(modules[linear.target]) is not nn.Linear \
                    or modules[linear.target].in_features % n_maps:
                return None
            return BlockLinearTail(_subgraph(tail, placeholders[0], chain, node), modules[linear.target],
                                   _rest(tail, linear, {placeholders[0], *chain, user}), n_maps)
        if not ops.is_channelwise(user, modules, n_maps, lambda a: _constant(tail, a)):
            return None
        chain.append(user)
        node = user
    return None


def _constant(tail: fx.GraphModule, node: fx.Node):
    return ops.attribute(tail, node.target) if node.op == "get_attr" else ops.DEPENDENT


def _subgraph(tail: fx.GraphModule, start: fx.Node, nodes: list, last: fx.Node) -> fx.GraphModule:
    graph = fx.Graph()
    mapping = {start: graph.placeholder("activations")}
    for node in tail.graph.nodes:
        if node in nodes or (node.op == "get_attr" and any(u in nodes for u in node.users)):
            mapping[node] = graph.node_copy(node, lambda a: mapping[a])
    graph.output(mapping[last])
    return fx.GraphModule(tail, graph)


def _rest(tail: fx.GraphModule, linear: fx.Node, skipped: set) -> fx.GraphModule:
    graph = fx.Graph()
    mapping = {linear: graph.placeholder("h")}
    for node in tail.graph.nodes:
        if node in skipped or node is linear or node.op == "output":
            continue
        mapping[node] = graph.node_copy(node, lambda a: mapping[a])
    graph.output(mapping[next(n for n in tail.graph.nodes if n.op == "output").args[0]])
    return fx.GraphModule(tail, graph)


@dataclasses.dataclass(frozen=True)
class BlockLinearPlan:
    """A split's decomposition (1), or None when its tail is not of that form (found once per split)."""

    tail: BlockLinearTail | None


def applicable(problem: Problem) -> BlockLinearTail | None:
    """The decomposition to use for this problem, or None for the other backends."""
    if problem.fixed or problem.activations.device.type != "cpu" or problem.batch > MAX_IMAGES \
            or not blockdot.available():
        return None
    plan = problem.split.memo(BlockLinearPlan,
                              lambda: BlockLinearPlan(find(problem.split.tail, problem.n_maps)))
    tail = plan.tail
    return tail if tail is not None and tail.linear.weight.numel() >= MIN_WEIGHT_NUMEL else None


@dataclasses.dataclass(frozen=True)
class BlockSums:
    """S[k, o] = Σ_p W[o, kP + p] (K, O): the block sums of a split's FC layer, stored once."""

    sums: torch.Tensor


@dataclasses.dataclass(frozen=True)
class BlockLinearReference:
    """x0 = φ(0), h0 = W·vec(x0) + b, the rest R as a DeepLIFT graph against h0, and F(0) (1, C)."""

    x0: torch.Tensor
    h0: torch.Tensor
    rest: fx.GraphModule
    logits: torch.Tensor


@dataclasses.dataclass
class BlockLinearPass:
    """One pass through Eq. (1) that kept what the methods need: h (a leaf requiring gradients),
    the logits R(h) with their graph, per direction Y (B, K, O) or (scale (B, K), S (K, O)), and
    for full gradients A (a leaf) with x = φ(A) and its graph, and W."""

    h: torch.Tensor
    logits: torch.Tensor
    directions: dict
    weight: torch.Tensor
    a: torch.Tensor | None = None
    x: torch.Tensor | None = None

    def _g(self, target: torch.Tensor) -> torch.Tensor:
        """g = ∂F^c/∂h (B, O), through the rest R only."""
        (g,) = torch.autograd.grad(self.logits.gather(1, target[:, None]).sum(), self.h, retain_graph=True)
        return g

    def per_map(self, name: str, target: torch.Tensor) -> torch.Tensor:
        """Σ_o g_o · Y^name[k, o] (B, K)."""
        g = self._g(target)
        y = self.directions[name]
        if isinstance(y, tuple):
            scale, sums = y
            return scale * (g @ sums.T)
        return torch.einsum("bko,bo->bk", y, g)

    def gradients(self, target: torch.Tensor) -> torch.Tensor:
        """∂F^c/∂A (B, K, h, w) = J_φ(A)ᵀ (gᵀW), reading only W's rows with g_o ≠ 0 (those whose
        ReLU is on, when one follows: :func:`camlib.engine.kernels.blockdot.active_rows_product`)."""
        g = self._g(target)
        gx = torch.stack([blockdot.active_rows_product(self.weight, row) for row in g]).view_as(self.x)
        (grad,) = torch.autograd.grad(self.x, self.a, gx)
        return grad


def gradient_pass(split, tail: BlockLinearTail, activations: torch.Tensor,
                  needs: tuple[str, ...]) -> BlockLinearPass:
    """The tail pass of a gradient method that needs ``needs`` ⊆ {"sum", "dot", "gradients"}: per-map
    gradient sums, per-map sums of A times the gradient, or the gradients themselves."""
    batch, k = activations.shape[:2]
    a = x_graph = None
    if "gradients" in needs:
        a = activations.detach().requires_grad_(True)
        with torch.enable_grad():
            x_graph = tail.channelwise(a)
        x = x_graph.detach()
    else:
        with torch.inference_mode():
            x = tail.channelwise(activations)
    directions, vectors = {}, {}
    if "sum" in needs:
        t = _direction(tail.channelwise, activations, torch.ones_like(activations))
        flat = t.reshape(batch, k, -1)
        if torch.equal(flat, flat[..., :1].expand_as(flat)):  # constant on each map: T_k · S
            sums = split.memo(BlockSums, lambda: BlockSums(
                tail.linear.weight.detach().view(-1, k, flat.shape[2]).sum(2).T.contiguous())).sums
            directions["sum"] = (flat[..., 0], sums)
        else:
            vectors["sum"] = t
    if "dot" in needs:
        u = _direction(tail.channelwise, activations, activations)
        vectors["dot"] = x if torch.equal(u, x) else u
    if vectors:  # one read of W for x and every direction
        names = ["x", *(n for n, v in vectors.items() if v is not x)]
        stacked = torch.stack([x, *(vectors[n] for n in names[1:])], 1).reshape(batch * len(names), k, -1)
        y = blockdot.block_dots(tail.linear.weight.detach(), stacked).view(batch, len(names), k, -1)
        rows = dict(zip(names, y.unbind(1)))
        for name, v in vectors.items():
            directions[name] = rows["x"] if v is x else rows[name]
        h = rows["x"].sum(1) + (tail.linear.bias.detach() if tail.linear.bias is not None else 0)
    else:
        with torch.inference_mode():
            h = tail.linear(x.flatten(1))
    h = h.clone().requires_grad_(True)
    with torch.enable_grad():
        logits = tail.rest(h)
    return BlockLinearPass(h, logits, directions, tail.linear.weight.detach(), a, x_graph)


def _direction(channelwise: fx.GraphModule, activations: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """J_φ(A) · V: φ's derivative along ``direction`` (all maps at once), as the derivative of the
    vector-Jacobian product J_φᵀu in u (reverse mode twice: autograd's graphs are per call, while
    forward-mode AD levels are process-wide and clash between threads)."""
    with torch.inference_mode(False), torch.enable_grad():
        a = activations.detach().clone().requires_grad_(True)
        x = channelwise(a)
        u = torch.zeros_like(x, requires_grad=True)
        (vjp,) = torch.autograd.grad(x, a, u, create_graph=True)
        (tangent,) = torch.autograd.grad(vjp, u, direction)
    return tangent.detach()


@dataclasses.dataclass
class LiftPass:
    """LIFT-CAM's one pass through Eq. (1): Y^Δ (B, K, O), h (a leaf), the DeepLIFT logits R(h) and
    the reference logits F(0) (1, C)."""

    contributions: torch.Tensor
    h: torch.Tensor
    logits: torch.Tensor
    reference_logits: torch.Tensor

    def coefficients(self, target: torch.Tensor) -> torch.Tensor:
        """α_k = Σ_o m_o · Y^Δ[k, o] (B, K), m = the DeepLIFT multipliers of F^c at h."""
        (m,) = torch.autograd.grad(self.logits.gather(1, target[:, None]).sum(), self.h)
        return torch.einsum("bko,bo->bk", self.contributions, m)


def lift_pass(split, tail: BlockLinearTail, activations: torch.Tensor) -> LiftPass:
    """LIFT-CAM's tail pass on Eq. (1), against the reference A = 0 (stored once per layer)."""
    batch, k = activations.shape[:2]

    def reference():
        with torch.inference_mode(False), torch.no_grad():
            x0 = tail.channelwise(torch.zeros_like(activations[:1]))
            h0 = tail.linear(x0.flatten(1))
            dl_rest, ref_logits = deeplift_tail_with_reference(tail.rest, h0)
        return BlockLinearReference(x0, h0, dl_rest, ref_logits)

    stored = split.memo(BlockLinearReference, reference)
    x0, h0, dl_rest, ref_logits = stored.x0, stored.h0, stored.rest, stored.logits
    with torch.inference_mode():
        x = tail.channelwise(activations)
    delta = (x - x0).reshape(batch, k, -1)
    y = blockdot.block_dots(tail.linear.weight.detach(), delta)
    h = (h0 + y.sum(1)).requires_grad_(True)
    with torch.enable_grad():
        logits = dl_rest(h)
    return LiftPass(y, h, logits, ref_logits)


# -- The backends ------------------------------------------------------------------------------------

# The needs of the gradient family as the pass names its directions.
_DIRECTIONS = {Need.GRADIENT_SUMS: "sum", Need.GRADIENT_DOTS: "dot", Need.GRADIENTS: "gradients"}


class BlockLinearGradients(Backend):
    """Gradients, gradient sums and dots through Eq. (1) with one read of W (see the module docstring)."""

    name = "block-linear"
    provides = frozenset(_DIRECTIONS)

    def applies(self, problem: Problem, needs: frozenset) -> bool:
        return applicable(problem) is not None

    def start(self, problem: Problem, needs: frozenset) -> "_GradientProvider":
        names = tuple(_DIRECTIONS[n] for n in _DIRECTIONS if n in needs)
        return _GradientProvider(problem, gradient_pass(problem.split, applicable(problem), problem.activations, names))


class _GradientProvider:
    def __init__(self, problem: Problem, state: BlockLinearPass):
        self.problem, self.state = problem, state
        self.logits = state.logits.detach()
        self._gradients = None

    def gradients(self, target: torch.Tensor) -> torch.Tensor:
        if self._gradients is None:
            self._gradients = self.state.gradients(target)
        return self._gradients

    def gradient_sums(self, target: torch.Tensor) -> torch.Tensor:
        if "sum" in self.state.directions:
            return self.state.per_map("sum", target)
        return self.gradients(target).sum(dim=(2, 3))

    def gradient_dots(self, target: torch.Tensor) -> torch.Tensor:
        if "dot" in self.state.directions:
            return self.state.per_map("dot", target)
        return (self.problem.activations * self.gradients(target)).sum(dim=(2, 3))


class BlockLinearDeepLift(Backend):
    """LIFT-CAM's contributions through Eq. (1) with one read of W, against the stored reference."""

    name = "block-linear"
    provides = frozenset({Need.DEEPLIFT})

    def applies(self, problem: Problem, needs: frozenset) -> bool:
        return applicable(problem) is not None

    def start(self, problem: Problem, needs: frozenset) -> "_LiftProvider":
        return _LiftProvider(problem, lift_pass(problem.split, applicable(problem), problem.activations))


class _LiftProvider:
    def __init__(self, problem: Problem, state: LiftPass):
        self.problem, self.state = problem, state
        self.logits = state.logits.detach()

    def deeplift(self, target: torch.Tensor) -> DeepLift:
        alpha = self.state.coefficients(target)
        return DeepLift(alpha, self.state.logits.detach(), self.state.reference_logits.expand(self.problem.batch, -1))
