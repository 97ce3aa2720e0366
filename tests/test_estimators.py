"""camlib.estimators: the estimators chosen from the methods' metadata, the budgets, and the
cosine-to-reference curves of one image against values recomputed with camlib.explain."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import camlib
from camlib import estimators
from camlib.methods import METHODS, Cost, Method, Option
from camlib.methods.shapley import ordering_estimate, sample_permutations
from camlib.model import CamModel


class FakeSamples(Method):
    """A coalition estimator for the test (registered only while it runs): SHAP-CAM with one
    ordering per K + 1 samples, so its value at each budget is known."""

    key, title = "fakesamples", "Fake samples"
    needs = frozenset({camlib.methods.base.Need.GAME})
    cost = Cost.PER_SAMPLE
    options = (Option("samples", 0, 0, 10_000, "coalitions"), Option("seed", 0, 0, 2**63 - 1, "seed"))

    def coefficients(self, q, samples: int, seed: int) -> torch.Tensor:
        return ordering_estimate(q, sample_permutations(q.n_maps, max(1, samples // (q.n_maps + 1)), seed))


@pytest.fixture
def fake_samples(monkeypatch):
    from camlib import methods

    monkeypatch.setitem(METHODS, FakeSamples.key, FakeSamples())
    monkeypatch.setitem(methods._ALIASES, FakeSamples.key, FakeSamples.key)
    return FakeSamples.key


def test_methods_chosen_from_their_metadata(fake_samples):
    samplers = estimators.sampling_methods()
    assert samplers[:3] == ["shapcam", "antishapcam", "stratshapcam"] and fake_samples in samplers
    points = estimators.point_methods()
    assert {"gradcam", "gradcampp", "xgradcam", "liftcam", "ablationcam", "cam"} <= set(points)
    assert "scorecam" not in points and not set(points) & set(samplers)  # Score-CAM: network passes
    assert estimators.budget_option(METHODS["stratshapcam"]) == "permutations"
    assert estimators.budget_option(METHODS[fake_samples]) == "samples"
    assert estimators.budget_option(METHODS["liftcam"]) is None


def test_budgets(fake_samples):
    assert estimators.budget_options(METHODS["antishapcam"], 320, 7) == {"permutations": 7}
    assert estimators.budget_options(METHODS[fake_samples], 320, 7) == {"samples": 7 * 321}
    assert estimators.budget_options(METHODS[fake_samples], 320, 100) == {"samples": 10_000}  # its maximum
    with pytest.raises(ValueError, match="no budget"):
        estimators.budget_options(METHODS["gradcam"], 320, 1)
    assert estimators.budget_grid(1) == [1]
    assert estimators.budget_grid(50) == [1, 2, 5, 10, 20, 50]
    assert estimators.budget_grid(120) == [1, 2, 5, 10, 20, 50, 100, 120]


def test_budget_to_reach_needs_the_curve_to_stay_above():
    evaluations = [10, 20, 30, 40, 50]
    assert estimators.budget_to_reach(evaluations, [0.5, 0.9, 0.7, 0.95, 0.97], 0.9) == 40
    assert estimators.budget_to_reach(evaluations, [0.95] * 5, 0.9) == 10
    assert estimators.budget_to_reach(evaluations, [0.5, 0.95, 0.96, 0.97, 0.8], 0.9) is None


def test_curves_and_points_are_the_methods_own_values(tiny, fake_samples):
    """Every number against camlib.explain run by hand with the same seeds: the reference (SHAP-CAM_60,
    seed 5), the ordering estimators' running estimates (seeds 6 and 7), the coalition estimator
    at each budget, the points; the evaluations from Method.evaluations; the progress."""
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(3))
    seen = []
    result = estimators.compare_estimators(tiny, image, target=1, orderings=5, seeds=2, reference_permutations=60,
                                           reference_seed=5, progress=seen.append)
    assert result.target == 1 and result.n_maps == 6 and not result.linear_tail and result.layer == "features"
    reference = camlib.explain(tiny, image, "shapcam", target=1, permutations=60, seed=5).coefficients.double()
    torch.testing.assert_close(result.reference, reference, rtol=0, atol=0)
    assert result.reference_evaluations == 60 * 7
    for key in ("shapcam", "antishapcam", "stratshapcam"):
        curve = result.curves[key]
        assert curve.seeds == (6, 7) and curve.cosine.shape == curve.seconds.shape == (2, 5)
        assert curve.evaluations.tolist() == [7 * p for p in range(1, 6)]
        for row, seed in enumerate(curve.seeds):
            running = camlib.explain(tiny, image, key, target=1, permutations=5, seed=seed).info["running"][:, 0]
            expected = camlib.metrics.cosine_similarity(running.double(), reference).double()
            torch.testing.assert_close(curve.cosine[row], expected, rtol=0, atol=1e-6)  # float32 cosines
            torch.testing.assert_close(curve.estimates[row], running, rtol=0, atol=0)
        assert (curve.seconds >= 0).all() and (curve.seconds.diff(dim=1) >= 0).all()
    fake = result.curves[fake_samples]
    assert fake.evaluations.tolist() == [7, 14, 35]  # budget_grid(5) orderings as samples
    for row, seed in enumerate(fake.seeds):
        for j, samples in enumerate((7, 14, 35)):
            alpha = camlib.explain(tiny, image, fake_samples, target=1, samples=samples, seed=seed).coefficients
            assert torch.equal(fake.estimates[row, j], alpha)
            assert abs(float(fake.cosine[row, j]) - float(camlib.metrics.cosine_similarity(
                alpha.double(), reference))) <= 1e-6
    lift = camlib.explain(tiny, image, "liftcam", target=1).coefficients.double()
    assert result.points["liftcam"].evaluations == 1 and result.points["ablationcam"].evaluations == 6
    assert abs(result.points["liftcam"].cosine - float(camlib.metrics.cosine_similarity(lift, reference))) <= 1e-6
    assert set(result.skipped) == {"cam"} and "linear" in result.skipped["cam"]
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0) and 0 <= seen[0]
    shorter = estimators.compare_estimators(tiny, image, target=1, orderings=5, seeds=1, reference_permutations=60,
                                            samplers=["shapcam", fake_samples], points=[], sampled_orderings=2)
    assert shorter.curves[fake_samples].evaluations.tolist() == [7, 14] and shorter.curves["shapcam"].cosine.shape == (1, 5)


def test_linear_tail_every_ordering_estimator_is_exact():
    """A linear tail (flatten + FC): every ordering gives the exact SHAP values, so every ordering
    estimator's curve is 1 from the first ordering, and LIFT-CAM too (float32 rounding of 8-term
    sums). (The coalition estimators are not exact with fewer coalitions than maps, and LIME-CAM's
    Lasso shrinks its coefficients.)"""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    model = CamModel("linear", net.eval(), torch.device("cpu"), ["a", "b", "c"], default_layer="1", input_size=(8, 8))
    result = estimators.compare_estimators(model, torch.rand(3, 8, 8), orderings=3, seeds=2, reference_permutations=4)
    assert result.linear_tail
    orderings = [key for key in result.curves if camlib.get_method(key).cost is Cost.PER_ORDERING]
    assert set(orderings) == {"shapcam", "antishapcam", "stratshapcam"}
    for curve in (result.curves[key] for key in orderings):
        torch.testing.assert_close(curve.cosine, torch.ones_like(curve.cosine), rtol=0, atol=1e-6)
    assert abs(result.points["liftcam"].cosine - 1.0) <= 1e-6 and abs(result.points["cam"].cosine) <= 1.0


def test_vqa_with_the_question_held_fixed():
    from camlib.vqa import scenes

    model = camlib.load_model("vqa_shapes", device="cpu")
    scene = scenes.generate_scene(1_000_000_024)
    question = scenes.generate_questions(scene)[0]
    result = estimators.compare_estimators(model, scenes.to_tensor(scene.image)[0], orderings=4, seeds=1,
                                           reference_permutations=40, points=["liftcam"], question=question.text)
    assert model.class_names[result.target] == question.answer and result.n_maps == 64
    assert set(result.curves) >= {"shapcam", "antishapcam", "stratshapcam"} and set(result.points) == {"liftcam"}
    assert all(bool(((c.cosine > 0) & (c.cosine <= 1)).all()) for c in result.curves.values())


def test_bad_budgets_are_refused(tiny):
    with pytest.raises(ValueError, match="at least 1"):
        estimators.compare_estimators(tiny, torch.rand(3, 16, 16), orderings=0)
