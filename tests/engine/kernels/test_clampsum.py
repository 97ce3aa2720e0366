"""The fused clamp-readout kernel (camlib.engine.kernels.clampsum) against plain tensor arithmetic, and through
FastCoalitions against the tensor path, the naive tail passes and exact Shapley values."""

import itertools
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import camlib
from camlib.engine.kernels import clampsum
from camlib.engine.fast.coalitions import FastCoalitions
from camlib.engine.reference.coalitions import NaiveCoalitions
from camlib.methods.shapley import exact_shapley, sample_permutations
from camlib.model import CamModel
from tests.numerics import U, alpha_scale, assert_close_scaled, chain, fan_ins

pytestmark = [pytest.mark.skipif(not clampsum.available(), reason="numba is not installed"), pytest.mark.numerics]


def _reference(base, d, orders, weight, lo, hi, absolute=False):
    """Eq. (1) of camlib.engine.kernels.clampsum without c, by cumulative sums in float64; with
    ``absolute``, Σ_m |V_m clamp(S_j[m])| instead (the magnitude of the terms summed)."""
    out = []
    for order in orders:
        s = torch.cat([base[None], base[None] + torch.cumsum(d[order], 0)]).double()
        s = s.clamp(lo, hi)
        out.append(s.abs() @ weight.double().abs() if absolute else s @ weight.double())
    return torch.stack(out)


@pytest.mark.parametrize("lo, hi", [(0.0, 6.0), (0.0, math.inf), (-1.0, 1.0), (-math.inf, 0.5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_prefix_readout_equals_cumulative_sums(lo, hi, dtype):
    generator = torch.Generator().manual_seed(0)
    k, m = 7, 2 * clampsum.BLOCK + 37  # several blocks, the last one partial
    base = torch.randn(m, generator=generator, dtype=dtype)
    d = torch.randn(k, m, generator=generator, dtype=dtype)
    weight = torch.randn(m, generator=generator, dtype=dtype)
    orders = sample_permutations(k, 5, seed=1)
    got = clampsum.prefix_readout(base, d, orders, weight, lo, hi)
    assert got.shape == (5, k + 1) and got.dtype == torch.float64
    # Error, in units of the kernel dtype's roundoff: S_j[m] is a running sum of up to k + 1 terms,
    # off by √(k + 1)·(|base_m| + Σ_k |d_km|), which |V_m| carries into the readout (clamps are
    # 1-Lipschitz); each block accumulates its 1024 products V_m·clamp(S_j[m]) in that dtype,
    # off by √1024·Σ_m |V_m clamp(S_j[m])|; blocks are added in float64. Against float64 sums.
    unit = U if dtype == torch.float32 else 2.0 ** -53
    running = (weight.double().abs() * (base.double().abs() + d.double().abs().sum(0))).sum()
    readout = _reference(base, d, orders, weight, lo, hi, absolute=True)
    scale = math.sqrt(k + 1) * running + math.sqrt(clampsum.BLOCK) * readout
    assert_close_scaled(got, _reference(base, d, orders, weight, lo, hi), scale, unit, "prefix readout")
    # Blocks split over threads give the same per-block sums as one thread, added in float64 in
    # another order: float64 rounding of the same scale.
    one = clampsum.prefix_readout(base, d, orders, weight, lo, hi, threads=1)
    assert_close_scaled(clampsum.prefix_readout(base, d, orders, weight, lo, hi, threads=3), one, scale,
                        2.0 ** -53, "three threads against one")
    # Prefix 0 is the base alone, the last prefix holds every map whatever the order (summed in
    # another order: twice the bound above).
    assert_close_scaled(got[:, 0], (base.double().clamp(lo, hi) @ weight.double()).expand(5), scale[:, 0], unit,
                        "prefix 0")
    assert_close_scaled(got[:, -1], got[0, -1].expand(5), 2 * scale[:, -1], unit, "the full coalition in every order")


class ClampHeadNet(nn.Module):
    """16x16 input, 6 maps of 8x8 at ``features``, then EfficientNet's head in small: 1x1 conv,
    batch norm, an elementwise clamp, global average pooling, a linear classifier."""

    def __init__(self, act: str):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU())
        self.conv_head = nn.Conv2d(6, 5, 1, bias=False)
        self.bn = nn.BatchNorm2d(5)
        self.act = act
        self.hardtanh = nn.Hardtanh(-0.5, 0.5)
        self.classifier = nn.Linear(5, 3)

    def forward(self, x):
        x = self.bn(self.conv_head(self.features(x)))
        if self.act == "relu6":
            x = F.relu6(x)
        elif self.act == "relu":
            x = torch.relu(x)
        elif self.act == "hardtanh":
            x = self.hardtanh(x)
        else:  # "sigmoid": not a clamp, the kernel must not apply
            x = torch.sigmoid(x)
        return self.classifier(x.mean((2, 3)))


def _clamp_head_model(act: str) -> CamModel:
    torch.manual_seed(0)
    net = ClampHeadNet(act)
    for p in net.parameters():
        nn.init.normal_(p, std=0.7)
    net.bn.running_mean.normal_(0, 0.5)
    net.bn.running_var.uniform_(0.5, 2.0)
    return CamModel("clamphead", net.eval(), torch.device("cpu"), ["a", "b", "c"], default_layer="features",
                    input_size=(16, 16))


def _games(model):
    torch.manual_seed(1)
    image = torch.rand(3, 16, 16)
    split = model.split("features")
    with torch.inference_mode():
        a = split.head(model.normalize(image[None]))[0]
        target = int(model.module(model.normalize(image[None])).argmax())
    return (FastCoalitions(split.tail, a, (), target), FastCoalitions(split.tail, a, (), target, kernel=False),
            NaiveCoalitions(split.tail, a, (), target), image, target)


@pytest.mark.parametrize("act, bounds", [("relu6", (0.0, 6.0)), ("relu", (0.0, math.inf)),
                                         ("hardtanh", (-0.5, 0.5))])
def test_kernel_equals_tensor_path_naive_passes_and_exact_shapley(act, bounds):
    kernel, tensor, naive, image, target = _games(_clamp_head_model(act))
    assert kernel.readout is not None and kernel.readout[:2] == bounds
    assert tensor.readout is None
    orders = torch.tensor(list(itertools.permutations(range(6))))  # all 720 orderings
    values = kernel.prefix_values_many(orders)
    assert values.shape == (720, 7)
    # The same tail values three ways in float32 (fused kernel, tensor running sums, masked tail
    # passes through 6, 1, 64 and 5 terms): twice the tail's chain, of the size of the values.
    model = _clamp_head_model(act)
    split = model.split("features")
    with torch.inference_mode():
        a = split.head(model.normalize(image[None]))[0]
    rel = 2 * chain(*fan_ins(split.tail, a))
    scale = values.abs().max()
    assert_close_scaled(values, tensor.prefix_values_many(orders), scale, rel, "kernel against tensor path")
    assert_close_scaled(values[:10], naive.prefix_values_many(orders[:10]), scale, rel, "kernel against tail passes")
    # Averaged over every ordering, the marginal contributions are the exact Shapley values (Eq. 6).
    steps = values.double()[:, 1:] - values.double()[:, :-1]
    phi = torch.zeros(720, 6, dtype=torch.float64).scatter_(1, orders, steps).mean(0)
    exact = exact_shapley(naive.values, 6)
    assert_close_scaled(phi, exact, scale, rel, "Shapley values by all orderings")
    assert exact.abs().max() > 0.05  # a nontrivial game
    # A few clamps must be active, or the test would not exercise the kernel's bounds.
    lo, hi, weight, _ = kernel.readout
    add = kernel.env[kernel.boundary[0]]
    s = add.base.reshape(-1) + torch.cumsum(add.d.reshape(6, -1)[orders[0]], 0)
    assert ((s < lo) | (s > hi)).any() and ((s > lo) & (s < hi)).any()


def test_shapcam_uses_the_kernel_and_matches_the_naive_path():
    model = _clamp_head_model("relu6")
    _, _, _, image, target = _games(model)
    fast = camlib.explain(model, image, "shapcam", permutations=20, seed=3)
    naive = camlib.explain(model, image, "shapcam", permutations=20, seed=3, backend="reference")
    # Means (float64) of differences of float32 tail values computed two ways: twice the tail's chain.
    split = model.split("features")
    rel = 2 * chain(*fan_ins(split.tail, fast.activations[None]))
    assert_close_scaled(fast.info["running"], naive.info["running"], fast.logits.abs().max(), rel, "running estimates")


def test_kernel_only_where_it_applies(vgg16):
    model = _clamp_head_model("sigmoid")
    split = model.split("features")
    with torch.inference_mode():
        a = split.head(model.normalize(torch.rand(1, 3, 16, 16)))[0]
    assert FastCoalitions(split.tail, a, (), 0).readout is None
    with pytest.raises(ValueError, match="does not apply"):
        FastCoalitions(split.tail, a, (), 0, kernel=True)
    # VGG16's last ReLU: two hidden FC layers with ReLUs follow, not a linear readout.
    torch.manual_seed(0)
    split = vgg16.split("features.29")
    with torch.inference_mode():
        a = split.head(vgg16.normalize(torch.rand(1, 3, 224, 224)))[0]
    assert FastCoalitions(split.tail, a, (), 0).readout is None


def test_lite0_inner_block_uses_the_kernel(lite0, chelsea):
    split = lite0.split("blocks.6")
    with torch.inference_mode():
        a = split.head(lite0.normalize(lite0.to_batch(chelsea)[0]))[0]
    kernel = FastCoalitions(split.tail, a, (), 281)
    assert kernel.readout is not None and kernel.readout[:2] == (0.0, 6.0)
    orders = sample_permutations(a.shape[1], 3, seed=0)
    naive = NaiveCoalitions(split.tail, a, (), 281)
    # Lite0's tail from blocks.6 sums 320, 49 and 1280 terms: twice its chain, of the size of the
    # values and of the logits (the terms of the classifier).
    expected = naive.prefix_values_many(orders)
    with torch.inference_mode():
        logits = split.tail(a)
    rel = 2 * chain(*fan_ins(split.tail, a))
    scale = max(expected.abs().max().item(), logits.abs().max().item())
    assert_close_scaled(kernel.prefix_values_many(orders), expected, scale, rel, "kernel against tail passes")


def test_kernel_is_safe_from_concurrent_threads():
    """App sessions share one model: SHAP-CAM through the kernel from 4 threads at once gives what
    it gives alone."""
    import concurrent.futures

    model = _clamp_head_model("relu6")
    *_, image, _ = _games(model)
    alone = [camlib.explain(model, image, "shapcam", permutations=32, seed=s).coefficients for s in range(4)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda s: camlib.explain(model, image, "shapcam", permutations=32,
                                                          seed=s).coefficients, range(4)))
    # The same computations from threads (torch's intra-op splits may differ): twice the tail's
    # chain, of the size of the logits (SHAP-CAM differences tail values).
    probe = camlib.explain(model, image, "shapcam", permutations=1)
    rel = 2 * chain(*fan_ins(model.split("features").tail, probe.activations[None]))
    for a, b in zip(alone, together):
        assert_close_scaled(b, a, alpha_scale("shapcam", probe)[0], rel, "SHAP-CAM from a thread")
    assert not torch.allclose(alone[0], alone[1])  # different seeds, different estimates
