"""Splitting a network at the CAM layer l into a head f^[l] and a tail F.

The paper (Sec. 3.2) writes the model as f = F ∘ f^[l]: the activations are A = f^[l](x) and the
tail F maps them to the logits, F(A) = f^[L-1](x). Every CAM method needs F as a callable of A
alone (Ablation-CAM, SHAP-CAM and LIFT-CAM evaluate or differentiate F on modified activations).

We get F generically with torch.fx: the whole network is traced once into a graph, and for a
layer l the graph is cut at l's output node:

* the **head** computes A and every value the tail needs that does not depend on the image
  (for a VQA model: the question embedding, which is *held fixed*);
* the **tail** is a GraphModule with placeholders (activations, *fixed) returning the logits.

A layer is a valid CAM layer when every path from the image to the logits passes through it
(a dominator of the output), i.e. the tail depends on the image only through A. Block outputs of
VGG, ResNet, DenseNet, MobileNet and EfficientNet are such cuts; a layer inside a residual block
is not (the skip connection bypasses it) and is refused with a clear error.

Graph hygiene done once here so that every user of the tail can rely on it:
* activation modules and in-place functional activations become out-of-place ``call_function``
  nodes on canonical functions (``F.relu``, ``F.hardtanh``, ...): an in-place ReLU in the tail
  would overwrite the activations A handed in by the caller, and a reused ReLU module becomes one
  node per call (DeepLIFT needs each call's own reference);
* ``nn.MaxPool2d`` becomes ``F.max_pool2d``, ``nn.AdaptiveMaxPool2d`` ``F.adaptive_max_pool2d``.
Parameters are shared with the original module (no copies), and nothing in the original module
is modified.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Callable, Sequence, TypeVar

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from camlib.graph import ops

T = TypeVar("T")


class LayerError(ValueError):
    """A layer name that does not exist or cannot serve as a CAM layer."""


# --------------------------------------------------------------------------------------------
# Tracing
# --------------------------------------------------------------------------------------------


class _ScopeTracer(fx.Tracer):
    """An fx tracer that records which graph node is the output of each module call."""

    def __init__(self, leaf_types: tuple = (), autowrap_functions: tuple = ()):
        super().__init__(autowrap_functions=autowrap_functions)
        self.leaf_types = leaf_types
        self.module_outputs: dict[str, list[fx.Node]] = {}

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, self.leaf_types) or super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        out = super().call_module(m, forward, args, kwargs)
        if isinstance(out, fx.Proxy):
            self.module_outputs.setdefault(self.path_of_module(m), []).append(out.node)
        return out


def _timm_leaves() -> tuple[tuple, tuple]:
    """timm's modules that fx cannot trace (dynamic 'same' padding...), minus norm+activation
    modules, which trace fine and whose activation DeepLIFT must see."""
    try:
        from timm.layers import _fx as timm_fx
        from timm.layers import norm_act
    except Exception:  # timm absent or changed: torchvision-only models still trace
        return (), ()
    leaves = tuple(cls for cls in timm_fx._leaf_modules if cls.__module__ != norm_act.__name__)
    return leaves, tuple(timm_fx._autowrap_functions)


def _canonicalize(gm: fx.GraphModule) -> dict[fx.Node, fx.Node]:
    """Rewrite activations and max pooling to out-of-place canonical functions (in gm's graph).

    Returns the removed identity nodes (dropout, nn.Identity) mapped to the node replacing them.
    """
    modules = dict(gm.named_modules())
    removed: dict[fx.Node, fx.Node] = {}
    for node in list(gm.graph.nodes):
        if node.op == "call_module":
            module = modules[node.target]
            spec = ops.canonical_activation(module)
            if spec is not None:
                fn, extra, kw = spec
                node.op, node.target = "call_function", fn
                node.args = (node.args[0], *extra)
                node.kwargs = dict(kw)
            elif type(module) is nn.MaxPool2d:
                node.op, node.target = "call_function", F.max_pool2d
                node.args = (node.args[0],)
                node.kwargs = dict(kernel_size=module.kernel_size, stride=module.stride,
                                   padding=module.padding, dilation=module.dilation,
                                   ceil_mode=module.ceil_mode)
            elif type(module) is nn.AdaptiveMaxPool2d and not module.return_indices:
                node.op, node.target = "call_function", F.adaptive_max_pool2d
                node.args, node.kwargs = (node.args[0], module.output_size), {}
            elif type(module) is nn.AdaptiveAvgPool2d and module.output_size in (1, (1, 1)):
                # Global average pooling as a mean: same values, several times faster on the CPU.
                node.op, node.target = "call_function", torch.mean
                node.args, node.kwargs = (node.args[0],), {"dim": (2, 3), "keepdim": True}
            elif isinstance(module, (nn.Dropout, nn.Identity)):
                # Inference only: dropout is the identity. Removing it keeps the tail small.
                removed[node] = node.args[0]
                node.replace_all_uses_with(node.args[0])
                gm.graph.erase_node(node)
        elif node.op == "call_function":
            if node.target in ops.INPLACE_FUNCTIONS:
                node.target = ops.INPLACE_FUNCTIONS[node.target]
            if "inplace" in node.kwargs:
                node.kwargs = {**node.kwargs, "inplace": False}
            if node.target in (F.relu, F.hardtanh, F.leaky_relu, F.elu, F.relu6) and len(node.args) > 1 \
                    and node.args[-1] is True and node.target is not F.hardtanh:
                node.args = (*node.args[:-1], False)
            if node.target is F.relu6:
                node.target, node.args = F.hardtanh, (node.args[0], 0.0, 6.0)
                node.kwargs = {}
            if node.target is F.adaptive_avg_pool2d and node.args[1:] in ((1,), ((1, 1),)) and not node.kwargs:
                node.target, node.args = torch.mean, (node.args[0],)
                node.kwargs = {"dim": (2, 3), "keepdim": True}
            if node.target is F.dropout:
                removed[node] = node.args[0]
                node.replace_all_uses_with(node.args[0])
                gm.graph.erase_node(node)
        elif node.op == "call_method" and node.target in ops.INPLACE_METHODS:
            node.target = ops.INPLACE_METHODS[node.target]
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target is torch._assert:
            gm.graph.erase_node(node)  # shape assertions (timm) hold by construction
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()
    return removed


def _inplace_activations(gm: fx.GraphModule) -> fx.GraphModule:
    """``gm`` with its activations made in-place where that is safe: after a convolution, linear
    layer, batch norm or sum that nothing else reads. For the head and the segments, which run in
    inference mode on large maps: a fresh 51 MB tensor per ReLU made VGG16's first ten layers 1.3×
    slower than torchvision's in-place ReLUs (73 vs 57 ms per image in batches of 4). The tail keeps
    its out-of-place activations (DeepLIFT reads each activation's input)."""
    modules = dict(gm.named_modules())
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in ops.INPLACE_ACTIVATIONS or not node.args:
            continue
        source = node.args[0]
        if not isinstance(source, fx.Node) or len(source.users) != 1:
            continue
        if ops.is_linear_producer(source, modules):
            position = ops.INPLACE_ACTIVATIONS[node.target]
            if len(node.args) > position:
                node.args = (*node.args[:position], True, *node.args[position + 1:])
            else:
                node.kwargs = {**node.kwargs, "inplace": True}
    gm.recompile()
    return gm


# --------------------------------------------------------------------------------------------
# Layers and splits
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """A layer a user may explain: its module name, activation shape (C, H, W) and tail kind."""

    name: str
    shape: tuple[int, int, int]
    linear_tail: bool

    @property
    def label(self) -> str:
        c, h, w = self.shape
        kind = "linear tail: LIFT-CAM = exact SHAP" if self.linear_tail else "nonlinear tail"
        return f"{self.name}  ({c}×{h}×{w}, {kind})"


@dataclasses.dataclass(frozen=True)
class Split:
    """The network cut at one layer: ``head(*inputs) -> (A, fixed)`` and ``tail(A, *fixed) -> logits``.

    A split also owns the objects that backends derive from its tail once and reuse for every image
    (a DeepLIFT tail with its stored reference, a block-linear decomposition, NNPACK stages...):
    :meth:`memo` keeps one instance per type, built under the split's lock, so that concurrent
    explanations of one shared model build each object once.
    """

    layer: str
    head: fx.GraphModule
    tail: fx.GraphModule
    linear_tail: bool
    n_fixed: int
    _memo: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False, compare=False)

    def memo(self, kind: type[T], build: Callable[[], T]) -> T:
        """The cached ``kind`` object of this split, made by ``build()`` on first use."""
        with self._lock:
            if kind not in self._memo:
                value = build()
                if not isinstance(value, kind):
                    raise TypeError(f"{build!r} built a {type(value).__name__}, not a {kind.__name__}")
                self._memo[kind] = value
            return self._memo[kind]


class SplittableModel:
    """A traced network that can be cut at any of its CAM layers.

    ``module`` is any nn.Module whose forward takes the (normalised) image as its first input and
    optional further inputs (held fixed, e.g. a question). Tracing happens once, here; splits are
    immutable and built on demand (cheap: graph surgery only).
    """

    def __init__(self, module: nn.Module, example_inputs: Sequence[torch.Tensor], image_input: int = 0):
        leaf_types, autowrap = _timm_leaves()
        tracer = _ScopeTracer(leaf_types=leaf_types, autowrap_functions=autowrap)
        graph = tracer.trace(module)
        self.module = module
        self.graph_module = fx.GraphModule(module, graph)
        removed = _canonicalize(self.graph_module)

        def resolve(node: fx.Node) -> fx.Node:
            while node in removed:
                node = removed[node]
            return node

        self._module_outputs = {name: [resolve(n) for n in nodes]
                                for name, nodes in tracer.module_outputs.items()}
        self._modules = dict(self.graph_module.named_modules())
        self._placeholders = [n for n in self.graph_module.graph.nodes if n.op == "placeholder"]
        self._image = self._placeholders[image_input]
        self._image_dependent = self._descendants(self._image) | {self._image}
        self._shapes = self._propagate_shapes(example_inputs)
        self.layers = self._find_layers()

    # -- graph helpers -------------------------------------------------------------------------

    @staticmethod
    def _descendants(node: fx.Node) -> set[fx.Node]:
        seen, stack = set(), [node]
        while stack:
            for user in stack.pop().users:
                if user not in seen:
                    seen.add(user)
                    stack.append(user)
        return seen

    def _propagate_shapes(self, example_inputs) -> dict[fx.Node, tuple]:
        from torch.fx.passes.shape_prop import ShapeProp
        with torch.no_grad():
            ShapeProp(self.graph_module).propagate(*example_inputs)
        shapes = {}
        for node in self.graph_module.graph.nodes:
            meta = node.meta.get("tensor_meta")
            if meta is not None and hasattr(meta, "shape"):
                shapes[node] = tuple(meta.shape)
        return shapes

    def _node_of(self, name: str) -> fx.Node:
        nodes = self._module_outputs.get(name)
        if not nodes:
            raise LayerError(f"no module named {name!r} in this model; choose one of: "
                             + ", ".join(info.name for info in self.layers))
        if len(nodes) > 1:
            raise LayerError(f"module {name!r} is called {len(nodes)} times in the forward pass, so its "
                             "output is not one activation; choose one of: "
                             + ", ".join(info.name for info in self.layers))
        return nodes[0]

    def _tail_nodes(self, cut: fx.Node) -> list[fx.Node]:
        tail = self._descendants(cut)
        return [n for n in self.graph_module.graph.nodes if n in tail]

    def _fixed_inputs(self, cut: fx.Node, tail_nodes: list[fx.Node]) -> list[fx.Node] | None:
        """Nodes outside the tail that the tail reads; None when the cut is not valid."""
        tail = set(tail_nodes)
        if not any(n.op == "output" for n in tail_nodes):
            return None
        fixed: list[fx.Node] = []
        for node in tail_nodes:
            for arg in node.all_input_nodes:
                if arg is cut or arg in tail or arg.op == "get_attr":
                    continue
                if arg in self._image_dependent:
                    return None  # a skip connection bypasses the cut
                if arg not in fixed:
                    fixed.append(arg)
        return fixed

    def _is_linear(self, cut: fx.Node, tail_nodes: list[fx.Node]) -> bool:
        depends_set = set(tail_nodes) | {cut}

        def depends(arg) -> bool:
            return isinstance(arg, fx.Node) and arg in depends_set

        return all(n.op == "output" or not depends(n) or ops.is_affine_node(n, self._modules, depends)
                   for n in tail_nodes)

    def _find_layers(self) -> list[LayerInfo]:
        order = {node: i for i, node in enumerate(self.graph_module.graph.nodes)}
        layers, seen = [], set()
        for name, module in self.module.named_modules():  # parents first: "layer4" before "layer4.2"
            nodes = self._module_outputs.get(name, [])
            if len(nodes) != 1 or not name or isinstance(module, (nn.Identity, nn.Dropout)):
                continue
            node = nodes[0]
            if node not in self._shapes or node in seen or node not in self._image_dependent:
                continue
            shape = self._shapes[node]
            if len(shape) != 4 or shape[2] * shape[3] < 2:
                continue
            tail_nodes = self._tail_nodes(node)
            if self._fixed_inputs(node, tail_nodes) is None:
                continue
            seen.add(node)
            layers.append((order[node], LayerInfo(name, tuple(shape[1:]), self._is_linear(node, tail_nodes))))
        return [info for _, info in sorted(layers, key=lambda item: item[0])]

    # -- splitting -----------------------------------------------------------------------------

    def layer_info(self, name: str) -> LayerInfo:
        for info in self.layers:
            if info.name == name:
                return info
        node = self._node_of(name)
        for info in self.layers:  # an alias (e.g. "blocks.6" for "blocks"): keep the caller's name
            if self._module_outputs[info.name][0] is node:
                return dataclasses.replace(info, name=name)
        raise LayerError(f"layer {name!r} cannot be a CAM layer: the network's output does not depend "
                         "on the image only through it (a skip connection bypasses it, or it is not a "
                         "convolutional feature map). Choose one of: "
                         + ", ".join(info.name for info in self.layers))

    def split(self, name: str) -> Split:
        info = self.layer_info(name)
        cut = self._module_outputs[info.name][0]
        tail_nodes = self._tail_nodes(cut)
        fixed = self._fixed_inputs(cut, tail_nodes)
        head = self._build_head(cut, fixed)
        tail = self._build_tail(cut, fixed, tail_nodes)
        return Split(info.name, head, tail, info.linear_tail, len(fixed))

    def segment(self, start: str, end: str) -> fx.GraphModule | None:
        """The part of the network from layer ``start``'s output to layer ``end``'s output, as a
        GraphModule of one placeholder (``start``'s activations), so that ``head(end)`` equals
        ``segment(start, end) ∘ head(start)``. None when that part reads anything else: a value
        held fixed (a question) or a skip connection around ``start``. Both must be CAM layers,
        ``start`` the earlier."""
        first, last = self._node_of(self.layer_info(start).name), self._node_of(self.layer_info(end).name)
        after = self._descendants(first)
        if last not in after:
            return None
        wanted, stack = set(), [last]  # the ancestors of ``last`` that come after ``first``
        while stack:
            node = stack.pop()
            if node not in wanted and node in after:
                wanted.add(node)
                stack.extend(node.all_input_nodes)
        graph = fx.Graph()
        env: dict[fx.Node, fx.Node] = {first: graph.placeholder("activations")}
        for node in self.graph_module.graph.nodes:
            if node not in wanted:
                continue
            for arg in node.all_input_nodes:
                if arg in env:
                    continue
                if arg.op != "get_attr":
                    return None
                env[arg] = graph.node_copy(arg, lambda n: env[n])
            env[node] = graph.node_copy(node, lambda n: env[n])
        graph.output(env[last])
        return _inplace_activations(fx.GraphModule(self.graph_module, graph))

    def _build_head(self, cut: fx.Node, fixed: list[fx.Node]) -> fx.GraphModule:
        wanted: set[fx.Node] = set()
        stack = [cut, *fixed]
        while stack:
            node = stack.pop()
            if node not in wanted:
                wanted.add(node)
                stack.extend(node.all_input_nodes)
        graph = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        for node in self.graph_module.graph.nodes:
            if node.op == "placeholder" or node in wanted:
                env[node] = graph.node_copy(node, lambda n: env[n])
        graph.output((env[cut], *[env[n] for n in fixed]))
        return _inplace_activations(fx.GraphModule(self.graph_module, graph))

    def _build_tail(self, cut: fx.Node, fixed: list[fx.Node], tail_nodes: list[fx.Node]) -> fx.GraphModule:
        graph = fx.Graph()
        env: dict[fx.Node, fx.Node] = {cut: graph.placeholder("activations")}
        for i, node in enumerate(fixed):
            env[node] = graph.placeholder(f"fixed_{i}")
        for node in self.graph_module.graph.nodes:
            if node.op == "get_attr" and any(node in t.all_input_nodes for t in tail_nodes):
                env[node] = graph.node_copy(node, lambda n: env[n])
        for node in tail_nodes:
            env[node] = graph.node_copy(node, lambda n: env[n])
        gm = fx.GraphModule(self.graph_module, graph)
        gm.graph.eliminate_dead_code()
        gm.recompile()
        return gm
