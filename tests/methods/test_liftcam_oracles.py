"""Oracles for LIFT-CAM that can tell DeepLIFT's rules apart (issue #15, item 4).

LIFT-CAM's α is DeepLIFT-Rescale through the tail F with the reference A = 0 at the CAM layer
(paper Sec. 3.3, Eq. 7; local accuracy Eq. 8: Σ_k α_k = F^c(A) - F^c(0)). With all biases zero
(torchvision's random VGG16) every reference activation is 0, each ReLU multiplier
(relu(x) - relu(0)) / (x - 0) is relu'(x) and the max rule routes to the actual argmax, which is
the gradient: such a test cannot tell DeepLIFT from gradient × input. Here the references are not
zero, and the answers are:

* closed forms computed by hand (a pooling tail where the reference's argmax differs from the
  actual input's, a batch-norm tail with non-trivial running statistics), exact rationals;
* captum 0.9's DeepLift on tails where its rules are right, with every bias of VGG16 random and
  non-zero and ResNet18's batch-norm statistics random (captum's known failures and how these
  tails avoid them: :func:`_vgg_tail`);
* the identity "block-linear path = autograd path" on a net with an FC of 2**24 weights.

Only camlib's public API is used (``camlib.explain``, ``CamModel``, ``Explanation``), so these
tests do not depend on where camlib's engine modules live. Which internal path a call takes
(stored reference, batched [A; 0] with a held-fixed input, block-linear) is stated per test as the
path camlib chose when the test was written (checked then by spying on the path's function).

Tolerances: u = 2**-24 is float32's unit roundoff. Hand tails: every input is a small dyadic
rational, so the forward pass is exact and the backward pass rounds a few times per term (a
division for each Rescale or max-rule multiplier, a handful of products, sums of < 20 terms):
|error| <= 32·u·S with S the largest magnitude in the sum. Network tails: see ``_NET_RTOL``.
"""

from __future__ import annotations

from fractions import Fraction as Q

import pytest
import torch
import torch.nn as nn

import camlib
from camlib.zoo import CamModel

U = 2.0 ** -24  # float32 unit roundoff

# Tails of real networks: the longest dot products have K = 25088 terms (VGG16's fc6, and the
# sum over 512 maps x 49 positions), whose float32 rounding error is about sqrt(K)·u ≈ 1e-5 of
# the sum of |terms| (probabilistic bound; the deterministic K·u bound is 1.5e-3); three such layers
# chain, and Σ|terms| exceeds the result by a small factor. 1e-4 of S = max(max_k |α_k|,
# |F^c(A) - F^c(0)|) covers that (measured when written: camlib and captum differ by <= 5e-7·S).
# The errors these tests exist to catch are far larger: replacing DeepLIFT by gradient × input
# moves α by 2.8-71 % of S on these tails (asserted in each test to exceed 100 tolerances, so that
# the test can fail); captum's stale-hook bug at VGG16's features.27 moves it by 6-16 % of S.
_NET_RTOL = 1e-4

captum_hooks = pytest.mark.filterwarnings("ignore:Setting forward, backward hooks:UserWarning")
pytestmark = pytest.mark.numerics


def _assert_close(actual: torch.Tensor, expected, tol: float) -> None:
    expected = torch.as_tensor(expected, dtype=torch.float64)
    err = (actual.double() - expected).abs().max().item()
    assert err <= tol, f"max |error| {err:.3g} > {tol:.3g}\nactual {actual.tolist()}\nexpected {expected.tolist()}"


def _copy_head(maps: int) -> nn.Conv2d:
    """A 1x1 convolution whose output map k is input channel k: the image's channels are A."""
    head = nn.Conv2d(3, maps, 1)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        for k in range(maps):
            head.weight[k, k] = 1.0
    return head


class _Held(CamModel):
    """A CamModel with one held-fixed extra input, passed as ``explain(..., held=tensor)``
    (the way the VQA model holds the question fixed)."""

    def extra_inputs(self, batch: int, held=None, **options):
        return (held.expand(batch, *held.shape[1:]),), options


# ------------------------------------------------------------------------------------------------
# 1. The max rule by hand: a pooling tail whose reference is not zero
# ------------------------------------------------------------------------------------------------
#
# Layer "head" outputs two maps A_0, A_1 of 2 x 4 (two 2x2 pooling windows: L = columns 0-1,
# R = columns 2-3). The tail:
#
#     z = A_0 + 2·A_1 + B     (1x1 convolution M = (1, 2), then a per-position offset B)
#     F = W · maxpool2(relu(z)) + c
#
# At the reference A = 0: z_ref = B, r_ref = relu(B), each window with a unique argmax.

M = (1, 2)
B = ((1, 3, 4, 0),
     (0, -2, 1, 2))
W = ((2, -3), (-1, Q(1, 2)))
C = (Q(1, 2), -1)
A0 = ((3, 1, -1, 1),
      (-1, 2, -1, Q(1, 2)))
A1 = ((Q(1, 2), -1, -3, 0),
      (0, 2, 1, -Q(1, 2)))


def _t(rows) -> torch.Tensor:
    return torch.tensor([[float(v) for v in row] for row in rows])


class _PoolTail(nn.Module):
    def __init__(self):
        super().__init__()
        self.mix = nn.Conv2d(2, 1, 1, bias=False)
        self.offset = nn.Parameter(_t(B).view(1, 1, 2, 4))
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.mix.weight.copy_(torch.tensor([float(m) for m in M]).view(1, 2, 1, 1))
            self.fc.weight.copy_(_t(W))
            self.fc.bias.copy_(torch.tensor([float(c) for c in C]))

    def forward(self, a, offset=None):
        z = self.mix(a) + (self.offset if offset is None else offset)
        return self.fc(torch.flatten(self.pool(torch.relu(z)), 1))


class _PoolNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = _copy_head(2)
        self.tail = _PoolTail()

    def forward(self, x):
        return self.tail(self.head(x))


class _PoolNetHeld(_PoolNet):
    """The same network with the offset B as a held-fixed second input instead of a parameter."""

    def forward(self, x, offset):
        return self.tail(self.head(x), offset)


def _pool_model(path: str) -> tuple[CamModel, dict]:
    """("stored": no fixed input, LIFT-CAM runs A alone against the stored reference values;
    "batched": the offset is a held-fixed input, LIFT-CAM runs the batch [A; 0] with it doubled)."""
    args = dict(device=torch.device("cpu"), class_names=["c0", "c1"], default_layer="head", input_size=(2, 4))
    if path == "stored":
        return CamModel("pool-by-hand", _PoolNet(), **args), {}
    offset = _t(B).view(1, 1, 2, 4)
    return _Held("pool-by-hand-held", _PoolNetHeld(), example_extra=(offset,), **args), {"held": offset}


def _image(a0, a1) -> torch.Tensor:
    return torch.stack([_t(a0), _t(a1), torch.zeros(2, 4)])


def _exact_lift(a0, a1, target: int) -> tuple[list[Q], Q]:
    """(α, F^c(A) - F^c(0)) of the pooling tail in exact rational arithmetic.

    DeepLIFT's cross-maximum rule for a window with output y (actual) and y_ref (reference) sends
    (max(y, y_ref) - y_ref) to the actual argmax and (y - max(y, y_ref)) to the reference's: one
    of the two is 0, so the whole change y - y_ref goes to the actual argmax p if y >= y_ref, else
    to the reference's. The max-rule multiplier there is (y - y_ref) / Δr(p), the ReLU's Rescale
    multiplier Δr(p) / Δz(p), so with Δz(p) = Σ_k M_k A_k(p) (the reference is 0):

        α_k = Σ_windows W[c, window] · (y - y_ref) · M_k A_k(p) / Δz(p).

    Requires a unique actual argmax in each window and Δz ≠ 0 at every position (else DeepLIFT
    falls back to gradients, which this closed form does not model).
    """
    a = (a0, a1)
    alpha, delta = [Q(0), Q(0)], Q(0)
    for window, cols in enumerate(((0, 1), (2, 3))):
        cells = [(i, j) for i in (0, 1) for j in cols]
        dz = {p: sum(M[k] * Q(a[k][p[0]][p[1]]) for k in (0, 1)) for p in cells}
        r = {p: max(dz[p] + B[p[0]][p[1]], Q(0)) for p in cells}
        r_ref = {p: max(Q(B[p[0]][p[1]]), Q(0)) for p in cells}
        assert all(dz[p] != 0 for p in cells), "Δz = 0 somewhere: outside the closed form"
        y, y_ref = max(r.values()), max(r_ref.values())
        assert sum(v == y for v in r.values()) == 1 and sum(v == y_ref for v in r_ref.values()) == 1
        p = next(q for q in cells if (r if y >= y_ref else r_ref)[q] == max(y, y_ref))
        w = Q(W[target][window])
        for k in (0, 1):
            alpha[k] += w * (y - y_ref) * M[k] * Q(a[k][p[0]][p[1]]) / dz[p]
        delta += w * (y - y_ref)
    return alpha, delta


@pytest.mark.parametrize("path", ["stored", "batched"])
def test_max_rule_by_hand(path):
    """z = A_0 + 2 A_1 + B:

            A_0              A_1               B                z = MA + B        r = relu(z)
        3  1 | -1  1     ½ -1 | -3  0      1  3 | 4  0      5  2 | -3  1      5  2 | 0  1
       -1  2 | -1  ½     0  2 |  1 -½      0 -2 | 1  2     -1  4 |  2  3/2    0  4 | 2  3/2

    Window L: y = 5 at (0,0), y_ref = max relu(1, 3, 0, -2) = 3 at (0,1): y > y_ref, so
    Δy = 2 goes to the actual argmax (0,0), where Δz = 3 + 2·½ = 4: per map Δy·M_k A_k/Δz =
    (2·3/4, 2·1/4) = (3/2, 1/2).
    Window R: y = 2 at (1,2), y_ref = max(4, 0, 1, 2) = 4 at (0,2): y < y_ref, so Δy = -2 goes
    to the reference's argmax (0,2), where Δz = -1 + 2·(-3) = -7 (z = -3: the ReLU is off there,
    its gradient 0, its Rescale multiplier Δr/Δz = -4/-7): per map (-2·-1/-7, -2·-6/-7) =
    (-2/7, -12/7).
    Target 0, W[0] = (2, -3): α = (2·3/2 - 3·(-2/7), 2·1/2 - 3·(-12/7)) = (27/7, 43/7),
    Σα = 10 = F^0(A) - F^0(0) = (2·5 - 3·2 + ½) - (2·3 - 3·4 + ½) = 4.5 - (-5.5).
    Target 1, W[1] = (-1, ½): α = (-3/2 - 1/7, -1/2 - 6/7) = (-23/14, -19/14), Σα = -3 =
    (-5 + 1 - 1) - (-3 + 2 - 1).
    The gradient (the zero-reference reading) would give Σ A ∂F^0/∂A = (9, -4) (window R's change
    from its actual argmax (1,2)); sending Δy to the actual argmax in every window would give
    (-3, 13).
    """
    model, held = _pool_model(path)
    x = _image(A0, A1)
    for target, expected, delta, reference in ((0, [Q(27, 7), Q(43, 7)], 10, Q(-11, 2)),
                                              (1, [Q(-23, 14), Q(-19, 14)], -3, -2)):
        assert _exact_lift(A0, A1, target) == (expected, delta)
        exp = camlib.explain(model, x, "liftcam", target=target, **held)
        tol = 32 * U * 10
        _assert_close(exp.coefficients, [float(e) for e in expected], tol)
        total, change = exp.info["local_accuracy"]
        _assert_close(total, [float(delta)], tol)
        _assert_close(change, [float(delta)], tol)
        _assert_close(exp.info["reference_logit"], [float(reference)], tol)


def _dyadic_images(count: int, seed: int) -> list[tuple]:
    """Images A_0, A_1 with entries k/8, |k| <= 24 (exact in float32, and so is z = MA + B),
    drawn until ``count`` satisfy the closed form's conditions (unique argmaxes, Δz ≠ 0)."""
    g = torch.Generator().manual_seed(seed)
    found = []
    while len(found) < count:
        k = torch.randint(-24, 25, (2, 2, 4), generator=g)
        a0, a1 = ([[Q(int(v), 8) for v in row] for row in k[i]] for i in (0, 1))
        try:
            _exact_lift(a0, a1, 0)
        except AssertionError:
            continue
        found.append((a0, a1))
    return found


@pytest.mark.parametrize("path", ["stored", "batched"])
def test_max_rule_closed_form_on_a_batch(path):
    """A batch (the hand image, the reference itself, three more) against the closed form of
    ``_exact_lift``, both targets: rows must not mix, and the row A = 0 gets α = 0."""
    model, held = _pool_model(path)
    images = [(A0, A1), *_dyadic_images(3, seed=15)]
    x = torch.stack([_image(*images[0]), torch.zeros(3, 2, 4), *(_image(*im) for im in images[1:])])
    for target in (0, 1):
        exact = [_exact_lift(*im, target) for im in images]
        exact.insert(1, ([Q(0), Q(0)], Q(0)))
        exp = camlib.explain(model, x, "liftcam", target=target, **held)
        scale = max(1.0, *(abs(float(v)) for alpha, d in exact for v in (*alpha, d)))
        tol = 32 * U * scale
        _assert_close(exp.coefficients, [[float(v) for v in alpha] for alpha, _ in exact], tol)
        total, change = exp.info["local_accuracy"]
        _assert_close(total, [float(d) for _, d in exact], tol)
        _assert_close(change, [float(d) for _, d in exact], tol)


# ------------------------------------------------------------------------------------------------
# 2. Batch norm with non-trivial running statistics, by hand
# ------------------------------------------------------------------------------------------------


class _BNTail(nn.Module):
    """z = BN(M A + b) (eval: s ⊙ (M A + b - μ) + β, s = γ / sqrt(var + eps)), relu, mean over
    space, a Linear."""

    def __init__(self):
        super().__init__()
        self.mix = nn.Conv2d(2, 2, 1)
        self.bn = nn.BatchNorm2d(2, eps=0.0)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.mix.weight.copy_(torch.tensor([[1.0, -1], [2, 1]]).view(2, 2, 1, 1))
            self.mix.bias.copy_(torch.tensor([0.5, -1]))
            self.bn.running_mean.copy_(torch.tensor([1.5, -2]))
            self.bn.running_var.copy_(torch.tensor([4.0, 0.25]))
            self.bn.weight.copy_(torch.tensor([1.0, -0.5]))
            self.bn.bias.copy_(torch.tensor([0.25, 1.5]))
            self.fc.weight.copy_(torch.tensor([[1.0, 2], [-1, 1]]))
            self.fc.bias.copy_(torch.tensor([0.25, 0]))

    def forward(self, a):
        return self.fc(torch.flatten(self.pool(torch.relu(self.bn(self.mix(a)))), 1))


def test_batchnorm_tail_by_hand():
    """Two maps of 1 x 2 positions p0, p1: A_0 = (2, -1), A_1 = (1, 3).

    BN: s = γ/σ = (1/2, -0.5/0.5) = (1/2, -1). Reference (A = 0): z_ref = s ⊙ (b - μ) + β =
    (½·(½ - 3/2) + ¼, -1·(-1 + 2) + 3/2) = (-¼, ½), relu: (0, ½) — not zero, unlike a bias-free BN.
    M A: p0 (2 - 1, 4 + 1) = (1, 5), p1 (-1 - 3, -2 + 3) = (-4, 1); Δz = s ⊙ M A:
    p0 (½, -5), p1 (-2, -1); z = z_ref + Δz: p0 (¼, -9/2), p1 (-9/4, -½); Δr = relu(z) - relu(z_ref):
    p0 (¼, -½), p1 (0, -½). Rescale multipliers Δr/Δz: p0 (½, 1/10), p1 (0, ½) — where the
    gradient is p0 (1, 0), p1 (0, 0).
    α_k = Σ_p Σ_j (W[c,j]/2) m_j(p) s_j M[j,k] A_k(p). Target 0, (W/2)·s = (¼, -1):
    α_0 = ¼·½·1·2 - 1·(1/10)·2·2 - 1·½·2·(-1) = ¼ - 2/5 + 1 = 17/20,
    α_1 = ¼·½·(-1)·1 - 1·(1/10)·1·1 - 1·½·1·3 = -1/8 - 1/10 - 3/2 = -69/40;
    Σα = -7/8 = F^0(A) - F^0(0) = (¼ + mean(¼, 0)) - (¼ + 2·½).
    Target 1, (W/2)·s = (-¼, -½): α_0 = -¼ - 1/5 + ½ = 1/20, α_1 = 1/8 - 1/20 - 3/4 = -27/40;
    Σα = -5/8 = -mean(¼, 0) - ½.
    Gradient × input (target 0) would be (½, -¼).
    """
    net = nn.Sequential(_copy_head(2), _BNTail())
    model = CamModel("bn-by-hand", net, torch.device("cpu"), ["c0", "c1"], default_layer="0", input_size=(1, 2))
    x = torch.stack([torch.tensor([[2.0, -1]]), torch.tensor([[1.0, 3]]), torch.zeros(1, 2)])
    for target, expected, delta, reference in ((0, [17 / 20, -69 / 40], -7 / 8, 5 / 4),
                                              (1, [1 / 20, -27 / 40], -5 / 8, 1 / 2)):
        exp = camlib.explain(model, x, "liftcam", target=target)
        tol = 32 * U * 2
        _assert_close(exp.coefficients, expected, tol)
        total, change = exp.info["local_accuracy"]
        _assert_close(total, [delta], tol)
        _assert_close(change, [delta], tol)
        _assert_close(exp.info["reference_logit"], [reference], tol)


# ------------------------------------------------------------------------------------------------
# 3. captum on real tails with non-zero references
# ------------------------------------------------------------------------------------------------


class _Clone(nn.Module):
    """A new tensor between two captum-hooked modules (see :func:`_vgg_tail`)."""

    def forward(self, x):
        return x.clone()


class _CaptumVGGTail(nn.Module):
    """VGG16's tail after ``layer`` as distinct, non-in-place modules (captum hooks modules and
    needs one per call); ``held`` scales fc6's output as :class:`_VGGHeld` does."""

    def __init__(self, vgg, layer: str):
        super().__init__()
        before = {"features.30": [], "features.29": [nn.MaxPool2d(2, 2)],
                  "features.27": [vgg.features[28], nn.ReLU(), _Clone(), nn.MaxPool2d(2, 2)]}[layer]
        c = vgg.classifier
        self.features = nn.Sequential(*before, vgg.avgpool, nn.Flatten())
        self.fc6, self.relu6, self.fc7, self.relu7, self.fc8 = c[0], nn.ReLU(), c[3], nn.ReLU(), c[6]

    def forward(self, a, held=None):
        h = self.fc6(self.features(a))
        h = h if held is None else h * held
        return self.fc8(self.relu7(self.fc7(self.relu6(h))))  # Dropout: identity in eval mode


def _vgg_tail(vgg, layer: str) -> nn.Module:
    """The captum version of VGG16's tail after ``layer``, on which captum 0.9's rules are right.

    captum's DeepLift has three known max-pool defects; none touches these tails:
    * adjacent hooked modules (github.com/meta-pytorch/captum issue 1104, fixed by PR 1843 after
      0.9.0): a module's backward hook reads the gradient of its output as recorded by a tensor
      hook registered before the next module's hook rewrote it, so a ReLU followed directly by a
      MaxPool2d propagates the pool's plain gradient instead of its max-rule multipliers.
      features.30 (no max pool) and features.29 (the pool is the first module: its input is the
      attributed tensor) have no such pair; at features.27 (conv -> ReLU -> MaxPool) the _Clone
      between ReLU and pool gives each hook its own tensor. Without it captum's α differs from
      camlib's by 13-18 % of max|α| there (with it: < 5e-7), and still sums to delta (|error|
      < 3e-7), because the reference relu(b_28) is constant over each window, so any routing
      of a window's change sums to it: summation-to-delta alone cannot see the misrouting.
    * the max-pool fallback where |Δx| < 1e-10 uses ``grad_input[0]``, the first image's
      gradient (issue 1276): here it only happens where Δx = 0 at the pool's input, whose
      contribution m·Δx is 0 (features.29) or is multiplied by the ReLU's Rescale multiplier
      Δr/Δz = 0 (features.27).
    * overlapping windows are unpooled by assignment (max_unpool): VGG's pools do not overlap.
    """
    return _CaptumVGGTail(vgg, layer).eval()


class _VGGHeld(nn.Module):
    """VGG16 whose fc6 output is multiplied by a held-fixed vector (as the VQA model multiplies
    by the question embedding): LIFT-CAM takes the batched [A; 0] path."""

    def __init__(self, vgg):
        super().__init__()
        self.features, self.avgpool, self.classifier = vgg.features, vgg.avgpool, vgg.classifier

    def forward(self, x, held):
        c = self.classifier
        h = c[0](torch.flatten(self.avgpool(self.features(x)), 1)) * held
        return c[6](c[5](c[4](c[3](c[2](c[1](h))))))


@pytest.fixture(scope="module")
def vgg16_biased():
    """Random VGG16 (seeded) with every convolution and linear bias ~ N(0, 0.2²): the
    pre-activations' spread without biases is 0.35-0.47 (convolutions), 0.47 and 0.21 (fc6, fc7),
    so many ReLUs change sign between A and the reference and their Rescale multipliers lie
    strictly between 0 and 1."""
    import torchvision

    torch.manual_seed(0)
    vgg = torchvision.models.vgg16(weights=None).eval()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for m in vgg.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
    norm = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    classes = [f"class {i}" for i in range(1000)]
    model = CamModel("vgg16-biases", vgg, torch.device("cpu"), classes, default_layer="features.29", **norm)
    held = torch.randn(1, 4096, generator=g)
    held_model = _Held("vgg16-biases-held", _VGGHeld(vgg), torch.device("cpu"), classes,
                       default_layer="features.29", example_extra=(held,), **norm)
    torch.manual_seed(1)
    return model, held_model, vgg, held, torch.rand(3, 3, 224, 224)


def _against_captum(exp, tail, target: list[int], held=None) -> None:
    """camlib's α and local accuracy against captum's DeepLift on ``tail``; that captum sums to
    delta there; and that gradient × input is off by more than 100 tolerances (the test can fail)."""
    from captum.attr import DeepLift

    a = exp.activations.detach().clone().requires_grad_(True)
    extra = None if held is None else (held.expand(a.shape[0], -1),)
    attributions, captum_delta = DeepLift(tail).attribute(
        a, baselines=torch.zeros_like(a), target=target, additional_forward_args=extra,
        return_convergence_delta=True)
    expected = attributions.detach().sum((2, 3))
    total, change = exp.info["local_accuracy"]
    with torch.no_grad():
        zero = torch.zeros_like(a[:1]).expand_as(a)
        logits, ref = (tail(v, *(extra or ())) for v in (a, zero))
    rows = torch.arange(a.shape[0])
    delta = logits[rows, target] - ref[rows, target]
    for b in range(a.shape[0]):
        scale = max(expected[b].abs().max().item(), abs(delta[b].item()))
        tol = _NET_RTOL * scale
        _assert_close(exp.coefficients[b], expected[b], tol)
        _assert_close(total[b], delta[b], tol)
        _assert_close(change[b], delta[b], tol)
        assert abs(captum_delta[b].item()) <= tol  # captum is right on this tail: it sums to delta
    grad = torch.autograd.grad(tail(a, *(extra or ()))[rows, target].sum(), a)[0]
    gradient_x_input = (grad * a).detach().sum((2, 3))
    for b in range(a.shape[0]):
        scale = max(expected[b].abs().max().item(), abs(delta[b].item()))
        assert (gradient_x_input[b] - expected[b]).abs().max().item() > 100 * _NET_RTOL * scale


@captum_hooks
@pytest.mark.parametrize("layer", ["features.30", "features.29", "features.27"])
@pytest.mark.parametrize("n", [1, 3])
def test_vgg16_with_biases_matches_captum(vgg16_biased, layer, n):
    """Paths: n = 1 at features.30/29 takes the block-linear path ("pooling -> flatten -> fc6"
    with fc6's 103 M weights read once); n = 3, and features.27 (a convolution before the pool),
    take the autograd path against the stored reference. At features.27 the pool's reference
    input relu(b_28) is not zero and the max rule routes windows whose maximum fell to the
    reference's argmax."""
    model, _, vgg, _, x = vgg16_biased
    target = [7, 300, 512][:n]
    exp = camlib.explain(model, x[:n], "liftcam", layer=layer, target=target)
    _against_captum(exp, _vgg_tail(vgg, layer), target)


@captum_hooks
@pytest.mark.parametrize("layer", ["features.30", "features.27"])
def test_vgg16_with_biases_held_input_matches_captum(vgg16_biased, layer):
    """A held-fixed input (fc6's output times a fixed random vector, before the ReLU: it changes
    the ReLU's reference) sends LIFT-CAM through the batched [A; 0] path."""
    _, held_model, vgg, held, x = vgg16_biased
    target = [7, 300]
    exp = camlib.explain(held_model, x[:2], "liftcam", layer=layer, target=target, held=held)
    _against_captum(exp, _vgg_tail(vgg, layer), target, held=held)


class _CaptumBasicBlockTail(nn.Module):
    """ResNet18's tail after layer4.0 (layer4.1, pooling, fc) with one ReLU module per call
    (torchvision's BasicBlock calls its ReLU twice, which captum refuses). No max pool and no
    two hooked modules in a row: captum's rules are right here; the residual sum and batch
    norm (eval) are linear and pass gradients."""

    def __init__(self, resnet):
        super().__init__()
        block = resnet.layer4[1]
        self.conv1, self.bn1, self.conv2, self.bn2 = block.conv1, block.bn1, block.conv2, block.bn2
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()
        self.avgpool, self.fc = resnet.avgpool, resnet.fc

    def forward(self, a):
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(a)))))
        return self.fc(torch.flatten(self.avgpool(self.relu2(out + a)), 1))


@captum_hooks
def test_resnet18_batchnorm_tail_matches_captum():
    """Random ResNet18 with every batch norm's running mean ~ N(0, 0.5²), variance ~ U(0.25, 2),
    weight ~ N(1, 0.5²), bias ~ N(0, 0.5²) and fc's bias ~ N(0, 0.2²): at A = 0 the ReLUs of
    layer4.1 see bn1(0) = β - μγ/σ ≠ 0. Three images: the autograd path, stored reference."""
    import torchvision

    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None).eval()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for m in resnet.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.75 + 0.25)
                m.weight.copy_(torch.randn(n, generator=g) * 0.5 + 1)
                m.bias.copy_(torch.randn(n, generator=g) * 0.5)
        resnet.fc.bias.copy_(torch.randn(1000, generator=g) * 0.2)
    model = CamModel("resnet18-bn", resnet, torch.device("cpu"), [f"class {i}" for i in range(1000)],
                     default_layer="layer4")
    torch.manual_seed(1)
    target = [3, 400, 999]
    exp = camlib.explain(model, torch.rand(3, 3, 224, 224), "liftcam", layer="layer4.0", target=target)
    _against_captum(exp, _CaptumBasicBlockTail(resnet).eval(), target)


# ------------------------------------------------------------------------------------------------
# 4. The block-linear path on a small net: FC of exactly 2**24 weights
# ------------------------------------------------------------------------------------------------


class _WideFC(nn.Module):
    """8x8 images -> 64 maps -> per-map scale and bias (depthwise 1x1: channel-wise, relu(b) ≠ 0
    at the reference) -> relu -> ``pool`` (4x4) -> fc1 1024 x 16384 (2**24 weights: the
    block-linear path's threshold) -> relu -> fc2."""

    def __init__(self, pool: nn.Module):
        super().__init__()
        self.head = nn.Conv2d(3, 64, 3, padding=1)
        self.shift = nn.Conv2d(64, 64, 1, groups=64)
        self.pool = pool
        self.fc1 = nn.Linear(64 * 16, 16384)
        self.fc2 = nn.Linear(16384, 5)
        with torch.no_grad():
            self.shift.bias.normal_(0, 0.3)
            self.fc1.weight.normal_(0, 0.03)
            self.fc1.bias.normal_(0, 0.05)
            self.fc2.bias.normal_(0, 0.05)

    def forward(self, x):
        x = self.pool(torch.relu(self.shift(self.head(x))))
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


def _wide_model(pool: nn.Module) -> CamModel:
    torch.manual_seed(0)
    return CamModel("wide-fc", _WideFC(pool), torch.device("cpu"), list("abcde"), default_layer="head",
                    input_size=(8, 8))


@captum_hooks
def test_block_linear_path_with_a_nonzero_pooled_reference():
    """n = 1 takes the block-linear path (φ = shift, relu, max pool; φ(0) = relu(b) ≠ 0, so h_ref ≠
    fc1's bias), n = 3 the autograd path: both equal captum's DeepLift (a _Clone between the
    ReLU and the pool, see :func:`_vgg_tail`)."""
    model = _wide_model(nn.MaxPool2d(2))
    net = model.module
    tail = nn.Sequential(net.shift, nn.ReLU(), _Clone(), nn.MaxPool2d(2), nn.Flatten(), net.fc1, nn.ReLU(),
                         net.fc2).eval()
    torch.manual_seed(2)
    x = torch.rand(3, 3, 8, 8)
    for n in (1, 3):
        target = [1, 2, 4][:n]
        _against_captum(camlib.explain(model, x[:n], "liftcam", target=target), tail, target)


@pytest.mark.parametrize("n", [1, 3])
def test_adaptive_max_pool_equals_max_pool(n):
    """AdaptiveMaxPool2d(4) on 8x8 maps is MaxPool2d(2): same windows, same LIFT-CAM. One image
    takes the block-linear path, three the stored-reference DeepLIFT tail; both apply the max rule
    (the tail once refused adaptive max pooling while the block-linear path accepted it, so the
    answer depended on the batch size)."""
    torch.manual_seed(2)
    x = torch.rand(n, 3, 8, 8)
    target = [1, 2, 4][:n]
    expected = camlib.explain(_wide_model(nn.MaxPool2d(2)), x, "liftcam", target=target)
    got = camlib.explain(_wide_model(nn.AdaptiveMaxPool2d(4)), x, "liftcam", target=target)
    scale = expected.coefficients.abs().max().item()
    _assert_close(got.coefficients, expected.coefficients, _NET_RTOL * scale)
