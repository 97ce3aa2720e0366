"""KernelSHAP-CAM against its oracles (issue #14, item 3).

* With every coalition (2^K - 2 besides the empty and the full one) the Shapley-kernel regression
  is the exact Shapley value (Lundberg & Lee 2017, Theorem 2): checked against
  :func:`camlib.methods.shapley.exact_shapley` on random tables of 2^K values (any game) and on the
  ``tiny`` network's nonlinear tail (K = 6, the values the method evaluated).
* On a linear game the regression is exact with any sample count that determines α (at least
  K - 1 distinct complementary pairs); below that it returns the minimum-norm solution, whose
  closed form (the projection of the true values on the directions the pairs see) is checked too.
* Local accuracy Σα = F^c(A) - F^c(0) on every tail (the efficiency constraint is exact).
* Determinism under a seed, batch = one image at a time, threads sharing one model, the VQA model
  with the question held fixed, and ``evaluations()`` = the coalitions the game was asked for.

Tolerances. u = 2^-24 (float32), ε = 2^-52 (float64). The method solves in float64 and returns
float64 α from ``coefficients`` (float32 through ``camlib.explain``, whose cast moves each α_k by
at most u·|α_k|). Tail values computed along different paths (fast against reference backend, a
direct tail pass against the game) differ by float32 rounding: ≤ RTOL·max|logit| with RTOL = 1e-4,
the bound argued in tests/engine/test_agreement.py. α is linear in the values (α = S·v), so a
difference δv in the values moves α by at most ‖S‖_∞·‖δv‖_∞; the tests compute ‖S‖_∞ from the
recorded coalitions and weights where they need it.
"""

from __future__ import annotations

import concurrent.futures
import math

import pytest
import torch

import camlib
from camlib.methods import get_method
from camlib.methods.kernelshapcam import KernelShapCAM, budget, coalitions, constrained_fit, plan
from camlib.methods.shapley import exact_shapley
from coalition_games import EPS, U, FakeQuantities, copy_head_model, linear_game, table_game

RTOL = 1e-4
METHOD = KernelShapCAM()


def _alpha(q, **options):
    return METHOD.coefficients(q, **METHOD.resolve_options(options))


def _normal_matrix(info) -> torch.Tensor:
    """P ZᵀWZ P + γ 11ᵀ/K: the matrix the method factors (γ = its mean diagonal)."""
    z, w = info["coalitions"].double(), info["weights"]
    k = z.shape[1]
    p = torch.eye(k, dtype=torch.float64) - 1.0 / k
    g = p @ (z.T * w) @ z @ p
    return g + g.diagonal().mean() / k


def _operator(info) -> torch.Tensor:
    """S (K, n): α - Δ/K = S (v - v(∅) - Δ|a'|/K) for the recorded coalitions and weights, so that
    ‖S‖_∞ bounds how value errors move α (the Δ/K part adds at most 2‖δv‖_∞/K per map)."""
    z, w = info["coalitions"].double(), info["weights"]
    p = torch.eye(z.shape[1], dtype=torch.float64) - 1.0 / z.shape[1]
    return torch.linalg.solve(_normal_matrix(info), p @ (z.T * w))


def _lookup(info, i: int):
    """The game of image i as the method evaluated it: its recorded values, v(∅) and v(full)."""
    table = {tuple(m.tolist()): float(v) for m, v in zip(info["coalitions"], info["values"][i])}
    k = info["coalitions"].shape[1]
    v0 = float(info["reference_logit"][i])
    table[(False,) * k] = v0
    table[(True,) * k] = v0 + float(info["local_accuracy"][1][i])
    return lambda masks: torch.tensor([table[tuple(m.tolist())] for m in masks], dtype=torch.float64)


# -- every coalition: the exact Shapley values ------------------------------------------------------

@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 7])
def test_every_coalition_gives_the_exact_shapley_values_of_any_game(k):
    games = [table_game(k, seed) for seed in range(3)]
    q = FakeQuantities(games, k)
    alpha = _alpha(q)  # the default budget 2k + 2048 covers all 2^k - 2 coalitions for k <= 11
    assert q.info["coalitions"].shape[0] == 2 ** k - 2
    assert len({tuple(m.tolist()) for m in q.info["coalitions"]}) == 2 ** k - 2
    # A backward-stable float64 solve errs by about κ·k·ε relative to the values (κ: the condition
    # number of the normal equations, asserted small), the oracle's sum over 2^k coalitions by 2^k ε.
    kappa = float(torch.linalg.cond(_normal_matrix(q.info))) if k > 1 else 1.0
    assert kappa < 100
    for i, game in enumerate(games):
        exact = exact_shapley(game, k)
        scale = float(game(torch.tensor([[True] * k, [False] * k])).abs().max()) + float(exact.abs().max())
        tol = 64 * (kappa * k + 2 ** k) * EPS * max(scale, 1.0)
        torch.testing.assert_close(alpha[i], exact, rtol=0, atol=tol)


def test_every_coalition_on_the_tiny_network(tiny):
    torch.manual_seed(3)
    image = torch.rand(3, 16, 16)
    exp = camlib.explain(tiny, image, "kernelshapcam")  # default: all 62 coalitions (+ the 2 ends)
    assert exp.info["coalitions"].shape == (62, 6)
    exact = exact_shapley(_lookup(exp.info, 0), 6)
    assert exact.abs().max() > 1.0  # a game worth explaining
    # the float32 cast of α (u·|α|) dominates the float64 solve (1e-12 of the values, as above)
    torch.testing.assert_close(exp.coefficients.double(), exact, rtol=2 * U, atol=1e-12 * exp.logits.abs().max())
    # ... and the values are the tail's: a masked tail pass per coalition, in float32
    split = tiny.split("features")
    masks = exp.info["coalitions"]
    with torch.inference_mode():
        direct = split.tail(exp.activations[None] * masks[:, :, None, None])[:, int(exp.target)]
    scale = float(exp.logits.abs().max())
    assert (direct.double() - exp.info["values"][0]).abs().max() <= RTOL * scale


def test_reference_backend_gives_the_same_values(tiny):
    """Fast coalitions against masked tail passes: the values agree to float32 rounding, and α,
    Shapley values of those values (‖S‖_∞ <= 2: each α_k is a mean of differences), to twice that."""
    torch.manual_seed(4)
    images = torch.rand(2, 3, 16, 16)
    fast = camlib.explain(tiny, images, "kernelshapcam")
    reference = camlib.explain(tiny, images, "kernelshapcam", backend="reference")
    assert fast.info["backends"] == {"coalition game": "fast-coalitions"}
    assert reference.info["backends"] == {"coalition game": "naive-coalitions"}
    assert torch.equal(fast.info["coalitions"], reference.info["coalitions"])
    scale = float(fast.logits.abs().max())
    dv = (fast.info["values"] - reference.info["values"]).abs().max()
    dv = max(float(dv), float((fast.info["reference_logit"] - reference.info["reference_logit"]).abs().max()))
    assert dv <= RTOL * scale
    bound = 2 * 2 * dv + 2 * U * float(fast.coefficients.abs().max())
    assert float((fast.coefficients - reference.coefficients).abs().max()) <= bound + 1e-12 * scale


# -- linear games ------------------------------------------------------------------------------------

@pytest.mark.parametrize("samples", [120, 400, 0])
def test_linear_game_is_exact_once_the_coalitions_determine_it(samples):
    """K = 40 maps (2^40 coalitions: sampled). Each complementary pair adds one direction, so at
    least K - 1 = 39 pairs are needed (random pairs that few are often dependent: 60 here); 200
    pairs; the default 2K + 2048 coalitions."""
    k = 40
    d = torch.randn(k, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    q = FakeQuantities([linear_game(0.7, d)], k)
    alpha = _alpha(q, samples=samples, seed=5)
    z = q.info["coalitions"].double()
    p = torch.eye(k, dtype=torch.float64) - 1.0 / k
    assert torch.linalg.matrix_rank(z @ p) == k - 1  # the design determines α
    # exact up to the float64 solve: κ(S) ε-level, far under 1e-9 for these well-spread designs
    torch.testing.assert_close(alpha[0], d, rtol=0, atol=1e-9)


def test_too_few_coalitions_give_the_minimum_norm_solution():
    """20 samples = 10 pairs for K = 40: α - Δ/K is the projection of d - mean(d) on the span of
    the pairs' directions P a' (the minimum-norm solution of a consistent system)."""
    k = 40
    d = torch.randn(k, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    q = FakeQuantities([linear_game(-1.5, d)], k)
    alpha = _alpha(q, samples=20, seed=1)[0]
    z = q.info["coalitions"].double()
    p = torch.eye(k, dtype=torch.float64) - 1.0 / k
    basis = torch.linalg.svd(z @ p, full_matrices=False).Vh[:10]  # 10 independent directions
    assert torch.linalg.matrix_rank(z @ p) == 10
    expected = d.sum() / k + basis.T @ (basis @ (d - d.mean()))
    torch.testing.assert_close(alpha, expected, rtol=0, atol=1e-10)
    assert abs(float(alpha.sum() - d.sum())) <= 1e-12 * float(d.abs().sum())
    assert (alpha - d).abs().max() > 0.1  # not the values: the test can tell


def test_linear_tail_gives_w_times_mean_activation(resnet18, chelsea):
    """ResNet18's layer4 (512 maps; global average pooling + FC): the game is affine, α = w_c·mean(A_k).
    The game's values are float32 sums of K terms, each off the exact affine function by about
    √K·u·(|b_c| + Σ|w_c·mean(A_k)|) (the probabilistic bound of test_agreement, with a factor 4);
    α moves by ‖S‖_∞ times that."""
    exp = camlib.explain(resnet18, chelsea, "kernelshapcam", layer="layer4")
    assert resnet18.layer_info("layer4").linear_tail
    fc = resnet18.module.fc
    c = int(exp.target)
    d = fc.weight[c].double() * exp.activations.double().mean((1, 2))
    k = d.numel()
    assert exp.info["coalitions"].shape[0] == 2 * k + 2048
    delta_v = 4 * math.sqrt(k) * U * (abs(float(fc.bias[c])) + float(d.abs().sum()))
    s_norm = float(_operator(exp.info).abs().sum(1).max()) + 2.0 / k
    tol = s_norm * delta_v + U * float(d.abs().max())
    error = float((exp.coefficients.double() - d).abs().max())
    assert error <= tol, (error, tol, s_norm)
    assert tol < 0.01 * float(d.abs().max())  # the bound is tight enough to mean something


# -- local accuracy ------------------------------------------------------------------------------------

def _assert_local_accuracy(model, exp, tail_inputs=()):
    """Σα = v(full) - v(∅) (the game's ends) to the float32 cast of α (u·Σ|α|) plus the float64
    solve and sum (4K ε (|Δ| + Σ|α|)); the ends are the tail's F^c(A) and F^c(0) to float32 rounding."""
    alpha = exp.coefficients.double()
    total, delta = (float(v[0]) for v in exp.info["local_accuracy"])
    k = alpha.numel()
    assert total == pytest.approx(float(alpha.sum()), abs=1e-9 * float(alpha.abs().sum()))
    tol = U * float(alpha.abs().sum()) + 4 * k * EPS * (abs(delta) + float(alpha.abs().sum()))
    assert abs(float(alpha.sum()) - delta) <= tol
    split = model.split(exp.layer)
    c = int(exp.target)
    with torch.inference_mode():
        full = split.tail(exp.activations[None], *tail_inputs)[0, c]
        zero = split.tail(torch.zeros_like(exp.activations[None]), *tail_inputs)[0, c]
    scale = float(exp.logits.abs().max())
    assert abs(float(full - zero) - delta) <= 2 * RTOL * scale
    assert abs(float(exp.info["reference_logit"][0]) - float(zero)) <= RTOL * scale


@pytest.mark.parametrize("fixture, layer, samples", [("tiny", "features", 0), ("lite0", "blocks.6", 800),
                                                      ("lite0", "bn2", 400)])
def test_local_accuracy_on_every_tail(request, chelsea, fixture, layer, samples):
    """tiny (nonlinear, every coalition), EfficientNet-Lite0 at blocks.6 (320 maps; ReLU6, depthwise
    convolutions; 400 pairs) and bn2 (linear; 400 samples for 1280 maps: too few to determine α,
    the minimum-norm branch). The VQA model's tail is the next test."""
    model = request.getfixturevalue(fixture)
    image = chelsea if fixture == "lite0" else torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    exp = camlib.explain(model, image, "kernelshapcam", layer=layer, samples=samples)
    _assert_local_accuracy(model, exp)


def test_vqa_with_the_question_held_fixed():
    from camlib.vqa import scenes

    model = camlib.load_model("vqa_shapes", device="cpu")
    scene = scenes.generate_scene(1_000_000_024)
    question = scenes.generate_questions(scene)[0]
    image = scenes.to_tensor(scene.image)
    exp = camlib.explain(model, image[0], "kernelshapcam", question=question.text, samples=600)
    assert exp.coefficients.shape == (64,)
    assert model.class_names[int(exp.target)] == question.answer
    split = model.split(exp.layer)
    with torch.inference_mode():
        _, *fixed = split.head(model.normalize(image), model.question_tokens(question.text))
    _assert_local_accuracy(model, exp, tuple(fixed))
    other = camlib.explain(model, image[0], "kernelshapcam", question="how many objects are there?", samples=600)
    assert float((other.coefficients - exp.coefficients).abs().max()) > 0.1  # the question matters


# -- sampling, determinism, batches, threads ----------------------------------------------------------

def test_sampling_follows_shaps_plan():
    """The shap library's rule, worked by hand for K = 10 and a budget of 300. The Shapley kernel's
    mass on the size pairs {1, 9}, {2, 8}, {3, 7}, {4, 6}, {5} is 9·(2/9, 2/16, 2/21, 2/24, 1/25),
    5.0924 in all. {1, 9} (20 coalitions): 300 × 2/5.0924 = 117.8 >= 20, enumerated; {2, 8} (90):
    280 × 1.125/3.0924 = 101.9 >= 90, enumerated; {3, 7} (240): 190 × 0.8571/1.9674 = 82.8 < 240:
    drawn, with the rest. So 20 coalitions of weight π(1) = 9/(10·1·9) = 0.1, 90 of weight
    π(2) = 9/(45·2·8) = 0.0125, then 95 drawn pairs of sizes 3-7 sharing the mass left, 1.9674."""
    assert plan(10, 300) == (2, 95)
    masks, weights = coalitions(10, 300, seed=0)
    sizes = masks.sum(1)
    assert masks.shape == (300, 10)
    assert set(sizes[:20].tolist()) == {1, 9} and set(sizes[20:110].tolist()) == {2, 8}
    torch.testing.assert_close(weights[:20], torch.full((20,), 0.1, dtype=torch.float64), rtol=1e-15, atol=0)
    torch.testing.assert_close(weights[20:110], torch.full((90,), 0.0125, dtype=torch.float64), rtol=1e-15, atol=0)
    drawn = masks[110:]
    assert ((sizes[110:] >= 3) & (sizes[110:] <= 7)).all()
    assert torch.equal(drawn[1::2], ~drawn[0::2])  # each drawn coalition with its complement
    assert len({tuple(m.tolist()) for m in masks}) == 300
    assert float(weights[110:].sum()) == pytest.approx(9 * (2 / 21 + 2 / 24 + 1 / 25), rel=1e-12)
    assert METHOD.evaluations(10, samples=300) == 302
    assert budget(12, 0) == 2 * 12 + 2048 and budget(10, 0) == 2 ** 10 - 2


@pytest.mark.parametrize("k, samples", [(6, 0), (6, 11), (10, 300), (40, 99)])
def test_evaluations_are_the_coalitions_evaluated(k, samples):
    q = FakeQuantities([table_game(k, 0) if k <= 10 else linear_game(0.0, torch.ones(k, dtype=torch.float64))], k)
    _alpha(q, samples=samples)
    assert sum(q.calls) == METHOD.evaluations(k, samples=samples) == q.info["coalitions"].shape[0] + 2


def test_determinism_and_seeds(tiny):
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(8))
    first, again, other = (camlib.explain(tiny, image, "kernelshapcam", samples=30, seed=s) for s in (3, 3, 4))
    assert torch.equal(first.coefficients, again.coefficients)
    assert torch.equal(first.info["coalitions"], again.info["coalitions"])
    assert not torch.equal(first.info["coalitions"], other.info["coalitions"])
    assert float((first.coefficients - other.coefficients).abs().max()) > 1e-3 * float(first.coefficients.abs().max())


def test_batch_equals_one_image_at_a_time():
    """The copy-head network's maps are exact (one product each), so a batch and single images
    see the same bits, and every image gets the same coalitions: α must be identical."""
    model = copy_head_model()
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    together = camlib.explain(model, images, "kernelshapcam", target=[0, 2, 1])
    for i, target in enumerate([0, 2, 1]):
        alone = camlib.explain(model, images[i], "kernelshapcam", target=target)
        assert torch.equal(together.activations[i], alone.activations)
        assert torch.equal(together.coefficients[i], alone.coefficients)


def test_threads_sharing_one_model(tiny):
    """App sessions share one model: four threads at once get what each gets alone. The same
    arithmetic runs; only a BLAS library that splits a product by the threads it has free could
    round a value differently (a few u): α moves by ‖S‖_∞ <= 2 times that (every coalition)."""
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    alone = [camlib.explain(tiny, images[s], "kernelshapcam", seed=s) for s in range(4)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda s: camlib.explain(tiny, images[s], "kernelshapcam", seed=s), range(4)))
    for a, b in zip(alone, together):
        scale = float(a.logits.abs().max())
        assert float((a.coefficients - b.coefficients).abs().max()) <= 2 * 16 * U * scale


def test_constrained_fit_keeps_the_constraint_exactly():
    """A random regression (sampled coalitions, values unrelated to them): Σφ = Δ to float64."""
    g = torch.Generator().manual_seed(9)
    z = torch.rand(30, 12, generator=g) < 0.5
    y = torch.randn(30, generator=g, dtype=torch.float64)
    w = torch.rand(30, generator=g, dtype=torch.float64)
    phi = constrained_fit(z.double(), y, w, 3.25)
    assert abs(float(phi.sum()) - 3.25) <= 16 * 12 * EPS * (3.25 + float(phi.abs().sum()))


def test_registered_after_shapcam_and_not_default():
    keys = camlib.list_methods()
    assert keys.index("kernelshapcam") > keys.index("shapcam")
    assert not get_method("KernelSHAP-CAM").default and get_method("kernelshap").key == "kernelshapcam"
    assert METHOD.label(samples=500) == "kernelshapcam_500" and METHOD.label() == "kernelshapcam"
    with pytest.raises(ValueError, match="samples"):
        camlib.explain(copy_head_model(), torch.rand(3, 8, 8), "kernelshapcam", samples=-1)
