"""Antithetic SHAP-CAM: its expectation over all its samples (enumerated), exactness of one pair on a
game of order two and of one ordering on a linear tail, the sampler, determinism, batches, threads,
the VQA model with the question held fixed."""

import itertools
import math

import pytest
import torch
from ordering_games import (check_batch_equals_one_at_a_time_and_the_reference_backend,
                            check_one_ordering_is_exact_on_a_linear_tail,
                            check_running_estimate_determinism_and_local_accuracy, check_threads_sharing_one_model,
                            check_vqa_with_the_question_held_fixed, game_of, quadratic_model, quadratic_shapley,
                            tiny_game, value_tolerance)

import camlib
from camlib.methods import get_method
from camlib.methods.shapley import antithetic_permutations, running_estimate, sample_permutations

METHOD = get_method("antishapcam")


def test_metadata_budget_and_label():
    assert METHOD.key == "antishapcam" and METHOD.title == "Antithetic SHAP-CAM"
    assert METHOD.cost is camlib.methods.Cost.PER_ORDERING and not METHOD.default and not METHOD.paper
    assert METHOD.evaluations(320, permutations=7) == 7 * 321  # nominally K + 1 per ordering
    assert METHOD.label(permutations=100) == "antishapcam_100"
    with pytest.raises(ValueError, match="permutations"):
        camlib.explain(quadratic_model(), torch.rand(3, 16, 16), "antishapcam", permutations=0)


def test_the_sampler_pairs_shapcams_orderings_with_their_reverses():
    orders = antithetic_permutations(9, 7, seed=4)
    assert orders.shape == (7, 9)
    assert torch.equal(orders[0::2], sample_permutations(9, 4, seed=4))  # uniform: SHAP-CAM's sampler
    assert torch.equal(orders[1::2], orders[0:6:2].flip(1))
    assert torch.equal(antithetic_permutations(9, 3, seed=4), orders[:3])  # prefix-consistent
    assert not torch.equal(antithetic_permutations(9, 7, seed=5), orders)


def test_expectation_over_all_samples_is_the_exact_shapley_value(tiny):
    """One pair (|Π| = 2) is (π, reverse π) with π uniform on the 6! orderings: the mean of the
    estimator over all 720 of them, each through Algorithm 1, is Eq. (6) enumerated over the 2^6
    coalitions. (|Π| > 2 is a mean of such pairs and of single uniform orderings: the same mean.)"""
    game, exact, _, _ = tiny_game(tiny)
    total = torch.zeros(game.n, dtype=torch.float64)
    out = torch.empty(2, game.n, dtype=torch.float64)
    for order in itertools.permutations(range(game.n)):
        order = torch.tensor(order)
        running_estimate(game, torch.stack([order, order.flip(0)]), out)
        total += out[-1]
    assert exact.abs().max() > 1.0  # a nontrivial game
    torch.testing.assert_close(total / math.factorial(game.n), exact, rtol=0, atol=value_tolerance(game))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_pair_is_exact_on_a_game_of_order_two(seed):
    """v(a') = w (b + Σ a'_k d_k)² + c: one ordering is not exact, one pair is, for any seed."""
    model = quadratic_model()
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(10 + seed))
    exp = camlib.explain(model, image, "antishapcam", permutations=3, seed=seed)
    exact = quadratic_shapley(model, exp.activations, int(exp.target))
    running = exp.info["running"][:, 0].double()
    tol = value_tolerance(game_of(model, image, int(exp.target)))
    assert float((running[0] - exact).abs().max()) > 100 * tol  # a single ordering is off
    torch.testing.assert_close(running[1], exact, rtol=0, atol=tol)  # its pair is not
    assert float(exact.abs().max()) > 1e3 * tol


def test_one_ordering_is_exact_on_a_linear_tail(lite0, chelsea):
    check_one_ordering_is_exact_on_a_linear_tail("antishapcam", lite0, chelsea)


def test_running_estimate_determinism_and_local_accuracy(tiny):
    check_running_estimate_determinism_and_local_accuracy("antishapcam", antithetic_permutations, tiny)


def test_batch_equals_one_at_a_time_and_the_reference_backend(tiny):
    check_batch_equals_one_at_a_time_and_the_reference_backend("antishapcam", tiny)


def test_threads_sharing_one_model(tiny):
    check_threads_sharing_one_model("antishapcam", tiny)


def test_vqa_with_the_question_held_fixed():
    check_vqa_with_the_question_held_fixed("antishapcam")
