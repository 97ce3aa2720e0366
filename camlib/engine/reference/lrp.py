"""Layer-wise relevance propagation (LRP-ε) of the target logit through the tail F, for LRP-CAM.

LRP (Bach et al. 2015, the paper's reference [2]) puts the relevance R = F^c(A) on the target
logit and redistributes it, layer by layer, onto the neurons below; LRP-CAM sums the relevance
that reaches the activations per map, α_k = Σ_ij R(A_k(i, j)). The rules are captum 0.9's ``LRP``
with its default rules (the authors' code runs it on the tail), decided node by node:

* **affine nodes** (convolution, linear layer, batch norm in eval mode s ⊙ (x - μ) + β, average
  pooling, a mean or sum, adding or subtracting a constant, a product with a held-fixed tensor such
  as the VQA model's question embedding): the ε-rule. With z = f(x) the node's output, bias included,

      R_x = x ⊙ Jᵀ (R_z / (z + ε·sign z)),   sign(0) = +1,

  i.e. R_p = Σ_q x_p W_qp / (z_q + ε·sign z_q) · R_q. A bias, batch norm's shift β - s·μ and a
  constant addend keep their share b·R_z/z (captum: ``EpsilonRule``, its default for Conv2d, Linear,
  BatchNorm2d, AvgPool2d, AdaptiveAvgPool2d; batch norm is not fused into the convolution before it,
  as Zennit's canonizers do: captum does not). A product x ⊙ q with a fixed q is a linear layer
  without bias: R_x = R_z ⊙ xq/(xq + ε·sign), the relevance passes.
* **sums of two activation-dependent tensors** (residual connections, z = a + b): the same ε-rule,
  which is the z-rule, a proportional split: R_a = a ⊙ R_z/(z + ε·sign z), likewise b. captum
  needs its ``Addition_Module`` for this. With a plain ``+`` (torchvision's ``out += identity``) it
  has no rule there: the sum's gradient hands R_z whole to both branches, and where the skip's source
  x also feeds a layer, captum's one hook on x multiplies the sum of both gradients by x, so the
  skip gets x ⊙ R_z, relevance times activation (``tests/engine/reference/test_lrp.py``).
* **max pooling**: the ε-rule through the pooling's gradient, R_p = x_p R_w / (y_w + ε·sign y_w) at
  each window's argmax p, where x_p = y_w: winner takes all (captum: ``EpsilonRule`` on MaxPool2d).
* **elementwise activations with g(0) = 0** (ReLU, ReLU6 = hardtanh(0, 6), clamps whose bounds
  contain 0, tanh, SiLU, GELU, leaky ReLU, ELU, hard swish, Mish): relevance passes unchanged,
  R_x = R_g(x) (captum: ReLU, Tanh and Dropout pass it; its ``IdentityRule`` does the same for
  others). What reaches g(x) is proportional to g(x), so R_x / x stays bounded as x → 0.
* **rearrangements** (flatten, reshape and views, concatenation, indexing, padding): relevance
  follows the values (their ordinary backward pass).
* **anything else** is refused with :class:`UnsupportedTailError`: a product of two
  activation-dependent tensors (squeeze-and-excitation), a division by one, an activation with
  g(0) ≠ 0 (sigmoid, hard sigmoid, softplus: g(0) = ½ would hand relevance to an input of 0, which
  the ε-rule below divides by ε).

Conservation: every rule passes relevance on in total except the ε-rule, which keeps
Σ R_x = Σ R_z (z - b)/(z + ε·sign z): with no bias or batch-norm shift and ε → 0, Σ_k α_k = F^c(A).
On tails whose activations are ReLUs, ε → 0 makes every R_z / z the gradient ∂F^c/∂z, so
α_k = Σ_ij A_k ∂F^c/∂A_k (gradient × input, Ancona et al. 2018), biases or not.

This is a graph transformation of the tail built by :mod:`camlib.graph.split`, as
:mod:`camlib.engine.reference.deeplift` is: an ε-rule node gets a :class:`_TimesInput` on each of its
activation-dependent inputs and a :class:`_OverOutput` after it, so that its own backward pass (Jᵀ)
runs between them; activations become :class:`_PassRelevance`. One forward pass with autograd and
one backward pass seeded with F^c(A) at the target then leave R(A) in the gradient of A. No module
hooks, nothing global patched; ε is read at backward time from a :class:`_Stabilizer` that belongs
to one tail pass, so threads sharing the model (and the cached rewritten tail) do not interfere.
Which rule a node gets comes from :mod:`camlib.graph.ops` only.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.fx as fx

from camlib.engine.backends import Backend
from camlib.engine.quantities import Lrp, Need, Problem
from camlib.graph import ops


class UnsupportedTailError(NotImplementedError):
    """The tail contains an operation LRP has no rule for here (a product of two activation-dependent
    tensors as in squeeze-and-excitation blocks, a sigmoid, ...)."""


class _Stabilizer:
    """ε of one tail pass, read by its backward passes (set before each one)."""

    __slots__ = ("epsilon",)

    def __init__(self, epsilon: float = 0.0):
        self.epsilon = epsilon


class _TimesInput(torch.autograd.Function):
    """The identity; backward multiplies the incoming value by the input: c -> x ⊙ c."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * x


class _OverOutput(torch.autograd.Function):
    """The identity on an ε-rule node's output z; backward: R -> R / (z + ε·sign z), sign 0 = +1."""

    @staticmethod
    def forward(ctx, z, stabilizer):
        ctx.save_for_backward(z)
        ctx.stabilizer = stabilizer
        return z.view_as(z)

    @staticmethod
    def backward(ctx, relevance):
        (z,) = ctx.saved_tensors
        epsilon = ctx.stabilizer.epsilon
        return relevance / torch.where(z >= 0, z + epsilon, z - epsilon), None


class _PassRelevance(torch.autograd.Function):
    """y = fn(x) for an elementwise activation with fn(0) = 0; backward passes relevance unchanged."""

    @staticmethod
    def forward(ctx, x, fn, args, kwargs):
        return fn(x, *args, **kwargs)

    @staticmethod
    def backward(ctx, relevance):
        return relevance, None, None, None


def _times_input(x):
    return _TimesInput.apply(x)


def _over_output(z, stabilizer):
    return _OverOutput.apply(z, stabilizer)


def _passing(fn):
    def passing(x, *args, **kwargs):
        return _PassRelevance.apply(x, fn, args, kwargs)

    passing.__name__ = f"relevance_through_{getattr(fn, '__name__', 'fn')}"
    return passing


# Activations that pass relevance unchanged (function -> its LRP version).
PASSING_FUNCTIONS = {fn: _passing(fn) for fn in ops.ELEMENTWISE_FUNCTIONS}


def lrp_tail(tail: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``tail`` whose backward pass propagates LRP-ε relevance (module docstring).

    Called as ``lrp(A, *fixed, stabilizer)``; the gradient of A for the output gradient R_out is
    the relevance of A. Raises :class:`UnsupportedTailError` when an activation-dependent node has
    no rule.
    """
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    graph.output(graph.graph_copy(tail.graph, env))
    modules = dict(tail.named_modules())
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    with graph.inserting_after(placeholders[-1]):
        stabilizer = graph.placeholder("stabilizer")
    depends_set = {placeholders[0]}

    def depends(arg) -> bool:
        return isinstance(arg, fx.Node) and arg in depends_set

    for node in list(graph.nodes):
        if node.op in ("placeholder", "get_attr", "output") or not any(map(depends, node.all_input_nodes)):
            continue
        depends_set.add(node)
        if ops.is_rearrangement(node, modules) or ops.is_structural(node):
            continue
        if ops.maps_zero_to_zero(node):
            node.op, node.target = "call_function", PASSING_FUNCTIONS[ops.elementwise_function(node)]
        elif ops.is_max_pool(node) or ops.is_affine_node(node, modules, depends):
            for arg in [a for a in node.all_input_nodes if depends(a)]:
                with graph.inserting_before(node):
                    scaled = graph.call_function(_times_input, (arg,))
                node.replace_input_with(arg, scaled)
            with graph.inserting_after(node):
                divided = graph.call_function(_over_output, (node, stabilizer))
            node.replace_all_uses_with(divided, delete_user_cb=lambda user: user is not divided)
            depends_set.add(divided)
        else:
            what = type(modules[node.target]).__name__ if node.op == "call_module" else \
                getattr(node.target, "__name__", str(node.target))
            raise UnsupportedTailError(
                f"LRP-CAM has no relevance rule for {what!r} ({node.name}) in the tail "
                f"(products of two activation-dependent tensors, activations with g(0) ≠ 0 such as sigmoid, "
                f"and divisions by the activations have none); choose a later layer or another method")
    gm = fx.GraphModule(tail, graph)
    gm.recompile()
    return gm


def check_epsilon(epsilon) -> float:
    """ε as a float, or a ValueError: the ε-rule needs ε > 0 (at ε = 0 a zero output divides by 0)."""
    value = float(epsilon)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"the LRP stabiliser epsilon must be a finite number > 0, got {epsilon!r}")
    return value


# -- The backend ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LrpTail:
    """A split's tail rewritten by :func:`lrp_tail` (built once per split)."""

    graph: fx.GraphModule


class LrpRewrite(Backend):
    """LRP-CAM's reference: the rewritten tail on A with autograd (its output is F(A)); one backward
    pass per target and ε."""

    name = "lrp-rewrite"
    provides = frozenset({Need.LRP})
    reference = True

    def start(self, problem: Problem, needs: frozenset) -> "RelevancePass":
        tail = problem.split.memo(LrpTail, lambda: LrpTail(lrp_tail(problem.split.tail))).graph
        return RelevancePass(tail, problem.activations, problem.fixed)


class RelevancePass:
    """One forward pass of an LRP tail; :meth:`lrp` runs a backward pass for a target and ε."""

    def __init__(self, tail: fx.GraphModule, activations: torch.Tensor, fixed: tuple):
        self._stabilizer = _Stabilizer()
        self._a = activations.detach().requires_grad_(True)
        with torch.enable_grad():
            self._out = tail(self._a, *fixed, self._stabilizer)
        self.logits = self._out.detach()

    def relevance(self, target: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(R(A) (B, K, h, w), F^c(A) (B,)): the relevance of the activations when F^c(A) is put on
        the target logit of each image."""
        self._stabilizer.epsilon = check_epsilon(epsilon)
        output = self.logits.gather(1, target[:, None])
        seed = torch.zeros_like(self.logits).scatter_(1, target[:, None], output)
        (relevance,) = torch.autograd.grad(self._out, self._a, seed, retain_graph=True)
        return relevance, output[:, 0]

    def lrp(self, target: torch.Tensor, epsilon: float) -> Lrp:
        relevance, output = self.relevance(target, epsilon)
        return Lrp(relevance=relevance.sum(dim=(2, 3)), logits=self.logits, output=output, epsilon=float(epsilon))
