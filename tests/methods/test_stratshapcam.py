"""Stratified SHAP-CAM: the nested strata by exhaustive enumeration of their random bits, the
stratification of the arrival times, unbiasedness on the tiny game, exactness of one pair on a game
of order two and of one ordering on a linear tail, determinism, batches, threads, the VQA model."""

import itertools

import pytest
import torch
from ordering_games import (check_batch_equals_one_at_a_time_and_the_reference_backend,
                            check_one_ordering_is_exact_on_a_linear_tail,
                            check_running_estimate_determinism_and_local_accuracy, check_threads_sharing_one_model,
                            check_vqa_with_the_question_held_fixed, game_of, quadratic_model, quadratic_shapley,
                            tiny_game, value_tolerance)

import camlib
from camlib.methods import get_method
from camlib.methods.shapley import (STRATA_LEVELS, nested_strata, running_estimate, stratified_arrival_times,
                                    stratified_permutations)

METHOD = get_method("stratshapcam")


def test_metadata_budget_and_label():
    assert METHOD.key == "stratshapcam" and METHOD.title == "Stratified SHAP-CAM"
    assert METHOD.cost is camlib.methods.Cost.PER_ORDERING and not METHOD.default and not METHOD.paper
    assert METHOD.evaluations(1152, permutations=10) == 10 * 1153  # nominally K + 1 per ordering
    assert METHOD.label(permutations=20) == "stratshapcam_20"


def test_nested_strata_by_enumerating_every_bit():
    """L = 3 levels, 8 points: all 2^12 settings of the 12 random bits of one map (taken as 4096
    maps at once). In every setting each aligned block of 2^m points covers the 2^m strata of width
    2^-m once; over the settings each point's stratum is uniform (512 settings of each of 8)."""
    levels, points = 3, 8
    settings = torch.tensor(list(itertools.product([0, 1], repeat=levels * points // 2)))  # (4096, 12)
    bits = [settings[:, m * 4:(m + 1) * 4] for m in range(levels)]
    strata = nested_strata(bits)
    assert strata.shape == (4096, points) and strata.min() == 0 and strata.max() == 7
    for m in range(levels + 1):
        coarse = strata >> (levels - m)  # the stratum at level m
        blocks = coarse.view(4096, points >> m, 1 << m)
        assert (blocks.sort(-1).values == torch.arange(1 << m)).all(), m
    for t in range(points):
        assert torch.equal(torch.bincount(strata[:, t], minlength=8), torch.full((8,), 512))
    # Points 0 and 4 share the group of their first two digits with probability 1/4 (those digits
    # come from independent blocks of 2 and of 4 points), and then take opposite third digits: point
    # 4 is never in point 0's stratum, in its sibling (s XOR 1) in 1/4 of the settings, and in each
    # of the other 6 in 3/4 · 1/6 of them.
    joint = torch.bincount(strata[:, 0] * 8 + strata[:, 4], minlength=64).view(8, 8)
    s = torch.arange(8)
    expected = torch.full((8, 8), 64)
    expected[s, s], expected[s, s ^ 1] = 0, 128
    assert torch.equal(joint, expected)
    assert nested_strata(bits, 5).equal(strata[:, :5])


def test_arrival_times_are_stratified_per_map_and_prefix_consistent():
    """Each aligned run of 2^m pairs in a block gives every map one time (x or 1 - x) in each of the
    2^(m+1) intervals of width 2^-(m+1)."""
    block = 1 << STRATA_LEVELS
    x = stratified_arrival_times(40, block + 37, seed=9)
    assert x.shape == (block + 37, 40) and x.dtype == torch.float64
    assert (x >= 0).all() and (x < 1).all()
    for m in range(STRATA_LEVELS + 1):
        runs = x[:block].view(block >> m, 1 << m, 40)
        both = torch.cat([runs, 1 - runs], 1)  # (runs, 2^(m+1), maps)
        cells = torch.floor(both * (2 << m)).long().sort(1).values
        assert (cells == torch.arange(2 << m)[None, :, None]).all(), m
    assert torch.equal(stratified_arrival_times(40, 20, seed=9), x[:20])
    assert torch.equal(stratified_arrival_times(40, block + 37, seed=9), x)
    assert not torch.equal(stratified_arrival_times(40, 20, seed=10), x[:20])


def test_orderings_are_argsorts_of_the_arrival_times_with_their_reverses():
    orders = stratified_permutations(30, 11, seed=3)
    forward = torch.argsort(stratified_arrival_times(30, 6, seed=3), dim=1)
    assert torch.equal(orders[0::2], forward) and torch.equal(orders[1::2], forward[:5].flip(1))
    assert all(sorted(row.tolist()) == list(range(30)) for row in orders)
    assert torch.equal(stratified_permutations(30, 4, seed=3), orders[:4])


def test_unbiased_on_the_tiny_game(tiny):
    """The mean over 400 seeds of the 8-ordering estimate, to the exact Shapley values: within 5
    standard errors (the standard error measured from the 400 estimates themselves) plus the
    float32 tolerance. The estimate's error is ~10× smaller than SHAP-CAM's with the same orderings
    budget, which the second assertion checks on the same seeds (a ratio of mean squared errors)."""
    game, exact, _, _ = tiny_game(tiny)
    out = torch.empty(8, game.n, dtype=torch.float64)
    estimates, plain = [], []
    for seed in range(400):
        running_estimate(game, stratified_permutations(game.n, 8, seed), out)
        estimates.append(out[-1].clone())
        running_estimate(game, camlib.methods.shapley.sample_permutations(game.n, 8, seed), out)
        plain.append(out[-1].clone())
    estimates, plain = torch.stack(estimates), torch.stack(plain)
    error = estimates.mean(0) - exact
    standard = estimates.std(0) / 400 ** 0.5
    assert (error.abs() <= 5 * standard + value_tolerance(game)).all(), (error, standard)
    mse = ((estimates - exact) ** 2).sum(1).mean()
    assert mse < 0.25 * ((plain - exact) ** 2).sum(1).mean()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_pair_is_exact_on_a_game_of_order_two(seed):
    model = quadratic_model()
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(10 + seed))
    exp = camlib.explain(model, image, "stratshapcam", permutations=2, seed=seed)
    exact = quadratic_shapley(model, exp.activations, int(exp.target))
    tol = value_tolerance(game_of(model, image, int(exp.target)))
    torch.testing.assert_close(exp.coefficients.double(), exact, rtol=0, atol=tol)
    assert float(exact.abs().max()) > 1e3 * tol


def test_one_ordering_is_exact_on_a_linear_tail(lite0, chelsea):
    check_one_ordering_is_exact_on_a_linear_tail("stratshapcam", lite0, chelsea)


def test_running_estimate_determinism_and_local_accuracy(tiny):
    check_running_estimate_determinism_and_local_accuracy("stratshapcam", stratified_permutations, tiny)


def test_batch_equals_one_at_a_time_and_the_reference_backend(tiny):
    check_batch_equals_one_at_a_time_and_the_reference_backend("stratshapcam", tiny)


def test_threads_sharing_one_model(tiny):
    check_threads_sharing_one_model("stratshapcam", tiny)


def test_vqa_with_the_question_held_fixed():
    check_vqa_with_the_question_held_fixed("stratshapcam")
