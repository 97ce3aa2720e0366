"""LRP-CAM (camlib/methods/lrpcam.py): α_k = Σ_ij R(A_k(i, j)), LRP-ε relevance through the tail.

Oracles:

* captum 0.9's ``LRP`` (the authors' code runs it on the tail) on tails where its rules apply:
  VGG16 (every bias random) at features.30 / 29 (the authors' own tail module) / 22, ResNet50
  (batch norms with random statistics and affine parts, fc bias random) at layer4 / layer4.1 /
  layer3 with captum's ``Addition_Module`` for the residual sums, EfficientNet-Lite0 (pretrained) at
  blocks.6 / blocks.6.0.bn2 with captum's ``IdentityRule`` on ReLU6, the VQA model with the question
  held fixed (its product with the question as a module with an ``EpsilonRule``); each at captum's
  ε = 1e-9 and at ε = 0.25, where the biases' and batch norms' absorption changes α;
* LRP-0 = gradient × input on tails whose activations are ReLUs (ε → 0: the ε-rule's R_z / z is
  then the gradient, Ancona et al. 2018), with biases;
* the closed form α_k = w_ck·mean(A_k)·F/(F + ε)·m_k/(m_k + ε) on a pooling + linear tail;
* conservation Σ_k α_k = F^c(A) where no bias or batch-norm shift absorbs relevance;
* determinism, batch = one at a time, threads sharing one model.

Tolerances: α_k sums relevances that passed through a few layers of dot products of up to
K = 25088 terms (VGG16's fc6; 4608 for a 3x3 convolution over 512 channels). Float32 rounds such a
sum by about sqrt(K)·u ≈ 1e-5 of the sum of the |terms| (u = 2**-24; probabilistic bound, the
deterministic K·u is 1.5e-3), and a few layers chain: 3e-5 of the magnitude of the relevance that
flows. That magnitude is not |α| nor |F^c|: LRP's relevances have both signs and cancel (on
ResNet50 here Σ_k |α_k| is 20 times |F^c(A)|), so the scale is S = max(Σ_k |α_k|, |F^c(A)|) and two
computations of the same α in a different order of operations (captum's hooks, another batch size)
agree to _NET_RTOL·S = 3e-5·S (measured when written: camlib and captum <= 1e-7·S, a batch of 4
against one image <= 2e-6·S). Each test that can only fail through a wrong rule also asserts that
the alternative (gradient × input where it differs, captum's plain sums) misses by more than 10
tolerances.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn as nn

import camlib
from camlib.methods import Cost, get_method
from camlib.methods.base import Need

_NET_RTOL = 3e-5
EPSILONS = (1e-9, 0.25)

captum_hooks = pytest.mark.filterwarnings("ignore:Setting forward, backward hooks:UserWarning")


def _scale(alpha: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """S per image: max(Σ_k |α_k|, |F^c(A)|), the magnitude of the relevance that is summed."""
    return torch.maximum(alpha.abs().sum(1), output.abs()).double()


def _assert_rows_close(actual: torch.Tensor, expected: torch.Tensor, scale: torch.Tensor, rtol: float = _NET_RTOL):
    err = (actual.double() - expected.double()).abs().amax(1)
    assert (err <= rtol * scale).all(), f"max |error| / S = {(err / scale).tolist()} > {rtol}"


def _with_epsilon(tail: nn.Module, eps: float) -> nn.Module:
    """``tail`` with captum's ε-rule of stabiliser ``eps`` on every module it gives one by default
    (and on BatchNorm1d and the product modules here, which it has no default for)."""
    from captum.attr._utils.lrp_rules import EpsilonRule

    from captum.attr._utils.custom_modules import Addition_Module

    for module in tail.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d, nn.MaxPool2d, nn.AvgPool2d,
                               nn.AdaptiveAvgPool2d, Addition_Module, _Scale)):
            module.rule = EpsilonRule(eps)
    return tail.eval()


def _captum(tail: nn.Module, a: torch.Tensor, target, eps: float) -> torch.Tensor:
    from captum.attr import LRP

    a = a.detach().clone().requires_grad_(True)
    return LRP(_with_epsilon(tail, eps)).attribute(a, target=target).detach().sum((2, 3))


def _gradient_x_input(tail: nn.Module, a: torch.Tensor, target) -> torch.Tensor:
    a = a.detach().clone().requires_grad_(True)
    rows = torch.arange(a.shape[0])
    (grad,) = torch.autograd.grad(tail(a)[rows, torch.as_tensor(target)].sum(), a)
    return (grad * a).detach().sum((2, 3))


def _against_captum(exp, tail: nn.Module, target, eps: float, relu_tail: bool = True):
    """camlib's α against captum's on ``tail``; the recorded output is F^c(A); on a ReLU tail,
    ε = 1e-9 is gradient × input and ε = 0.25 is more than 10 tolerances from it (so the test can
    fail)."""
    expected = _captum(tail, exp.activations, target, eps)
    total, output = exp.info["conservation"]
    rows = torch.arange(exp.logits.shape[0])
    torch.testing.assert_close(output, exp.logits[rows, torch.as_tensor(target)], rtol=0, atol=0)
    scale = _scale(expected, output)
    _assert_rows_close(exp.coefficients, expected, scale)
    torch.testing.assert_close(total, exp.coefficients.sum(1))
    if relu_tail:
        gxi = _gradient_x_input(tail, exp.activations, target)
        if eps < 1e-6:
            _assert_rows_close(exp.coefficients, gxi, scale)
        else:
            assert ((exp.coefficients - gxi).abs().amax(1) > 10 * _NET_RTOL * scale).all()


def test_metadata():
    m = get_method("LRP-CAM")
    assert m is get_method("lrp") and m.key == "lrpcam"
    assert m.needs == frozenset({Need.LRP}) and m.cost is Cost.ONE_PASS and m.evaluations(512) == 1
    assert not m.default and not m.paper
    option = m.option("epsilon")
    assert option.default == 1e-9 and option.minimum > 0
    with pytest.raises(ValueError, match="epsilon"):
        m.resolve_options({"epsilon": -1.0})
    assert list(camlib.list_methods()).index("lrpcam") == list(camlib.list_methods()).index("liftcam") + 1


# ------------------------------------------------------------------------------------------------
# VGG16 with random biases
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vgg16_biased():
    """camlib's VGG16 with random weights (seeded) and every bias ~ N(0, 0.2²): the pre-activations'
    spread without biases is 0.35-0.47 (convolutions), 0.47 and 0.21 (fc6, fc7), so the biases are
    a sizeable part of every z and ε = 0.25 absorbs a visible share of the relevance."""
    torch.manual_seed(0)
    model = camlib.load_model("vgg16", device="cpu", weights=None)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for m in model.module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
    torch.manual_seed(1)
    return model, torch.rand(3, 3, 224, 224)


class _AuthorsVGGTail(nn.Module):
    """The authors' tail after VGG16's features.29 (``Model_Part`` in their Explanation.py): the last
    max pool, the average pool, a view, torchvision's classifier (in-place ReLUs, dropout)."""

    def __init__(self, vgg):
        super().__init__()
        self.max_pool, self.avg_pool, self.classifier = vgg.features[-1:], vgg.avgpool, vgg.classifier

    def forward(self, x):
        x = self.avg_pool(self.max_pool(x))
        return self.classifier(x.view(x.size(0), -1))


class _VGGTail(nn.Module):
    """VGG16's tail after ``features.30`` or ``features.22`` with one ReLU module per call."""

    def __init__(self, vgg, layer: str):
        super().__init__()
        f, c = vgg.features, vgg.classifier
        self.convs = None if layer == "features.30" else nn.Sequential(
            nn.MaxPool2d(2, 2), f[24], nn.ReLU(), f[26], nn.ReLU(), f[28], nn.ReLU(), nn.MaxPool2d(2, 2))
        self.avgpool = vgg.avgpool
        self.fc6, self.relu6, self.fc7, self.relu7, self.fc8 = c[0], nn.ReLU(), c[3], nn.ReLU(), c[6]

    def forward(self, a):
        x = torch.flatten(self.avgpool(a if self.convs is None else self.convs(a)), 1)
        return self.fc8(self.relu7(self.fc7(self.relu6(self.fc6(x)))))


@captum_hooks
@pytest.mark.parametrize("eps", EPSILONS)
@pytest.mark.parametrize("layer", ["features.30", "features.29", "features.22"])
def test_vgg16_with_biases_matches_captum(vgg16_biased, layer, eps):
    model, x = vgg16_biased
    vgg = model.module
    n = 2 if layer == "features.22" else 3  # features.22: three 3x3 convolutions of 512 channels, slower
    target = [7, 300, 512][:n]
    exp = camlib.explain(model, x[:n], "lrpcam", layer=layer, target=target, epsilon=eps)
    tail = _AuthorsVGGTail(vgg) if layer == "features.29" else _VGGTail(vgg, layer)
    _against_captum(exp, tail, target, eps)


# ------------------------------------------------------------------------------------------------
# ResNet50 with random batch-norm statistics and affine parts
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet50_shifted():
    """camlib's ResNet50 with random weights (seeded), every batch norm's weight ~ N(1, 0.5²) and
    bias ~ N(0, 0.5²), its running statistics those of the features of 4 random images (one
    forward pass in training mode with a cumulative average: non-zero means, variances far from 1)
    moved by mean + N(0, 0.1²)·σ and variance × U(0.8, 1.25); fc's bias ~ N(0, 0.2²). So every
    batch norm's shift β - s·μ is a sizeable part of z, and activations stay of order 1 to 10 through
    the 16 blocks (a plain random ResNet50 reaches hundreds, where ε = 0.25 would not matter)."""
    torch.manual_seed(0)
    model = camlib.load_model("resnet50", device="cpu", weights=None)
    net = model.module
    g = torch.Generator().manual_seed(7)
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in norms:
            m.weight.copy_(torch.randn(m.num_features, generator=g) * 0.5 + 1)
            m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.5)
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: one batch sets the statistics
        net.train()
        net(model.normalize(torch.rand(4, 3, 224, 224, generator=g)))
        net.eval()
        for m in norms:
            n = m.num_features
            m.running_mean.add_(torch.randn(n, generator=g) * 0.1 * m.running_var.sqrt())
            m.running_var.mul_(torch.rand(n, generator=g) * 0.45 + 0.8)
        net.fc.bias.copy_(torch.randn(1000, generator=g) * 0.2)
    torch.manual_seed(1)
    return model, torch.rand(2, 3, 224, 224)


class _Bottleneck(nn.Module):
    """torchvision's Bottleneck for captum: one ReLU module per call and the residual sum as
    captum's ``Addition_Module`` (torchvision's ``out += identity`` gets no rule in captum; see
    tests/engine/reference/test_lrp.py::test_captum_at_a_residual_sum)."""

    def __init__(self, block):
        super().__init__()
        from captum.attr._utils.custom_modules import Addition_Module

        self.conv1, self.bn1, self.conv2, self.bn2 = block.conv1, block.bn1, block.conv2, block.bn2
        self.conv3, self.bn3, self.downsample = block.conv3, block.bn3, block.downsample
        self.relu1, self.relu2, self.relu3, self.add = nn.ReLU(), nn.ReLU(), nn.ReLU(), Addition_Module()

    def forward(self, x):
        out = self.bn3(self.conv3(self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))))
        return self.relu3(self.add(out, x if self.downsample is None else self.downsample(x)))


class _ResNetTail(nn.Module):
    def __init__(self, net, blocks: list):
        super().__init__()
        self.blocks = nn.Sequential(*map(_Bottleneck, blocks)) if blocks else None
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), net.fc

    def forward(self, a):
        return self.fc(torch.flatten(self.pool(a if self.blocks is None else self.blocks(a)), 1))


@captum_hooks
@pytest.mark.parametrize("eps", EPSILONS)
@pytest.mark.parametrize("layer, blocks", [("layer4", 0), ("layer4.1", 1), ("layer3", 3)])
def test_resnet50_with_shifted_batch_norms_matches_captum(resnet50_shifted, layer, blocks, eps):
    """layer4: pooling + fc (linear: the ε-rule at the pool and at fc); layer4.1: the last block;
    layer3: all three blocks of layer4, the first with its projection shortcut (conv + BN)."""
    model, x = resnet50_shifted
    net = model.module
    n = 1 if layer == "layer3" else 2  # captum's hooks on three blocks at 14x14 are slow
    target = [3, 400][:n]
    exp = camlib.explain(model, x[:n], "lrpcam", layer=layer, target=target, epsilon=eps)
    tail = _ResNetTail(net, list(net.layer4)[3 - blocks:])
    _against_captum(exp, tail, target, eps)


# ------------------------------------------------------------------------------------------------
# EfficientNet-Lite0 (pretrained): ReLU6, batch norms in timm's BatchNormAct2d
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lite0_own():
    """A Lite0 of this module's own (captum leaves attributes on the modules it visits)."""
    return camlib.load_model("efficientnet_lite0", device="cpu")


def _batch_norm(norm_act) -> nn.BatchNorm2d:
    """A plain BatchNorm2d with the statistics and affine part of timm's BatchNormAct2d (captum
    recurses into BatchNormAct2d, a module with children, and gives its batch norm no rule)."""
    bn = nn.BatchNorm2d(norm_act.num_features, eps=norm_act.eps)
    bn.load_state_dict({k: v for k, v in norm_act.state_dict().items() if k in bn.state_dict()})
    return bn.eval()


class _LiteTail(nn.Module):
    """Lite0's tail after blocks.6 (conv_head, bn2 + ReLU6, pooling, classifier) or after
    blocks.6.0.bn2 (also conv_pwl and bn3). captum has no rule for ReLU6: it gets captum's
    ``IdentityRule`` (relevance passes unchanged: camlib's rule)."""

    def __init__(self, net, layer: str):
        super().__init__()
        from captum.attr._utils.lrp_rules import IdentityRule

        block = net.blocks[6][0]
        self.pwl = block.conv_pwl if layer == "blocks.6.0.bn2" else None
        self.bn3 = _batch_norm(block.bn3) if layer == "blocks.6.0.bn2" else None
        self.head, self.bn2, self.act = net.conv_head, _batch_norm(net.bn2), nn.ReLU6()
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), net.classifier
        self.act.rule = IdentityRule()

    def forward(self, a):
        if self.pwl is not None:
            a = self.bn3(self.pwl(a))
        return self.fc(torch.flatten(self.pool(self.act(self.bn2(self.head(a)))), 1))


def _two_images(chelsea) -> torch.Tensor:
    torch.manual_seed(2)
    cat = torch.from_numpy(np.array(chelsea.convert("RGB").resize((224, 224)))).permute(2, 0, 1).float() / 255
    return torch.stack([cat, torch.rand(3, 224, 224)])


@captum_hooks
@pytest.mark.parametrize("eps", EPSILONS)
@pytest.mark.parametrize("layer", ["blocks.6", "blocks.6.0.bn2"])
def test_lite0_matches_captum_with_relevance_through_relu6(lite0_own, chelsea, layer, eps):
    """ReLU6 saturates (its gradient is 0 above 6) but passes relevance, so even at ε = 1e-9 LRP-CAM
    is not gradient × input on the cat image (asserted: by more than 10 tolerances; ReLU6 rarely
    saturates on the noise image)."""
    x = _two_images(chelsea)
    target = [285, 7]
    exp = camlib.explain(lite0_own, x, "lrpcam", layer=layer, target=target, epsilon=eps)
    tail = _LiteTail(lite0_own.module, layer)
    _against_captum(exp, tail, target, eps, relu_tail=False)
    scale = _scale(exp.coefficients, exp.info["conservation"][1])
    gxi = _gradient_x_input(tail, exp.activations, target)
    assert (exp.coefficients[0] - gxi[0]).abs().max() > 10 * _NET_RTOL * scale[0]


@pytest.mark.parametrize("eps", EPSILONS)
def test_pooling_and_linear_tail_closed_form(lite0_own, chelsea, eps):
    """At bn2 the tail is F = W·mean(A) + b. The ε-rule at the linear layer gives the pooled map k
    m_k w_ck F/(F + ε·sign F), at the mean A_k(i,j)/(hw) · that / (m_k + ε·sign m_k), so
    α_k = w_ck m_k · F/(F + ε·sign F) · m_k/(m_k + ε·sign m_k): the CAM weights times the maps' means
    (LIFT-CAM's α on this linear tail) up to the ε-factors."""
    x = _two_images(chelsea)
    exp = camlib.explain(lite0_own, x, "lrpcam", layer="bn2", target=[285, 7], epsilon=eps)
    a = exp.activations.double()
    m = a.mean((2, 3))
    w = lite0_own.module.classifier.weight.double()[[285, 7]]
    f = exp.info["conservation"][1].double()

    def factor(v):
        return v / torch.where(v >= 0, v + eps, v - eps)

    expected = w * m * factor(f)[:, None] * factor(m)
    _assert_rows_close(exp.coefficients, expected, _scale(expected, f))
    if eps < 1e-6:
        lift = camlib.explain(lite0_own, x, "liftcam", layer="bn2", target=[285, 7]).coefficients
        _assert_rows_close(exp.coefficients, lift, _scale(expected, f))


# ------------------------------------------------------------------------------------------------
# Conservation where nothing absorbs relevance
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which, layer", [("vgg16", "features.22"), ("resnet50", "layer3")])
def test_conservation_where_nothing_absorbs_relevance(which, layer, vgg16, resnet50, vgg16_biased, resnet50_shifted):
    """torchvision's random VGG16 has zero biases; its random ResNet50 has batch norms without a
    shift (μ = 0, σ² = 1, γ = 1, β = 0: BN(x) = x/sqrt(1 + 1e-5)) and only fc's bias b. Then every
    rule passes relevance on in full (up to ε-terms ≈ ε·Σ|R/z|, negligible at 1e-9) except fc's
    ε-rule, which keeps Σ_k m_k w_ck = F^c - b_c: Σ_k α_k = F^c(A) - b_c. The same tails with the
    biased fixtures' biases and shifts miss that by more than 10 tolerances (so the test can fail)."""
    model, biased = (vgg16, vgg16_biased[0]) if which == "vgg16" else (resnet50, resnet50_shifted[0])
    torch.manual_seed(4)
    x = torch.rand(2, 3, 224, 224)
    target = [7, 300]
    for m, conserves in ((model, True), (biased, False)):
        exp = camlib.explain(m, x, "lrpcam", layer=layer, target=target)
        total, output = exp.info["conservation"]
        fc = m.module.classifier[6] if which == "vgg16" else m.module.fc
        expected = output.double() - fc.bias.double()[target]
        err = (total.double() - expected).abs()
        scale = _scale(exp.coefficients, output)
        if conserves:
            assert (fc.bias.abs().max() == 0) == (which == "vgg16")
            assert (err <= _NET_RTOL * scale).all(), (total.tolist(), expected.tolist())
        else:
            assert (err > 10 * _NET_RTOL * scale).all(), (total.tolist(), expected.tolist())


# ------------------------------------------------------------------------------------------------
# The VQA model, question held fixed
# ------------------------------------------------------------------------------------------------


class _Scale(nn.Module):
    """x ⊙ q for a fixed q, as a module (captum gives rules to modules only)."""

    def __init__(self, q: torch.Tensor):
        super().__init__()
        self.q = q

    def forward(self, x):
        return x * self.q


class _VQATail(nn.Module):
    """classifier(image_head(A) ⊙ q) with the product as a :class:`_Scale` and BatchNorm1d given
    captum's ε-rule (it has no default rule for either)."""

    def __init__(self, net, q: torch.Tensor):
        super().__init__()
        head, c = net.image_head, net.classifier
        self.fc, self.bn, self.relu = head[1], head[2], nn.ReLU()
        self.scale = _Scale(q)
        self.fc1, self.relu1, self.fc2 = c[0], nn.ReLU(), c[2]

    def forward(self, a):
        v = self.scale(self.relu(self.bn(self.fc(torch.flatten(a, 1)))))
        return self.fc2(self.relu1(self.fc1(v)))


@captum_hooks
def test_vqa_with_the_question_held_fixed_matches_captum():
    from camlib.vqa import scenes

    model = camlib.load_model("vqa_shapes", device="cpu")
    checked = 0
    for seed in (1_000_000_003, 1_000_000_024):
        scene = scenes.generate_scene(seed)
        image = scenes.to_tensor(scene.image)
        for question in scenes.generate_questions(scene)[:1]:
            with torch.no_grad():
                q = model.module.encode_question(model.question_tokens(question.text))
            for target in (None, scenes.ANSWERS.index("no")):
                for eps in EPSILONS:
                    exp = camlib.explain(model, image, "lrpcam", target=target, question=question.text, epsilon=eps)
                    c = [int(exp.target[0])]
                    _against_captum(exp, _VQATail(model.module, q), c, eps)
                    checked += 1
    assert checked == 8


# ------------------------------------------------------------------------------------------------
# Determinism, batches, threads
# ------------------------------------------------------------------------------------------------


def test_deterministic_and_batch_equals_one_at_a_time(lite0_own, chelsea):
    x = _two_images(chelsea)
    x = torch.cat([x, x[:1].flip(3)])
    target = [285, 7, 281]
    batch = camlib.explain(lite0_own, x, "lrpcam", layer="blocks.6.0.bn2", target=target, epsilon=0.25)
    again = camlib.explain(lite0_own, x, "lrpcam", layer="blocks.6.0.bn2", target=target, epsilon=0.25)
    assert torch.equal(batch.coefficients, again.coefficients)
    scale = _scale(batch.coefficients, batch.info["conservation"][1])
    alone = torch.stack([camlib.explain(lite0_own, x[i], "lrpcam", layer="blocks.6.0.bn2", target=target[i],
                                        epsilon=0.25).coefficients for i in range(3)])
    _assert_rows_close(alone, batch.coefficients, scale)


def test_threads_share_one_model(lite0_own, chelsea):
    """App sessions share a model (and its rewritten tails): threads explaining at once, with
    different layers, images and ε, get what each gets alone."""
    torch.manual_seed(3)
    images = [chelsea, torch.rand(3, 224, 224)]
    layers = ("bn2", "blocks.6", "blocks.6.0.bn2") * 2
    jobs = [(images[i % 2], layer, EPSILONS[i // 3]) for i, layer in enumerate(layers)]
    fresh = camlib.load_model("efficientnet_lite0", device="cpu")  # no tail rewritten yet: threads race to build it
    alone = [camlib.explain(lite0_own, x, "lrpcam", layer=layer, epsilon=eps) for x, layer, eps in jobs]
    results, errors = [None] * len(jobs), []

    def work(offset):
        try:
            for j in range(offset, len(jobs), 3):
                x, layer, eps = jobs[j]
                results[j] = camlib.explain(fresh, x, "lrpcam", layer=layer, epsilon=eps)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got, want in zip(results, alone):
        assert int(got.target) == int(want.target)
        scale = _scale(want.coefficients[None], want.info["conservation"][1].reshape(1))
        _assert_rows_close(got.coefficients[None], want.coefficients[None], scale)
    for m in fresh.module.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
    assert not any(p.requires_grad for p in fresh.module.parameters())


def test_command_line_lists_and_runs_it(tmp_path, capsys):
    from camlib import cli

    assert cli.main(["methods"]) == 0
    listed = capsys.readouterr().out
    assert "lrpcam" in listed and "epsilon=1e-09" in listed
    out = tmp_path / "out"
    assert cli.main(["explain", "sample:chelsea", "--method", "lrpcam", "--option", "epsilon=0.25",
                     "--out", str(out)]) == 0
    assert (out / "lrpcam.png").is_file()
