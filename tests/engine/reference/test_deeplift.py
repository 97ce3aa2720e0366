"""LIFT-CAM's DeepLIFT: summation-to-delta, agreement with captum, the Rescale and max rules."""

import pytest
import torch
import torch.nn as nn

import camlib
from camlib.engine.reference.deeplift import UnsupportedTailError, contributions, deeplift_tail
from camlib.model import CamModel
from tests.numerics import assert_close_scaled, chain, fan_ins, local_accuracy_scale, tail_terms

pytestmark = pytest.mark.numerics


@pytest.mark.parametrize("layer", ["features.29", "features.22"])
def test_local_accuracy_vgg16(vgg16, images, layer):
    exp = camlib.explain(vgg16, images, "liftcam", layer=layer, target=[1, 500])
    total, delta = exp.info["local_accuracy"]
    # Σ of K = 512 contributions against a difference of two tail outputs (fc6-fc8: 25088, 4096,
    # 4096 terms; convolutions before them at features.22): twice the tail's chain + chain(K).
    rel = 2 * chain(*tail_terms(vgg16, layer, exp)) + chain(512)
    assert_close_scaled(total, delta, local_accuracy_scale(exp), rel, "Σα - ΔF")
    assert (delta.abs() > 0).all()


@pytest.mark.parametrize("layer", ["blocks.6", "blocks.5", "blocks.4"])
def test_local_accuracy_efficientnet_lite0_inner_blocks(lite0, chelsea, layer):
    exp = camlib.explain(lite0, chelsea, "liftcam", layer=layer)
    total, delta = exp.info["local_accuracy"]
    # As for VGG16: Lite0's tail after the layer, then the sum of its K contributions.
    rel = 2 * chain(*tail_terms(lite0, layer, exp)) + chain(exp.coefficients.numel())
    assert_close_scaled(total, delta, local_accuracy_scale(exp), rel, "Σα - ΔF")
    assert float(delta[0]) > 1.0  # a real, nonzero change of the cat logit


def test_matches_captum_deeplift_on_the_same_tail(vgg16):
    """captum (the paper's authors' tool) on VGG16's tail as an nn.Sequential with one ReLU
    module per call (captum needs modules to hook) and MaxPool2d: identical contributions."""
    from captum.attr import DeepLift

    vgg = vgg16.module
    tail = nn.Sequential(nn.MaxPool2d(2, 2), vgg.avgpool, nn.Flatten(),
                         vgg.classifier[0], nn.ReLU(), vgg.classifier[3], nn.ReLU(), vgg.classifier[6]).eval()
    torch.manual_seed(3)
    x = torch.rand(2, 3, 224, 224)
    exp = camlib.explain(vgg16, x, "liftcam", layer="features.29", target=[7, 300])
    a = exp.activations.clone().requires_grad_(True)
    attributions = DeepLift(tail).attribute(a, baselines=torch.zeros_like(a), target=[7, 300])
    # Both float32 through the tail's 25088, 4096, 4096 terms: twice its chain, of the larger of
    # max |α| and |Σα| per image (as in tests/methods/test_liftcam_oracles.py).
    expected = attributions.sum((2, 3)).detach()
    scale = torch.maximum(expected.abs().amax(1), expected.sum(1).abs())[:, None]
    assert_close_scaled(exp.coefficients, expected, scale, 2 * chain(*tail_terms(vgg16, "features.29", exp)),
                        "LIFT-CAM against captum")


def _model(tail: nn.Module, maps: int = 1, size=(2, 2)) -> CamModel:
    net = nn.Sequential(nn.Conv2d(3, maps, 1), tail)
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].bias.zero_()
        for i in range(maps):
            net[0].weight[i, i % 3] = 1.0
    return CamModel("toy", net, torch.device("cpu"), ["y", "z"], default_layer="0", input_size=size)


def test_relu6_uses_the_rescale_rule_not_the_gradient():
    # F(A) = 2 * relu6(sum A): with A = 8 in every cell relu6 saturates; its gradient is 0 but
    # its DeepLIFT multiplier is (6 - 0) / (32 - 0), so the contribution is 2 * 6 = 12.
    class Tail(nn.Module):
        def forward(self, a):
            s = a.sum((1, 2, 3))[:, None]
            return torch.cat([2 * nn.functional.relu6(s), s], 1)

    model = _model(Tail())
    x = torch.zeros(3, 2, 2)  # one image (no batch dimension)
    x[0] = 8.0
    exp = camlib.explain(model, x, "liftcam", target=0)
    assert exp.coefficients.tolist() == [pytest.approx(12.0, abs=1e-5)]
    gradcam = camlib.explain(model, x, "gradcam", target=0)
    assert gradcam.coefficients.tolist() == [0.0]


def test_max_rule_sums_to_delta_with_a_nonzero_reference_at_the_pool():
    # Bias before the pool makes the reference activation at the max pool nonzero.
    torch.manual_seed(0)
    tail = nn.Sequential(nn.Conv2d(4, 3, 1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3 * 2 * 2, 2))
    with torch.no_grad():
        tail[0].bias.copy_(torch.tensor([0.5, -0.2, 1.0]))
    model = _model(tail, maps=4, size=(4, 4))
    x = torch.rand(3, 3, 4, 4) * 2 - 0.5
    split = model.split()
    a, = split.head(model.normalize(x))
    dl = deeplift_tail(split.tail)
    c, out, ref = contributions(dl, a, torch.zeros_like(a[:1]), (), torch.tensor([0, 1, 0]))
    expected = (out - ref).gather(1, torch.tensor([[0], [1], [0]]))[:, 0]
    # Σ of 4·4·4 contributions against a difference of two outputs of a tail summing 4 and 12
    # terms: twice its chain + chain(64), of the outputs' size.
    scale = torch.maximum(out.abs().amax(1), ref.abs().amax(1))
    assert_close_scaled(c.sum((1, 2, 3)), expected, scale, 2 * chain(*fan_ins(split.tail, a)) + chain(64),
                        "Σ contributions - ΔF")


def test_product_of_two_activation_paths_is_refused():
    class SE(nn.Module):  # squeeze-and-excitation: x * sigmoid(mean(x))
        def forward(self, a):
            return (a * torch.sigmoid(a.mean((2, 3), keepdim=True))).sum((1, 2, 3))[:, None].repeat(1, 2)

    model = _model(SE())
    with pytest.raises(UnsupportedTailError, match="mul"):
        camlib.explain(model, torch.rand(1, 3, 2, 2), "liftcam")


@pytest.mark.parametrize("which", ["vgg16", "lite0"])
def test_stored_reference_equals_the_batched_reference(which, vgg16, lite0, chelsea):
    """LIFT-CAM runs the reference once per layer (no fixed inputs); contributions equal the
    [A; 0] batch form of deeplift.contributions, map by map."""
    model, layer = (vgg16, "features.29") if which == "vgg16" else (lite0, "blocks.5")
    torch.manual_seed(3)
    x = torch.rand(2, 3, 224, 224) if which == "vgg16" else chelsea
    exp = camlib.explain(model, x, "liftcam", layer=layer, target=[1, 2] if which == "vgg16" else 285)
    split = model.split(layer)
    a = exp.activations if exp.batched else exp.activations[None]
    target = exp.target.reshape(-1)
    contrib, logits, ref = contributions(deeplift_tail(split.tail), a, torch.zeros_like(a[:1]), (), target)
    # The same rules on batches of other compositions ([A; 0] against A alone): twice the tail's
    # chain, of max |α| and |ΔF| per image; the reference logit of the size of the logits.
    rel = 2 * chain(*tail_terms(model, layer, exp))
    expected = contrib.sum((2, 3))
    scale = torch.maximum(expected.abs().amax(1), expected.sum(1).abs())[:, None]
    assert_close_scaled(exp.coefficients.reshape(a.shape[0], -1), expected, scale, rel, "stored against batched")
    reference_logit = exp.info["reference_logit"]
    assert_close_scaled(reference_logit.reshape(-1), ref.gather(1, target[:, None])[:, 0],
                        torch.maximum(logits.abs().amax(1), ref.abs().amax(1)), rel, "reference logit")
