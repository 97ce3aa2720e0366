"""Shared by the tests of the estimators over orderings (SHAP-CAM's variance-reduced samplers): the
tiny network's coalition game with its exact Shapley values, a network whose game has interactions
of order two only (with its Shapley values in closed form), and the float32 error bound the tests
compare with."""

from __future__ import annotations

import itertools

import torch
import torch.nn as nn

import camlib
from camlib.engine.fast.coalitions import FastCoalitions
from camlib.methods.shapley import exact_shapley
from camlib.model import CamModel

U = 2.0 ** -24  # float32 unit roundoff


def value_tolerance(game) -> float:
    """A bound on the float32 error of a marginal contribution or of a mean of them: each value
    F^c(coalition) is a float32 computation of a few dozen roundings (one linear layer of ≤ 80
    products per output, a ReLU, pooling, two small FC layers) on terms of magnitude ≤ V, the
    largest |value| of the game times the spread of its terms (taken as 4): ≤ 32·u·4V each, a
    difference of two ≤ 256·u·V (u = 2^-24; 1.5e-5 V). Means over orderings do not add to it."""
    n = game.n
    masks = torch.tensor(list(itertools.product([False, True], repeat=n)))
    return 256 * U * float(game.values(masks).abs().max())


def game_of(model, image, target=None, layer=None) -> FastCoalitions:
    """The coalition game of one image (3, H, W) at ``layer`` for ``target`` (default: predicted)."""
    exp = camlib.explain(model, image, "gradcam", layer=layer, target=target)
    return FastCoalitions(model.split(exp.layer).tail, exp.activations[None], (), int(exp.target))


def tiny_game(model, seed: int = 0):
    """(game, exact Shapley values (K,) float64, image, target) of the 6-map tiny network on a
    random image: the fast coalition evaluator and the 2^6-coalition enumeration (Eq. 6)."""
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(seed))
    exp = camlib.explain(model, image, "gradcam")
    split = model.split()
    game = FastCoalitions(split.tail, exp.activations[None], (), int(exp.target))
    return game, exact_shapley(game.values, game.n), image, int(exp.target)


class QuadraticNet(nn.Module):
    """16x16 input, 6 maps of 16x16 at ``features``; the tail is u = W·GAP(A) + b, then
    w ⊙ u² + c: the coalition game of class j is v(a') = w_j (b + Σ_k a'_k d_k)² + c_j with
    d_k = W_k mean(A_k), of order two in a' (a product of at most two players per term)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.mix = nn.Linear(6, 1)
        self.out = nn.Linear(1, 3)

    def forward(self, x):
        u = self.mix(torch.flatten(self.pool(self.features(x)), 1))
        return self.out(u * u)


def quadratic_model() -> CamModel:
    torch.manual_seed(3)
    net = QuadraticNet()
    for p in net.parameters():
        nn.init.normal_(p, std=0.6)
    return CamModel("quadratic", net.eval(), torch.device("cpu"), ["a", "b", "c"], default_layer="features",
                    input_size=(16, 16))


def quadratic_shapley(model: CamModel, activations: torch.Tensor, target: int) -> torch.Tensor:
    """Closed form of the quadratic game's Shapley values: the marginal contribution of k to a' is
    w (d_k² + 2 d_k (b + Σ_{j ∈ a'} d_j)); a map j ≠ k precedes k in half the orderings, so
    φ_k = w d_k (2b + Σ_j d_j) (float64)."""
    net = model.module
    d = net.mix.weight[0].double() * activations.double().mean((1, 2))
    b, w = float(net.mix.bias[0]), float(net.out.weight[target, 0])
    return w * d * (2 * b + d.sum())


# -- checks shared by the samplers' tests (each test file calls them with its method) ----------------

def check_one_ordering_is_exact_on_a_linear_tail(key: str, lite0, chelsea) -> None:
    """Lite0 at bn2 (GAP + FC): every marginal contribution of map k is w_k^c mean(A_k)."""
    exp = camlib.explain(lite0, chelsea, key, permutations=1, seed=3)
    assert lite0.layer_info(exp.layer).linear_tail
    w = lite0.module.classifier.weight[int(exp.target)]
    torch.testing.assert_close(exp.coefficients, w * exp.activations.mean((1, 2)), rtol=1e-4, atol=1e-6)


def check_running_estimate_determinism_and_local_accuracy(key: str, sampler, tiny) -> None:
    game, _, image, target = tiny_game(tiny)
    exp = camlib.explain(tiny, image, key, target=target, permutations=9, seed=11)
    assert exp.info["running"].shape == (9, 1, game.n)
    assert torch.equal(exp.info["permutations"], sampler(game.n, 9, 11))
    torch.testing.assert_close(exp.info["running"][-1, 0], exp.coefficients)
    again = camlib.explain(tiny, image, key, target=target, permutations=9, seed=11)
    assert torch.equal(again.coefficients, exp.coefficients)
    other = camlib.explain(tiny, image, key, target=target, permutations=9, seed=12)
    assert not torch.allclose(other.coefficients, exp.coefficients)
    # Every ordering telescopes: Σ_k α_k = F^c(all maps) - F^c(none) after each one.
    full, empty = torch.ones(1, game.n, dtype=torch.bool), torch.zeros(1, game.n, dtype=torch.bool)
    delta = float(game.values(full) - game.values(empty))
    torch.testing.assert_close(exp.info["running"][:, 0].double().sum(1), torch.full((9,), delta, dtype=torch.float64),
                               rtol=0, atol=value_tolerance(game) * game.n)


def check_batch_equals_one_at_a_time_and_the_reference_backend(key: str, tiny) -> None:
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    batch = camlib.explain(tiny, images, key, target=[0, 2, 1], permutations=6, seed=2)
    for i, t in enumerate([0, 2, 1]):
        single = camlib.explain(tiny, images[i], key, target=t, permutations=6, seed=2)
        # the same orderings; the head's activations of a batch differ from one image's by float32
        # rounding only, which the values carry as their own rounding (value_tolerance)
        tol = value_tolerance(game_of(tiny, images[i], t))
        torch.testing.assert_close(batch.info["running"][:, i], single.info["running"][:, 0], rtol=0, atol=tol)
    naive = camlib.explain(tiny, images, key, target=[0, 2, 1], permutations=6, seed=2, backend="reference")
    assert naive.info["backends"] == {"coalition game": "naive-coalitions"}
    torch.testing.assert_close(naive.coefficients, batch.coefficients, rtol=1e-4, atol=1e-5)


def check_threads_sharing_one_model(key: str, tiny) -> None:
    import concurrent.futures

    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(8))
    alone = [camlib.explain(tiny, image, key, permutations=8, seed=s).coefficients for s in range(4)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda s: camlib.explain(tiny, image, key, permutations=8, seed=s).coefficients,
                                 range(4)))
    for a, b in zip(alone, together):
        assert torch.equal(a, b)


def check_vqa_with_the_question_held_fixed(key: str) -> None:
    """The VQA model's tail takes the question embedding as a held-fixed input: the estimate is the
    one of the naive tail passes with that input, telescopes to F^c(A) - F^c(0), and changes with
    the question."""
    from camlib.vqa import scenes

    model = camlib.load_model("vqa_shapes", device="cpu")
    scene = scenes.generate_scene(1_000_000_024)
    question = scenes.generate_questions(scene)[0]
    image = scenes.to_tensor(scene.image)[0]
    exp = camlib.explain(model, image, key, question=question.text, permutations=6, seed=1)
    assert exp.coefficients.shape == (64,) and model.class_names[int(exp.target)] == question.answer
    naive = camlib.explain(model, image, key, question=question.text, permutations=6, seed=1, backend="reference")
    torch.testing.assert_close(exp.info["running"], naive.info["running"], rtol=1e-4, atol=1e-4)
    split = model.split(exp.layer)
    with torch.inference_mode():
        a, *fixed = split.head(model.normalize(image[None]), model.question_tokens(question.text))
        ends = split.tail(torch.cat([a, torch.zeros_like(a)]), *(f.expand(2, *f.shape[1:]) for f in fixed))
    delta = float(ends[0, exp.target] - ends[1, exp.target])
    # 64 float32 marginal contributions of values ≤ |F| in magnitude, summed: ≤ 64 · 256 u |F|
    tol = 64 * 256 * U * float(ends.abs().max())
    torch.testing.assert_close(exp.info["running"][:, 0].double().sum(1), torch.full((6,), delta, dtype=torch.float64),
                               rtol=0, atol=tol)
    other = camlib.explain(model, image, key, question="how many objects are there?", permutations=6, seed=1)
    assert float((other.coefficients - exp.coefficients).abs().max()) > 0.1
