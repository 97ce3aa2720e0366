"""camlib.graph.split: head ∘ tail reproduces the network, valid cuts only, graph hygiene."""

import pytest
import torch
import torchvision

from camlib.graph.split import LayerError, SplittableModel


def _check_roundtrip(module, layers, x):
    module.eval().requires_grad_(False)
    sm = SplittableModel(module, [x[:1]])
    expected = module(x)
    for name in layers:
        split = sm.split(name)
        activations, *fixed = split.head(x)
        torch.testing.assert_close(split.tail(activations, *fixed), expected, rtol=1e-5, atol=1e-5)
    return sm


@pytest.mark.parametrize("arch,layers", [
    ("vgg16", ["features.29", "features.30", "features.22"]),
    ("resnet18", ["layer4", "layer3", "layer2.1"]),
    ("densenet121", ["features.norm5", "features.denseblock4", "features.transition3"]),
    ("mobilenet_v2", ["features.18", "features.14"]),
])
def test_head_then_tail_is_the_network(arch, layers):
    torch.manual_seed(0)
    _check_roundtrip(getattr(torchvision.models, arch)(), layers, torch.rand(2, 3, 224, 224))


def test_efficientnet_lite_split(lite0):
    x = torch.rand(2, 3, 224, 224)
    sm = lite0._splittable
    expected = lite0.module(lite0.normalize(x))
    for name in ["bn2", "blocks.6", "blocks.5", "blocks.3", "conv_head"]:
        split = lite0.split(name)
        a, *fixed = split.head(lite0.normalize(x))
        torch.testing.assert_close(split.tail(a, *fixed), expected, rtol=1e-4, atol=1e-4)
    assert sm.layer_info("bn2").shape == (1280, 7, 7)
    assert sm.layer_info("blocks.6").shape == (320, 7, 7)


def test_linear_tail_flags(lite0, resnet50, vgg16):
    assert lite0.layer_info("bn2").linear_tail
    assert not lite0.layer_info("blocks.6").linear_tail
    assert resnet50.layer_info("layer4").linear_tail
    assert not resnet50.layer_info("layer4.1").linear_tail
    assert not vgg16.layer_info("features.29").linear_tail


def test_layer_inside_a_residual_block_is_refused(resnet18):
    with pytest.raises(LayerError, match="skip connection"):
        resnet18.split("layer4.1.conv1")


def test_unknown_and_reused_layers(resnet18):
    with pytest.raises(LayerError, match="no module named 'nope'"):
        resnet18.split("nope")
    with pytest.raises(LayerError, match="called 2 times"):
        resnet18.split("layer4.1.relu")  # torchvision reuses one ReLU module per block


def test_alias_keeps_the_callers_name(lite0):
    assert lite0.split("blocks.6").layer == "blocks.6"
    assert lite0.layer_info("blocks.6").shape == lite0.layer_info("blocks").shape


def test_inplace_relu_in_tail_does_not_touch_activations(vgg16):
    # features.28 is a conv; the tail starts with VGG's ReLU(inplace=True).
    split = vgg16.split("features.28")
    a, = split.head(vgg16.normalize(torch.rand(1, 3, 224, 224)))
    assert (a < 0).any()
    before = a.clone()
    split.tail(a)
    assert torch.equal(a, before)


def test_original_module_untouched(resnet18):
    relu = resnet18.module.layer4[1].relu
    resnet18.split("layer3")
    assert relu.inplace is True  # canonicalisation rewrites the traced graph only
    for m in resnet18.module.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks


@pytest.mark.parametrize("arch,start,end", [
    ("vgg16", "features.9", "features.29"),
    ("vgg16", "features.4", "features.22"),
    ("resnet18", "layer1", "layer4"),
    ("resnet18", "maxpool", "layer3"),
])
def test_segment_composes_with_the_head(arch, start, end):
    torch.manual_seed(0)
    module = getattr(torchvision.models, arch)().eval().requires_grad_(False)
    x = torch.rand(2, 3, 224, 224)
    sm = SplittableModel(module, [x[:1]])
    middle = sm.segment(start, end)
    first, = sm.split(start).head(x)
    last, = sm.split(end).head(x)
    torch.testing.assert_close(middle(first), last, rtol=1e-5, atol=1e-5)
    assert sm.segment(end, start) is None  # the later layer first
    assert sm.segment(start, start) is None


class _Film(torch.nn.Module):
    """Image maps scaled by a question vector between two layers (as the VQA model does)."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.b = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.c = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x, q):
        x = self.b(torch.relu(self.a(x)))
        x = self.c(x * q[:, :, None, None])
        return self.fc(x.mean((2, 3)))


def test_segment_refuses_to_read_a_held_fixed_input():
    module = _Film().eval()
    sm = SplittableModel(module, [torch.rand(1, 3, 8, 8), torch.rand(1, 4)])
    assert sm.segment("a", "b") is not None
    assert sm.segment("b", "c") is None  # c reads the question too


def test_head_activations_in_place_only_where_nothing_else_reads_the_input(resnet18):
    # The head runs its activations in place after convolutions and batch norms (faster on large
    # maps); the image, a residual branch's input and the values the tail reads stay intact.
    split = resnet18.split("layer3")
    inplace = [n for n in split.head.graph.nodes if n.kwargs.get("inplace") is True]
    assert inplace, "ResNet's ReLUs after batch norms should run in place"
    for node in inplace:
        assert len(node.args[0].users) == 1 and node.args[0].op in ("call_module", "call_function")
    x = torch.rand(2, 3, 224, 224)
    before = x.clone()
    a, = split.head(x)
    assert torch.equal(x, before)
    torch.testing.assert_close(split.tail(a), resnet18.module(x), rtol=1e-5, atol=1e-5)
    # Under autograd too (nothing in camlib needs it, but the head is public).
    x.requires_grad_(True)
    a, = split.head(x)
    a.sum().backward()
    grad = x.grad.clone()
    x.grad = None
    reference = {}
    handle = resnet18.module.layer3.register_forward_hook(lambda m, i, o: reference.setdefault("a", o))
    try:
        resnet18.module(x)
    finally:
        handle.remove()
    reference["a"].sum().backward()
    torch.testing.assert_close(grad, x.grad, rtol=1e-5, atol=1e-6)


def test_run_in_groups_feeds_each_stage_at_least_its_size():
    from camlib.engine.batching import run_in_groups
    calls = {"double": [], "plus": []}

    def double(x):
        calls["double"].append(x.shape[0])
        return x * 2

    def plus(x):
        calls["plus"].append(x.shape[0])
        return x + 1

    values = torch.arange(11.0)[:, None]
    chunks = ((torch.arange(i, min(i + 3, 11)), (values[i:i + 3],)) for i in range(0, 11, 3))
    out = list(run_in_groups([(double, 4), (plus, 7)], chunks))
    assert calls == {"double": [6, 5], "plus": [11]}  # 3+3 ≥ 4, then the rest; 6 < 7 waits for the end
    keys = torch.cat([k for k, _ in out])
    assert torch.equal(keys, torch.arange(11))
    assert torch.equal(torch.cat([v for _, v in out]), values * 2 + 1)
