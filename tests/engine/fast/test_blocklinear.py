"""Grad-CAM, XGrad-CAM, Grad-CAM++ and LIFT-CAM through a "pooling → flatten → FC" tail
(camlib.engine.fast.blocklinear): the per-map sums from one read of the FC weights, and the gradients from its
active rows, equal autograd's, DeepLIFT's on the whole tail and captum's, with local accuracy; the
decomposition is found where it holds and only there."""

import pytest
import torch
import torch.nn as nn

import camlib
from camlib.engine.fast import blocklinear
from camlib.engine.kernels import blockdot
from camlib.engine.quantities import Problem
from camlib.model import CamModel
from tests.numerics import alpha_scale, assert_close_scaled, chain, fan_ins, tail_terms

pytestmark = [pytest.mark.skipif(not blockdot.available(), reason="numba is not installed"), pytest.mark.numerics]


@pytest.fixture(autouse=True)
def _small_weights_too(monkeypatch):
    """The tiny models' FC layers are far below the size from which the path is used."""
    monkeypatch.setattr(blocklinear, "MIN_WEIGHT_NUMEL", 0)


def _explain_both(model, images, method, layer):
    """(the block-linear backend's explanation, the reference backends'), checking which ran."""
    fast = camlib.explain(model, images, method, layer=layer)
    slow = camlib.explain(model, images, method, layer=layer, backend="reference")
    assert set(fast.info["backends"].values()) == {"block-linear"}
    assert set(slow.info["backends"].values()) <= {"autograd", "deeplift-rewrite"}
    return fast, slow


def _problem(model, layer, images, fixed=()) -> Problem:
    split = model.split(layer)
    with torch.inference_mode():
        a = split.head(model.normalize(images))[0]
    return Problem(model, split, images, (), a.clone(), fixed)


def _gradient_pass(model, layer, images, needs=("sum",)):
    problem = _problem(model, layer, images)
    return blocklinear.gradient_pass(problem.split, blocklinear.applicable(problem), problem.activations, needs)


CASES = [(False, "features"), (False, "features.2"), (True, "features"), (True, "features.2")]


@pytest.mark.parametrize("norm, layer", CASES)
@pytest.mark.parametrize("method", ["gradcam", "xgradcam", "gradcampp", "liftcam"])
def test_block_linear_path_equals_autograd_and_whole_tail_deeplift(norm, layer, method, make_tiny_vgg):
    model = make_tiny_vgg(norm)
    torch.manual_seed(2)
    images = torch.rand(2, 3, 16, 16)
    fast, slow = _explain_both(model, images, method, layer)
    assert fast.coefficients.abs().max() > 1e-3  # not a trivially zero case
    # The same tail (96, 10 and 8 terms) by two summation orders, both float32: twice its chain,
    # of max |α| per image (gradient terms) and of max |logits| (the terms of the last layer).
    rel = 2 * chain(*tail_terms(model, layer, fast))
    assert_close_scaled(fast.coefficients, slow.coefficients, alpha_scale(method, slow), rel, f"{method} α")
    logits = slow.logits.abs().amax(1, keepdim=True)
    assert_close_scaled(fast.logits, slow.logits, logits, rel, "logits")
    if method == "liftcam":  # local accuracy (Eq. 8): Σα = F^c(A) - F^c(0)
        total, delta = fast.info["local_accuracy"]
        # Σ of K = 6 α's (their chain on top) against a difference of two logits.
        reference = slow.info["reference_logit"].reshape(-1, 1).abs()
        assert_close_scaled(total, delta, torch.maximum(logits, reference)[:, 0], rel + chain(6), "Σα - ΔF")
        assert_close_scaled(fast.info["reference_logit"], slow.info["reference_logit"],
                            torch.maximum(logits, reference)[:, 0], rel, "F^c(0)")


def test_directions_take_the_cheap_forms_only_where_they_hold(make_tiny_vgg):
    torch.manual_seed(2)
    images = torch.rand(1, 3, 16, 16)
    # Pools only: T = 1 on each map (block sums S), U = x (the one kernel pass gives h too).
    state = _gradient_pass(make_tiny_vgg(False), "features", images)
    assert state.x is None  # no graph through φ unless the full gradients are needed
    scale, sums = state.directions["sum"]
    assert torch.equal(scale, torch.ones_like(scale)) and sums.shape == (6, 10)
    # ReLU first: T is the ReLU's 0/1 pattern, no longer constant on a map: a kernel row.
    state = _gradient_pass(make_tiny_vgg(False), "features.2", images)
    assert isinstance(state.directions["sum"], torch.Tensor) and state.directions["sum"].shape == (1, 6, 10)
    # Batch norm first: T = γ/σ on each map (scaled S), U ≠ x.
    model = make_tiny_vgg(True)
    scale, _ = _gradient_pass(model, "features", images).directions["sum"]
    bn = model.module.norm
    torch.testing.assert_close(scale[0], bn.weight / torch.sqrt(bn.running_var + bn.eps))


def test_matches_captum_deeplift_on_vgg16_features29(vgg16, monkeypatch):
    """One image of VGG16 (random weights), the issue's case: the block-linear LIFT-CAM equals
    captum's DeepLift on the tail as an nn.Sequential, and Grad-CAM / XGrad-CAM equal autograd."""
    from captum.attr import DeepLift

    vgg = vgg16.module
    torch.manual_seed(3)
    x = torch.rand(1, 3, 224, 224)
    exp = camlib.explain(vgg16, x, "liftcam", layer="features.29", target=[300])
    assert exp.info["backends"] == {"DeepLIFT contributions": "block-linear"}
    tail = nn.Sequential(nn.MaxPool2d(2, 2), vgg.avgpool, nn.Flatten(),
                         vgg.classifier[0], nn.ReLU(), vgg.classifier[3], nn.ReLU(), vgg.classifier[6]).eval()
    a = exp.activations.clone().requires_grad_(True)
    attributions = DeepLift(tail).attribute(a, baselines=torch.zeros_like(a), target=[300])
    # The tail sums 25088, 4096 and 4096 terms (fc6, fc7, fc8): twice its chain (1.0e-4) of the
    # largest of max |α| and the logit change Σα (as in tests/methods/test_liftcam_oracles.py).
    rel = 2 * chain(*tail_terms(vgg16, "features.29", exp))
    expected = attributions.sum((2, 3)).detach()
    scale = max(expected.abs().max().item(), abs(expected.sum().item()))
    assert_close_scaled(exp.coefficients, expected, scale, rel, "LIFT-CAM against captum")
    for method in ("gradcam", "xgradcam", "gradcampp"):
        fast, slow = _explain_both(vgg16, x, method, "features.29")
        assert_close_scaled(fast.coefficients, slow.coefficients, alpha_scale(method, slow), rel, method)


def test_batches_beyond_max_images_take_the_autograd_path(monkeypatch, make_tiny_vgg):
    model = make_tiny_vgg(False)
    torch.manual_seed(4)
    images = torch.rand(blocklinear.MAX_IMAGES + 1, 3, 16, 16)
    together = camlib.explain(model, images, "gradcam")
    assert together.info["backends"] == {"gradient sums": "autograd"}
    alone = torch.stack([camlib.explain(model, image, "gradcam").coefficients for image in images])
    # The whole network in batches of other sizes: twice its chain, of max |α| per image.
    rel = 2 * chain(*fan_ins(model.module, images[:1]))
    assert_close_scaled(together.coefficients, alone, alpha_scale("gradcam", together), rel, "batch against alone")


def test_find_only_where_the_tail_has_that_form(tiny, lite0, monkeypatch, make_tiny_vgg):
    k = 6
    found = blocklinear.find(make_tiny_vgg(False).split("features").tail, k)
    assert found is not None and found.linear.in_features == 6 * 16
    # TinyNet mixes the maps with a 1x1 convolution before its FC layers.
    assert blocklinear.find(tiny.split("features").tail, k) is None
    # EfficientNet-Lite0's last layer: global pooling then its classifier (P = 1 value per map).
    found = blocklinear.find(lite0.split(lite0.default_layer).tail, 1280)
    assert found is not None and found.linear.in_features == 1280
    # An input held fixed (a VQA question) or a GPU batch: the autograd path.
    model = make_tiny_vgg(False)
    images = torch.zeros(1, 3, 16, 16)
    assert blocklinear.applicable(_problem(model, "features", images, (torch.zeros(1, 4),))) is None
    assert blocklinear.applicable(_problem(model, "features", images)) is not None
    monkeypatch.setattr(blocklinear, "MIN_WEIGHT_NUMEL", 6 * 16 * 10 + 1)  # a classifier this small: autograd
    assert blocklinear.applicable(_problem(model, "features", images)) is None


def test_concurrent_calls_share_one_model(monkeypatch, make_tiny_vgg):
    """App sessions share a model: threads explaining at once get what each gets alone."""
    import concurrent.futures

    model = make_tiny_vgg(True)
    torch.manual_seed(5)
    images = torch.rand(8, 3, 16, 16)
    cases = [(images[i], method, layer) for i in range(8)
             for method, layer in (("gradcam", "features.2"), ("xgradcam", "features"), ("liftcam", "features"),
                                   ("gradcampp", "features"))]
    alone = [camlib.explain(model, image, method, layer=layer).coefficients for image, method, layer in cases]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda case: camlib.explain(model, case[0], case[1], layer=case[2]).coefficients,
                                 cases))
    # The same computations from threads sharing torch's intra-op pool (its splits of a sum may
    # differ): twice the network's chain, of max |α|.
    rel = 2 * chain(*fan_ins(model.module, images[:1]))
    for (_, method, layer), a, b in zip(cases, alone, together):
        assert_close_scaled(b, a, a.abs().max(), rel, f"{method} at {layer} from a thread")


def test_alexnet_overlapping_pools(monkeypatch):
    """torchvision's AlexNet (random weights): overlapping 3x3 / stride-2 max pooling, then an
    adaptive average pooling and a 9216 → 4096 FC layer. All four methods equal autograd's."""
    import torchvision

    monkeypatch.setattr(blocklinear, "MIN_WEIGHT_NUMEL", 1 << 24)  # AlexNet's 37.7 M weights qualify as they are
    torch.manual_seed(0)
    net = torchvision.models.alexnet(weights=None).eval()
    model = CamModel("alexnet", net, torch.device("cpu"), [str(i) for i in range(1000)],
                     default_layer="features.11", input_size=(224, 224))
    x = torch.rand(1, 3, 224, 224)
    for method in ("gradcam", "xgradcam", "gradcampp", "liftcam"):
        fast, slow = _explain_both(model, x, method, "features.11")
        # AlexNet's tail: pooling, fc 9216, 4096, 4096: twice its chain, of max |α|.
        rel = 2 * chain(*tail_terms(model, "features.11", fast))
        assert_close_scaled(fast.coefficients, slow.coefficients, alpha_scale(method, slow), rel, method)
