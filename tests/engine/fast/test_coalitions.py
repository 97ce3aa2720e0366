"""SHAP values of activation maps: exact enumeration, SHAP-CAM sampling, fast == naive prefixes."""

import itertools

import pytest
import torch

import camlib
from camlib.engine.fast.coalitions import Add, FastCoalitions
from camlib.engine.reference.coalitions import NaiveCoalitions, prefix_masks
from camlib.methods.shapley import exact_shapley, sample_permutations
from tests.numerics import assert_close_scaled, chain, fan_ins

pytestmark = pytest.mark.numerics


def test_exact_shapley_of_a_quadratic_game():
    # v(S) = (Σ_{k∈S} w_k)^2 has Shapley values φ_k = w_k · Σ_j w_j.
    w = torch.tensor([1.0, -2.0, 0.5, 3.0])
    phi = exact_shapley(lambda m: (m.double() @ w.double()) ** 2, 4)
    torch.testing.assert_close(phi, (w * w.sum()).double())


def test_permutations_are_seeded_and_valid():
    p = sample_permutations(7, 5, seed=3)
    assert torch.equal(p, sample_permutations(7, 5, seed=3))
    assert not torch.equal(p, sample_permutations(7, 5, seed=4))
    assert all(sorted(row.tolist()) == list(range(7)) for row in p)


def test_prefix_masks():
    masks = prefix_masks(torch.tensor([2, 0, 1]))
    assert masks.tolist() == [[False, False, False], [False, False, True], [True, False, True], [True, True, True]]


def _game(model, image, cls=FastCoalitions, target=None):
    exp = camlib.explain(model, image, "gradcam", target=target)
    a = exp.activations.unsqueeze(0) if exp.activations.dim() == 3 else exp.activations
    split = model.split()
    fixed = tuple(f for f in split.head(model.normalize(exp.image.unsqueeze(0)))[1:])
    return cls(split.tail, a, fixed, int(exp.target), batch_size=16)


def _tail_chain(model, image) -> float:
    """chain() of the default layer's tail: TinyNet's 6, 80 and 8 terms."""
    return chain(*fan_ins(model.split().tail, camlib.explain(model, image, "gradcam").activations[None]))


def test_all_orderings_average_to_the_exact_shapley_values(tiny):
    torch.manual_seed(0)
    image = torch.rand(3, 16, 16)
    game = _game(tiny, image)
    exact = exact_shapley(game.values, game.n)
    total = torch.zeros(game.n, dtype=torch.float64)
    orders = list(itertools.permutations(range(game.n)))
    for order in orders:
        order = torch.tensor(order)
        v = game.prefix_values(order).double()
        total[order] += v[1:] - v[:-1]
    # Prefix values (running sums) against values of masked coalitions, both float32 through the
    # tail (6, 80, 8 terms), of the size of the game's values; the average itself is float64.
    peak = game.values(torch.tensor(list(itertools.product([False, True], repeat=game.n)))).abs().max()
    rel = 2 * _tail_chain(tiny, image)
    assert_close_scaled(total / len(orders), exact, peak, rel, "mean over all orderings")
    assert exact.abs().max() > 0.1  # a nontrivial game


def test_shapcam_converges_to_exact_shapley(tiny):
    torch.manual_seed(0)
    image = torch.rand(3, 16, 16)
    game = _game(tiny, image)
    exact = exact_shapley(game.values, game.n).float()
    errors = []
    for n in (10, 100, 1000):
        exp = camlib.explain(tiny, image, "shapcam", permutations=n, seed=1)
        errors.append(float((exp.coefficients - exact).norm() / exact.norm()))
    assert errors[0] > errors[2] and errors[2] < 0.05, errors
    running = exp.info["running"]
    assert running.shape == (1000, 1, game.n)
    torch.testing.assert_close(running[-1, 0], exp.coefficients)
    # Local accuracy of every running estimate: Σα = F^c(A) - F^c(0).
    delta = game.values(torch.ones(1, game.n, dtype=torch.bool)) - game.values(torch.zeros(1, game.n, dtype=torch.bool))
    # Each ordering's steps telescope to F(A) - F(0) (prefix path against masked coalitions: twice
    # the tail's chain of the game's values), then 6 float32 α summed (chain(6) of Σ|α|).
    peak = game.values(torch.tensor(list(itertools.product([False, True], repeat=game.n)))).abs().max()
    rel = 2 * _tail_chain(tiny, image) + chain(game.n)
    scale = torch.maximum(peak, running.abs().sum(-1)[:, 0].max())
    assert_close_scaled(running.sum(-1)[:, 0], delta.expand(1000), scale, rel, "Σ of running estimates")


def _fast_equals_naive(model, layer, image, perms=2):
    exp = camlib.explain(model, image, "gradcam", layer=layer)
    split = model.split(layer)
    a = exp.activations[None]
    fast = FastCoalitions(split.tail, a, (), int(exp.target), batch_size=64)  # the fused kernel where it applies
    tensor = FastCoalitions(split.tail, a, (), int(exp.target), batch_size=64, kernel=False)
    naive = NaiveCoalitions(split.tail, a, (), int(exp.target), batch_size=64)
    # Tail values by running sums of per-map contributions against masked tail passes, both
    # float32: twice the tail's chain, of the size of the values (and of the logits: the terms of
    # the last layer; a prefix's target value can be far smaller than its terms).
    rel = 2 * chain(*fan_ins(split.tail, a))
    for order in sample_permutations(a.shape[1], perms, seed=0):
        expected = naive.prefix_values(order)
        scale = max(expected.abs().max().item(), exp.logits.abs().max().item())
        assert_close_scaled(fast.prefix_values(order), expected, scale, rel, "prefix values")
        for cumulative in (False, True):  # CPU running adds; the accelerators' cumsum path
            tensor.cumulative = cumulative
            assert_close_scaled(tensor.prefix_values(order), expected, scale, rel, f"prefix values, cumsum {cumulative}")
    expected = naive.leave_one_out()
    scale = max(expected.abs().max().item(), exp.logits.abs().max().item())
    assert_close_scaled(fast.leave_one_out(), expected, scale, rel, "leave-one-out values")
    return fast


def test_fast_equals_naive_tiny(tiny):
    fast = _fast_equals_naive(tiny, "features", torch.rand(3, 16, 16), perms=5)
    assert fast.head_row is not None  # only the target row of the last layer is evaluated


def test_fast_equals_naive_vgg16_last_relu(vgg16):
    torch.manual_seed(0)
    _fast_equals_naive(vgg16, "features.29", torch.rand(3, 224, 224), perms=1)


def test_fast_equals_naive_lite0_inner_block(lite0, chelsea):
    _fast_equals_naive(lite0, "blocks.6", chelsea, perms=2)


def test_fast_equals_naive_lite0_inside_a_block(lite0, chelsea):
    # The tail starts with the block's BatchNorm and ReLU6 and holds the block's parameters as
    # constants of the coalition game: they must not be expanded as if they had a batch dimension.
    _fast_equals_naive(lite0, "blocks.6.0.bn2", chelsea, perms=1)


def test_fast_equals_naive_resnet18_residual_tail(resnet18):
    torch.manual_seed(0)
    _fast_equals_naive(resnet18, "layer3", torch.rand(3, 224, 224), perms=1)


def test_shapcam_fast_and_naive_give_the_same_estimates(tiny):
    image = torch.rand(3, 16, 16)
    fast = camlib.explain(tiny, image, "shapcam", permutations=4, seed=5)
    naive = camlib.explain(tiny, image, "shapcam", permutations=4, seed=5, backend="reference")
    assert fast.info["backends"] == {"coalition game": "fast-coalitions"}
    assert naive.info["backends"] == {"coalition game": "naive-coalitions"}
    # Running means (float64) of differences of float32 tail values computed two ways: twice the
    # tail's chain, of the size of the values (max |logits| of the image).
    rel = 2 * chain(*fan_ins(tiny.split().tail, fast.activations[None]))
    assert_close_scaled(fast.info["running"], naive.info["running"], fast.logits.abs().max(), rel, "running estimates")


def test_linear_tail_needs_no_tail_pass_and_is_exact(lite0, chelsea):
    exp = camlib.explain(lite0, chelsea, "gradcam")
    split = lite0.split("bn2")
    fast = FastCoalitions(split.tail, exp.activations[None], (), int(exp.target))
    assert isinstance(fast.final, Add)
    w = lite0.module.classifier.weight[int(exp.target)]
    # D_k = (w_k · mean A_k + b) - b per map: relative per entry (A ≥ 0), plus u·|b| ≈ 2e-9 absolute.
    torch.testing.assert_close(fast.final.d[:, int(exp.target)], w * exp.activations.mean((1, 2)), rtol=1e-4, atol=1e-6)
