"""camlib.split: head ∘ tail reproduces the network, valid cuts only, graph hygiene."""

import pytest
import torch
import torchvision

from camlib.split import LayerError, SplittableModel


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
