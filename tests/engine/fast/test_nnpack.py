"""camlib.engine.fast.nnpack: NNPACK convolutions equal oneDNN's, only where eligible, and Score-CAM through
them gives the same coefficients."""

import threading

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from camlib.engine.fast import nnpack
from camlib.engine.quantities import Problem
from camlib.explain import explain
from tests.numerics import alpha_scale, assert_close_scaled, chain, fan_ins

pytestmark = [pytest.mark.skipif(not nnpack.available("cpu"), reason="this PyTorch or CPU has no NNPACK"),
              pytest.mark.numerics]

# NNPACK computes 3×3 convolutions by Winograd's F(6×6, 3×3) (Lavin & Gray, CVPR 2016): 8×8 input
# tiles transformed by matrices with entries up to 21/4, products summed over the input channels,
# and an output transform with entries up to 32. Those transforms amplify rounding errors: against
# float64 (the first test) NNPACK is off by up to 60·u·Σ|w x| where oneDNN's direct convolution of
# the same data is off by 3.6·u·Σ|w x|, and the direct estimate chain(144) is 36u. We count each
# NNPACK convolution as WINOGRAD = 8 direct ones (288u): the amplification of the transforms, from
# NNPACK's own kernels, which no MKL / oneDNN / ATen setting changes.
WINOGRAD = 8


@pytest.mark.parametrize("padding,bias,batch", [(1, True, 3), (0, True, 2), (1, False, 1), ((1, 0), True, 5)])
def test_convolution_equals_float64_reference(padding, bias, batch):
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 24, 3, padding=padding, bias=bias)
    assert nnpack.eligible(conv)
    x = torch.randn(batch, 16, 13, 11)
    expected = F.conv2d(x.double(), conv.weight.double(), None if conv.bias is None else conv.bias.double(),
                        padding=conv.padding)
    with torch.inference_mode():
        got = nnpack.NnpackConv2d(conv)(x.contiguous(memory_format=torch.channels_last))
    assert got.shape == expected.shape
    # 16·9 = 144 terms per output, against float64: Winograd's chain, of Σ |w x| + |b| per entry.
    terms = F.conv2d(x.double().abs(), conv.weight.double().abs(), None if conv.bias is None else conv.bias.double().abs(),
                     padding=conv.padding)
    assert_close_scaled(got, expected, terms, chain(*[16 * 9] * WINOGRAD), "NNPACK convolution")


def test_falls_back_to_the_module_when_nnpack_refuses(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("NNPACK SpatialConvolution_updateOutput failed")

    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    x = torch.randn(2, 4, 9, 9)
    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", refuse)
    with torch.inference_mode():
        torch.testing.assert_close(nnpack.NnpackConv2d(conv)(x), conv(x), rtol=0, atol=0)


@pytest.mark.parametrize("conv,ok", [
    (nn.Conv2d(4, 4, 3, padding=1), True),
    (nn.Conv2d(4, 4, 1), False),
    (nn.Conv2d(4, 4, 3, stride=2, padding=1), False),
    (nn.Conv2d(4, 4, 3, padding=2, dilation=2), False),
    (nn.Conv2d(4, 4, 3, padding=1, groups=4), False),
    (nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), False),
    (nn.Conv2d(4, 4, 3, padding="same"), False),
    (nn.Conv2d(4, 4, 3, padding=1).double(), False),
])
def test_eligible(conv, ok):
    assert nnpack.eligible(conv) is ok


def test_switched_off_by_the_environment_and_never_on_other_devices(monkeypatch):
    monkeypatch.setenv("CAMLIB_NNPACK", "0")
    assert not nnpack.available("cpu")
    monkeypatch.setenv("CAMLIB_NNPACK", "1")
    assert nnpack.available("cpu")
    assert not nnpack.available("meta")


def _stages(model):
    """nnpack.stages for the model's default layer (a problem of one blank image)."""
    split = model.split()
    with torch.inference_mode():
        a = split.head(torch.zeros(1, 3, *model.input_size))[0]
    return nnpack.stages(Problem(model, split, torch.zeros(1, 3, *model.input_size), (), a.clone(), ()))


def test_stages_cut_at_a_quarter_of_the_side_and_compose_to_the_network(make_small_vgg):
    model = make_small_vgg()
    split = model.split()
    head, middle, tail = _stages(model)
    names = [n for n, m in middle.named_modules() if isinstance(m, nnpack.NnpackConv2d)]
    assert names == ["features.6", "features.8"]  # after features.5, the 16×16 pooling output
    assert any(isinstance(m, nnpack.NnpackConv2d) for m in tail.modules())
    assert all(type(m) is nn.Conv2d for m in split.head.modules() if isinstance(m, nn.Conv2d))  # untouched
    x = torch.randn(6, 3, 64, 64)
    with torch.inference_mode():
        a, = split.head(x)
        staged = middle(*head(x))
        logits = model.module(x)
    # The middle's two 3×3 convolutions (144 terms each) by NNPACK against oneDNN's: Winograd's
    # chain for both, of max |A| (ReLU outputs: the terms of the next layer are of their size);
    # the tail adds a 3×3 convolution (NNPACK too) and an FC of 512 terms, of max |logits|.
    rel = 2 * chain(*[16 * 9] * (2 * WINOGRAD))
    assert_close_scaled(staged, a, a.abs().amax((1, 2, 3), keepdim=True), rel, "middle stage")
    rel_tail = rel + 2 * chain(*[16 * 9] * WINOGRAD, 512)
    scale = logits.abs().amax(1, keepdim=True)
    assert_close_scaled(tail(staged), split.tail(a), scale, rel_tail, "tail stage")
    assert_close_scaled(tail(staged), logits, scale, rel_tail, "the staged network")


def test_no_stages_where_a_convolution_is_not_eligible(resnet50, lite0, make_small_vgg):
    assert _stages(make_small_vgg(mixed=True)) is None
    assert _stages(resnet50) is None  # 1×1 convolutions in every block
    assert _stages(lite0) is None  # depthwise and 1×1 convolutions


def test_scorecam_through_nnpack_equals_scorecam_without(monkeypatch, make_small_vgg):
    model = make_small_vgg()
    torch.manual_seed(3)
    images = torch.rand(2, 3, 64, 64)
    calls = []
    forward = nnpack.NnpackConv2d.forward
    monkeypatch.setattr(nnpack.NnpackConv2d, "forward", lambda self, x: calls.append(x.shape[0]) or forward(self, x))
    fast = explain(model, images, "scorecam", batch_size=8)
    assert fast.info["backends"] == {"masked-input scores": "nnpack-stages"}
    assert calls and max(calls) == 8  # the middle on 8 masked images at once (batch_size < 32)
    monkeypatch.setenv("CAMLIB_NNPACK", "0")
    calls.clear()
    plain = explain(model, images, "scorecam", batch_size=8)
    assert plain.info["backends"] == {"masked-input scores": "network-passes"}
    assert not calls
    calls.clear()
    monkeypatch.setenv("CAMLIB_NNPACK", "1")
    reference = explain(model, images, "scorecam", batch_size=8, backend="reference")
    assert not calls and torch.equal(reference.coefficients, plain.coefficients)
    # Score-CAM's masked scores through three NNPACK convolutions: Winograd's chain for them,
    # twice (two float32 computations); α = softmax of the scores, per entry (tests/numerics.py).
    rel = 2 * (chain(*fan_ins(model.module, images[:1])) + chain(*[16 * 9] * (3 * WINOGRAD)))
    assert_close_scaled(fast.coefficients, plain.coefficients, alpha_scale("scorecam", plain), rel,
                        "Score-CAM through NNPACK")
    assert fast.coefficients.shape == (2, 16)


def test_concurrent_threads_share_the_rewritten_graphs(make_small_vgg):
    model = make_small_vgg()
    head, middle, tail = _stages(model)
    torch.manual_seed(4)
    inputs = [torch.randn(9, 3, 64, 64) for _ in range(4)]
    with torch.inference_mode():
        expected = [tail(middle(*head(x))) for x in inputs]
    results = [None] * len(inputs)

    def work(i):
        with torch.inference_mode():
            for _ in range(5):
                results[i] = tail(middle(*head(inputs[i])))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_no_stages_where_nnpack_is_switched_off(monkeypatch, make_small_vgg):
    model = make_small_vgg()
    monkeypatch.setenv("CAMLIB_NNPACK", "0")
    assert _stages(model) is None
