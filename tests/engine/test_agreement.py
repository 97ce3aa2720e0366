"""Every fast backend against its reference backend, on every kind of tail it claims.

One case per (fast backend, tail shape it is built for): the same explanation with the engine's
choice (``backend="auto"``) and with the reference backends forced (``backend="reference"``). The
test checks that the fast backend really ran (``Explanation.info["backends"]``), that the reference
really ran instead, and that the coefficients agree.

Tolerance. Both compute the same quantity in float32 along different summation orders (one read
of an FC layer by blocks against a full matrix product; a stored reference against the batch
[A; 0]; running sums of per-map contributions against masked tail passes; NNPACK's Winograd
convolutions against oneDNN's). Each output is a chain of at most three layers of dot products of
at most ~25,000 terms, whose float32 rounding error is of order √N·u ≈ 1e-5 of the magnitudes
summed per layer (u = 2⁻²⁴), a few times over for the chain. The magnitude that matters is that
of the values the method combines, per image (tests/numerics.py: alpha_scale): for gradient and
DeepLIFT methods max |α|; for SHAP-CAM the logits it differences (α_k is a mean of differences of
tail values |F^c| ≫ |α_k|), for Ablation-CAM the same over |F^c(A)| (its α is divided by it), for
Score-CAM 2 α_k max |logits| per entry (a softmax of masked scores of the logits' size). So the
test asserts |α_fast - α_reference| ≤ 1e-4 · scale, an order of magnitude above that estimate and
far below any real error (a wrong rule or a lost map moves α by a sizeable fraction of the scale;
assert_close_scaled checks that the tolerance stays below 1 % of max |α|).
"""

import pytest
import torch

import camlib
from camlib.engine.fast import blocklinear
from tests.numerics import alpha_scale, assert_close_scaled

pytestmark = pytest.mark.numerics

REFERENCE = {"autograd", "deeplift-rewrite", "naive-coalitions", "network-passes"}
RTOL = 1e-4

# (fast backend, model fixture, layer, method, images, options)
CASES = [
    # block-linear: "channel-wise φ -> flatten -> a large FC layer" tails, 1-2 images on the CPU
    ("block-linear", "tiny_vgg", "features", "gradcam", 1, {}),
    ("block-linear", "tiny_vgg", "features.2", "xgradcam", 2, {}),  # a ReLU inside φ
    ("block-linear", "tiny_vgg_bn", "features", "gradcampp", 1, {}),  # batch norm inside φ
    ("block-linear", "tiny_vgg_bn", "features.2", "liftcam", 2, {}),
    ("block-linear", "vgg16", "features.29", "liftcam", 1, {}),  # the VGG16 case
    # stored zero reference: any tail without held-fixed inputs
    ("stored-reference", "tiny", "features", "liftcam", 3, {}),  # max pooling, a reused ReLU
    ("stored-reference", "lite0", "blocks.6", "liftcam", 1, {}),  # ReLU6, depthwise convolutions
    ("stored-reference", "resnet18", "layer3", "liftcam", 1, {}),  # residual additions
    ("stored-reference", "vgg16", "features.22", "liftcam", 3, {}),
    # fast coalitions: closed form on linear tails, Sep/Add interpretation, the clamp-readout kernel
    ("fast-coalitions", "tiny", "features", "shapcam", 2, {"permutations": 3}),
    ("fast-coalitions", "tiny", "features", "ablationcam", 2, {}),
    ("fast-coalitions", "lite0", "bn2", "ablationcam", 1, {}),  # linear: closed form
    ("fast-coalitions", "lite0", "blocks.6", "shapcam", 1, {"permutations": 2}),  # the fused kernel
    ("fast-coalitions", "resnet18", "layer4.0", "shapcam", 1, {"permutations": 1}),  # residual, clamp readout
    # NNPACK stages: VGG-like middles of 3×3 convolutions, on the CPU
    ("nnpack-stages", "small_vgg", "features", "scorecam", 2, {}),
]


@pytest.fixture
def models(request, make_tiny_vgg, make_small_vgg, monkeypatch):
    """Model by name; the tiny VGGs' FC layers are far below the block-linear backend's size limit,
    which the test lifts for them."""
    def get(name):
        if name.startswith("tiny_vgg"):
            monkeypatch.setattr(blocklinear, "MIN_WEIGHT_NUMEL", 0)
            return make_tiny_vgg(name.endswith("_bn"))
        if name == "small_vgg":
            return make_small_vgg()
        return request.getfixturevalue(name)
    return get


@pytest.mark.parametrize("backend, model_name, layer, method, n, options", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}-{c[3]}" for c in CASES])
def test_fast_backend_equals_reference(models, backend, model_name, layer, method, n, options):
    model = models(model_name)
    torch.manual_seed(7)
    images = torch.rand(n, 3, *model.input_size)
    fast = camlib.explain(model, images, method, layer=layer, **options)
    reference = camlib.explain(model, images, method, layer=layer, backend="reference", **options)
    assert backend in fast.info["backends"].values(), fast.info["backends"]
    assert set(reference.info["backends"].values()) <= REFERENCE, reference.info["backends"]
    assert torch.equal(fast.target, reference.target)
    scale = alpha_scale(method, reference)
    assert (scale > 0).any()
    assert_close_scaled(fast.coefficients.reshape(n, -1), reference.coefficients.reshape(n, -1), scale, RTOL,
                        f"{backend} {method} against the reference")


def test_reference_is_forced_by_the_environment(tiny, monkeypatch):
    image = torch.rand(3, 16, 16)
    monkeypatch.setenv("CAMLIB_BACKEND", "reference")
    assert camlib.explain(tiny, image, "liftcam").info["backends"] == {"DeepLIFT contributions": "deeplift-rewrite"}
    monkeypatch.setenv("CAMLIB_BACKEND", "auto")
    assert camlib.explain(tiny, image, "liftcam").info["backends"] == {"DeepLIFT contributions": "stored-reference"}
    monkeypatch.setenv("CAMLIB_BACKEND", "fastest")
    with pytest.raises(ValueError, match="backend must be one of auto, reference"):
        camlib.explain(tiny, image, "liftcam")
