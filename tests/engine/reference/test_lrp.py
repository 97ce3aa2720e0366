"""LRP-ε by graph rewrite (camlib/engine/reference/lrp.py): each rule by hand, what captum does at
operations that are not modules, refusals, and the rewrite's hygiene.

Tolerances: u = 2**-24 is float32's unit roundoff. The hand tails take small dyadic rationals,
so their forward passes are exact; the backward pass rounds once per product or ε-division and
sums fewer than 10 terms per value, so |error| <= 32·u·S with S the largest magnitude among α
and F^c(A).
"""

from __future__ import annotations

from fractions import Fraction as Q

import pytest
import torch
import torch.nn as nn

import camlib
from camlib.engine.reference.lrp import LrpTail, UnsupportedTailError, lrp_tail
from camlib.zoo import CamModel

U = 2.0 ** -24
captum_hooks = pytest.mark.filterwarnings("ignore:Setting forward, backward hooks:UserWarning")


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


def _model(tail: nn.Module, maps: int, size, classes=("y", "z")) -> CamModel:
    return CamModel("toy", nn.Sequential(_copy_head(maps), tail), torch.device("cpu"), list(classes),
                    default_layer="0", input_size=size)


def _image(*maps) -> torch.Tensor:
    """An image whose first channels are the maps ``maps`` (rows of numbers), the rest zero."""
    a = torch.tensor([[[float(v) for v in row] for row in m] for m in maps])
    return torch.cat([a, torch.zeros(3 - a.shape[0], *a.shape[1:])])


# ------------------------------------------------------------------------------------------------
# 1. Convolution with bias, ReLU, residual sum, max pooling, linear layer: by hand
# ------------------------------------------------------------------------------------------------
#
# Two maps A_0, A_1 of 1 x 2 positions (p0, p1). The tail:
#
#     z = M A + b   (1x1 convolution),   y = relu(z),   s = y + A   (a residual sum),
#     m_k = max_p s_k(p)   (max pooling over the map),   F = W m + c.

M = ((1, -1), (2, 1))
B = (Q(1, 2), -1)
W = ((1, -2), (Q(1, 2), 1))
C = (1, -Q(1, 2))
A = ((2, -1), (1, 5))  # A[k][p]


class _ResidualTail(nn.Module):
    def __init__(self, addition: nn.Module | None = None):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.relu = nn.ReLU()
        self.add = addition
        self.pool = nn.MaxPool2d((1, 2))
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[float(v) for v in row] for row in M]).view(2, 2, 1, 1))
            self.conv.bias.copy_(torch.tensor([float(v) for v in B]))
            self.fc.weight.copy_(torch.tensor([[float(v) for v in row] for row in W]))
            self.fc.bias.copy_(torch.tensor([float(v) for v in C]))

    def forward(self, a):
        y = self.relu(self.conv(a))
        s = y + a if self.add is None else self.add(y, a)
        return self.fc(torch.flatten(self.pool(s), 1))


def _sign(v) -> int:
    return 1 if v >= 0 else -1


def _exact_lrp(a, target: int, eps: Q) -> tuple[list[Q], Q]:
    """(α, F^t(A)) of the residual tail in exact rational arithmetic, rule by rule: the ε-rule at
    the linear layer, the max pooling (winner takes all), the sum (z-rule) and the convolution,
    relevance unchanged through the ReLU; stabiliser z + ε·sign(z) with sign(0) = +1."""
    def stab(v):
        return v + eps * _sign(v)

    pos, ch = (0, 1), (0, 1)
    z = [[sum(M[k][j] * Q(a[j][p]) for j in ch) + B[k] for p in pos] for k in ch]
    y = [[max(v, Q(0)) for v in row] for row in z]
    s = [[y[k][p] + a[k][p] for p in pos] for k in ch]
    assert all(s[k][0] != s[k][1] for k in ch), "a tie in the max pooling: outside the closed form"
    win = [max(pos, key=lambda p: s[k][p]) for k in ch]
    m = [s[k][win[k]] for k in ch]
    f = sum(W[target][k] * m[k] for k in ch) + C[target]
    r_m = [m[k] * W[target][k] * f / stab(f) for k in ch]                         # linear layer
    r_s = [[s[k][p] * r_m[k] / stab(m[k]) if p == win[k] else Q(0) for p in pos] for k in ch]  # max pool
    share = [[r_s[k][p] / stab(s[k][p]) for p in pos] for k in ch]                # sum: z-rule
    r_y = [[y[k][p] * share[k][p] for p in pos] for k in ch]
    skip = [[a[k][p] * share[k][p] for p in pos] for k in ch]
    r_z = r_y                                                                     # ReLU: unchanged
    conv = [[a[j][p] * sum(M[k][j] * r_z[k][p] / stab(z[k][p]) for k in ch) for p in pos] for j in ch]
    return [sum(skip[j][p] + conv[j][p] for p in pos) for j in ch], f


def test_residual_tail_by_hand():
    """z = M A + b: p0 (2 - 1 + ½, 4 + 1 - 1) = (3/2, 4), p1 (-1 - 5 + ½, -2 + 5 - 1) = (-11/2, 2);
    y = relu(z): p0 (3/2, 4), p1 (0, 2); s = y + A: channel 0 (7/2, -1), channel 1 (5, 7): the
    pooling keeps p0 in channel 0, p1 in channel 1: m = (7/2, 7); F = (7/2 - 14 + 1, 7/4 + 7 - ½) =
    (-19/2, 33/4).

    ε → 0 (LRP-0), target 0: R_m = m_k W_0k = (7/2, -14); the pool hands them to the winners, the
    sum splits R_s/s = (1 at channel 0 p0, -2 at channel 1 p1) between y and the skip: skip A·R_s/s =
    (2, -10); y: (3/2, -4) reaches z unchanged, R_z/z = (1 at (0, p0), -2 at (1, p1)), the convolution
    gives A_j(p) Σ_k M_kj R_z/z: A_0: 2·1 + (-1)·2·(-2) = 6, A_1: 1·(-1) + 5·1·(-2) = -11.
    α = (2 + 6, -10 - 11) = (8, -21), which is gradient × input, Σ A ∂F^0/∂A (LRP-0 equals it
    on ReLU tails). Target 1, W_1 = (½, 1): α = (0, 19/2).
    ε = ½: every ε-rule node absorbs: α = (14958377/2880000, -1976513/128000) for target 0 and
    (-24409/480000, 455763/64000) for target 1 (exact rationals of :func:`_exact_lrp`).
    """
    model = _model(_ResidualTail(), 2, (1, 2))
    x = _image(*[[row] for row in A])
    assert _exact_lrp(A, 0, Q(0)) == ([Q(8), Q(-21)], Q(-19, 2))
    assert _exact_lrp(A, 1, Q(0)) == ([Q(0), Q(19, 2)], Q(33, 4))
    assert _exact_lrp(A, 0, Q(1, 2))[0] == [Q(14958377, 2880000), Q(-1976513, 128000)]
    assert _exact_lrp(A, 1, Q(1, 2))[0] == [Q(-24409, 480000), Q(455763, 64000)]
    tol = 32 * U * 21
    for target in (0, 1):
        for eps, exact_eps in ((0.5, Q(1, 2)), (1e-9, Q(0))):
            # ε = 1e-9 against ε = 0: the ε-terms change α by ≈ ε·Σ|R/z| < 1e-7, below ``tol``
            alpha, f = _exact_lrp(A, target, exact_eps)
            exp = camlib.explain(model, x, "lrpcam", target=target, epsilon=eps)
            _assert_close(exp.coefficients, [float(v) for v in alpha], tol)
            total, output = exp.info["conservation"]
            _assert_close(total, [float(sum(alpha))], tol)
            _assert_close(output, [float(f)], tol)


def _dyadic_maps(count: int, seed: int) -> list:
    """Maps with entries k/4, |k| <= 12 (exact in float32, and so are z and s), without ties in the
    pooling."""
    g = torch.Generator().manual_seed(seed)
    found = []
    while len(found) < count:
        k = torch.randint(-12, 13, (2, 2), generator=g)
        a = [[Q(int(v), 4) for v in row] for row in k]
        try:
            _exact_lrp(a, 0, Q(0))
        except AssertionError:
            continue
        found.append(a)
    return found


def test_residual_tail_closed_form_on_a_batch():
    """A batch of five images (the hand image, A = 0, three more) against :func:`_exact_lrp`, both
    targets, ε = ½: rows must not mix, A = 0 gives α = 0."""
    model = _model(_ResidualTail(), 2, (1, 2))
    maps = [A, [[Q(0)] * 2] * 2, *_dyadic_maps(3, seed=4)]
    x = torch.stack([_image(*[[row] for row in a]) for a in maps])
    for target in (0, 1):
        exact = [_exact_lrp(a, target, Q(1, 2)) for a in (maps[0], *maps[2:])]
        exact.insert(1, ([Q(0), Q(0)], Q(0)))  # A = 0 ties in the pooling; every A ⊙ (...) is 0
        scale = max(abs(float(v)) for alpha, f in exact for v in (*alpha, f))
        exp = camlib.explain(model, x, "lrpcam", target=target, epsilon=0.5)
        _assert_close(exp.coefficients, [[float(v) for v in alpha] for alpha, _ in exact], 32 * U * scale)
        assert exp.coefficients[1].abs().max() == 0


# ------------------------------------------------------------------------------------------------
# 2. What captum does at operations that are not modules
# ------------------------------------------------------------------------------------------------


def _captum_alpha(tail: nn.Module, a: torch.Tensor, target: int) -> torch.Tensor:
    from captum.attr import LRP

    return LRP(tail.eval()).attribute(a.clone().requires_grad_(True), target=target).detach().sum((2, 3))


@captum_hooks
def test_captum_at_a_residual_sum():
    """captum applies rules to modules only. With its ``Addition_Module`` the sum gets the ε-rule
    (the z-rule), as camlib's does: the same α. With a plain ``+`` (torchvision's ResNets write
    ``out += identity``) the sum's backward passes the relevance R_s whole to both branches, the
    ReLU hands it on, the convolution divides it by its z, and at A, which feeds both the convolution
    and the skip, captum's one hook multiplies the sum of the two gradients by A:

        R_A = A ⊙ (Mᵀ (R_s / (z + ε·sign z)) + R_s),

    so the skip's share is A ⊙ R_s (relevance times activation) and the convolution gets all of R_s
    instead of its part y/s. Checked here against that formula; at ResNet50's layer4.1 this moves
    Σα from F^c = -1135 to -1.6e6 (measured when written)."""
    a = torch.tensor([[[float(v) for v in row]] for row in A])[None]  # (1, 2, 1, 2)
    model = _model(_ResidualTail(), 2, (1, 2))
    eps = 1e-9
    for target in (0, 1):
        ours = camlib.explain(model, _image(*[[row] for row in A]), "lrpcam", target=target).coefficients
        from captum.attr._utils.custom_modules import Addition_Module

        _assert_close(_captum_alpha(_ResidualTail(Addition_Module()), a, target)[0], ours, 32 * U * 21)
        plain = _captum_alpha(_ResidualTail(), a, target)[0]
        # the formula above, in float64 from the exact forward values
        tail = _ResidualTail().double()
        ad = a.double()
        with torch.no_grad():
            z = tail.conv(ad)
            s = torch.relu(z) + ad
            m = s.amax(3, keepdim=True)
            f = tail.fc(m.flatten(1))[0, target]
            r_m = m[0, :, 0, 0] * tail.fc.weight[target] * f / (f + eps * _sign(float(f)))
            r_s = torch.where(s == m, s * (r_m / (m[0, :, 0, 0] + eps)).view(1, 2, 1, 1), torch.zeros_like(s))
            w = tail.conv.weight[:, :, 0, 0]
            grad = torch.einsum("kj,bkhw->bjhw", w, r_s / torch.where(z >= 0, z + eps, z - eps)) + r_s
            expected = (ad * grad).sum((2, 3))[0]
        _assert_close(plain, expected, 32 * U * 21)
        assert (plain - ours).abs().max() > 1.0  # so captum's plain sum is not the z-rule


class _HeldProductTail(nn.Module):
    """A -> relu(fc1(flatten A)) * q -> fc2, with q a fixed vector (as the VQA model's question)."""

    def __init__(self, q: torch.Tensor, module: bool):
        super().__init__()
        self.fc1, self.relu, self.fc2 = nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)
        self.q = q
        if module:
            from captum.attr._utils.lrp_rules import EpsilonRule

            self.scale = _Scale(q)
            self.scale.rule = EpsilonRule()
        else:
            self.scale = None
        with torch.no_grad():
            self.fc1.weight.copy_(torch.tensor([[1.0, -1, 0.5, 2], [-2, 1, 1, 0.5], [0.5, 0.5, -1, 1]]))
            self.fc1.bias.copy_(torch.tensor([0.5, -0.25, 1]))
            self.fc2.weight.copy_(torch.tensor([[1.0, -0.5, 2], [0.5, 1, -1]]))
            self.fc2.bias.copy_(torch.tensor([0.25, -0.5]))

    def forward(self, a, q=None):
        h = self.relu(self.fc1(torch.flatten(a, 1)))
        h = h * (self.q if q is None else q) if self.scale is None else self.scale(h)
        return self.fc2(h)


class _Scale(nn.Module):
    def __init__(self, q):
        super().__init__()
        self.q = q

    def forward(self, x):
        return x * self.q


class _HeldNet(nn.Module):
    def __init__(self, tail: nn.Module):
        super().__init__()
        self.head, self.tail = _copy_head(2), tail

    def forward(self, image, held):
        return self.tail(self.head(image), held)


class _Held(CamModel):
    def extra_inputs(self, batch: int, held=None, **options):
        return (held.expand(batch, *held.shape[1:]),), options


@captum_hooks
def test_captum_at_a_held_fixed_product():
    """A product h ⊙ q with a held-fixed q is a linear layer without bias: the ε-rule gives
    R_h = R_u ⊙ hq/(hq + ε·sign), i.e. relevance passes (camlib; captum with the product as a module
    carrying an ``EpsilonRule``: the same α). With a plain ``*`` captum multiplies the relevance by q,
    R_h = q ⊙ R_u, and conservation fails even with every bias zero."""
    q = torch.tensor([[2.0, -0.5, 0.25]])
    x = _image([[1, -1]], [[0.5, 2]])
    a = x[:2][None]
    net = _HeldNet(_HeldProductTail(q, module=False))
    model = _Held("held-product", net, torch.device("cpu"), ["y", "z"], default_layer="head", input_size=(1, 2),
                  example_extra=(q,))
    for target in (0, 1):
        ours = camlib.explain(model, x, "lrpcam", target=target, held=q)
        f = float(ours.logits[target])
        scale = max(abs(f), ours.coefficients.abs().max().item())
        _assert_close(_captum_alpha(_HeldProductTail(q, module=True), a, target)[0], ours.coefficients,
                      32 * U * scale)
        plain = _captum_alpha(_HeldProductTail(q, module=False), a, target)[0]
        assert (plain - ours.coefficients).abs().max() > 0.1 * scale
    bias_free = _HeldProductTail(q, module=False)
    with torch.no_grad():
        bias_free.fc1.bias.zero_()
        bias_free.fc2.bias.zero_()
    model = _Held("held-product-0", _HeldNet(bias_free), torch.device("cpu"), ["y", "z"], default_layer="head",
                  input_size=(1, 2), example_extra=(q,))
    exp = camlib.explain(model, x, "lrpcam", target=0, held=q)
    total, output = exp.info["conservation"]
    _assert_close(total, output, 32 * U * abs(float(output[0])))  # camlib conserves
    plain = _captum_alpha(bias_free, a, 0)
    assert abs(float(plain.sum()) - float(output[0])) > 0.1 * abs(float(output[0]))  # captum's plain * does not


# ------------------------------------------------------------------------------------------------
# 3. Activations, concatenation, refusals
# ------------------------------------------------------------------------------------------------


def test_relu6_passes_relevance_where_its_gradient_is_zero():
    # F(A) = 2 * relu6(Σ A): with A = 8 in each of 4 cells relu6 saturates (6), its gradient is 0,
    # but relevance passes it unchanged: R = F = 12 reaches the sum, whose ε-rule hands each cell
    # 8 · 12 / 32 = 3 (no bias: conserved), α = 12. Gradient × input would give 0.
    class Tail(nn.Module):
        def forward(self, a):
            s = a.sum((1, 2, 3))[:, None]
            return torch.cat([2 * nn.functional.relu6(s), s], 1)

    model = _model(Tail(), 1, (2, 2))
    x = torch.zeros(3, 2, 2)
    x[0] = 8.0
    exp = camlib.explain(model, x, "lrpcam", target=0)
    _assert_close(exp.coefficients, [12.0], 32 * U * 12)
    _assert_close(exp.info["conservation"][0], [12.0], 32 * U * 12)


def test_concatenation_and_silu_keep_relevance_with_its_values():
    # F = w · [silu(A); 3A] (a concatenation along the channels, then a bias-free linear layer):
    # relevance of each concatenated value goes back to where it came from, SiLU passes it, and with
    # no bias the total is F: α_k = Σ_p (w_{k,p} silu(A_kp) + 3 w_{K+k,p} A_kp).
    class Tail(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 2, bias=False)
            with torch.no_grad():
                self.fc.weight.copy_(torch.tensor([[1.0, -2, 0.5, 1, -1, 0.25, 2, -0.5],
                                                   [0.5, 1, -1, 2, 1, 1, -0.5, 0.25]]))

        def forward(self, a):
            return self.fc(torch.flatten(torch.cat([nn.functional.silu(a), 3 * a], 1), 1))

    model = _model(Tail(), 2, (1, 2))
    x = _image([[1, -0.5]], [[2, 0.25]])
    a = x[:2]
    w = model.module[1].fc.weight.detach().view(2, 4, 1, 2)[0]  # target 0: (concatenated channel, row, position)
    expected = (w[:2, 0] * nn.functional.silu(a[:, 0]) + 3 * w[2:, 0] * a[:, 0]).sum(1)
    exp = camlib.explain(model, x, "lrpcam", target=0)
    scale = float(expected.abs().max())
    _assert_close(exp.coefficients, expected, 32 * U * scale)
    total, output = exp.info["conservation"]
    _assert_close(total, output, 32 * U * scale)


@pytest.mark.parametrize("kind, what", [("squeeze-excitation", "mul"), ("sigmoid", "sigmoid"),
                                        ("division", "truediv")])
def test_operations_without_a_rule_are_refused(kind, what):
    class Tail(nn.Module):
        def forward(self, a):
            if kind == "squeeze-excitation":  # x * tanh(mean(x)): a product of two activation paths
                h = a * torch.tanh(a.mean((2, 3), keepdim=True))
            elif kind == "sigmoid":  # sigmoid(0) = ½: relevance would reach inputs of 0
                h = torch.sigmoid(a)
            else:
                h = a / (a.sum((1, 2, 3), keepdim=True) + 1)
            return h.sum((1, 2, 3))[:, None].repeat(1, 2)

    model = _model(Tail(), 1, (2, 2))
    with pytest.raises(UnsupportedTailError, match=f"LRP-CAM has no relevance rule.*{what}"):
        camlib.explain(model, torch.rand(1, 3, 2, 2), "lrpcam")


def test_epsilon_must_be_positive(tiny):
    with pytest.raises(ValueError, match="epsilon"):
        camlib.explain(tiny, torch.rand(3, 16, 16), "lrpcam", epsilon=0.0)
    split = tiny.split()
    from camlib.engine.reference.lrp import RelevancePass

    a = torch.rand(1, 6, 8, 8)
    with pytest.raises(ValueError, match="epsilon"):
        RelevancePass(lrp_tail(split.tail), a, ()).lrp(torch.tensor([0]), float("nan"))


# ------------------------------------------------------------------------------------------------
# 4. The rewrite: identity forward, cached per split, no hooks
# ------------------------------------------------------------------------------------------------


def test_rewritten_tail_computes_the_same_logits_and_is_cached(tiny):
    split = tiny.split()
    torch.manual_seed(0)
    a = torch.rand(3, 6, 8, 8)
    with torch.no_grad():
        plain = split.tail(a)
    from camlib.engine.reference.lrp import _Stabilizer

    assert torch.equal(lrp_tail(split.tail)(a, _Stabilizer(1e-9)), plain)  # every inserted node is an identity
    camlib.explain(tiny, torch.rand(3, 16, 16), "lrpcam")
    first = split.memo(LrpTail, lambda: pytest.fail("the rewritten tail was not cached"))
    camlib.explain(tiny, torch.rand(3, 16, 16), "lrpcam", epsilon=0.5)
    assert split.memo(LrpTail, lambda: None) is first
    for m in tiny.module.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
    assert not any(p.requires_grad for p in tiny.module.parameters())
