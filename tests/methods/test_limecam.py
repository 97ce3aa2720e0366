"""LIME-CAM against its oracles (issue #14, item 2).

* captum 0.9's ``Lime`` on the tail, as the authors run it (one feature per map, zero baselines,
  n_samples = N_l), with LIME-CAM's coalitions passed through its ``perturb_func`` and its
  interpretable model replaced by scikit-learn's estimator of the same fit run to convergence in
  float64: the same design matrix (exactly), the same kernel weights and tail values (to float32
  rounding), the same coefficients (to the bound those differences imply); on the ``tiny``
  network, on EfficientNet-Lite0's blocks.6 and on the VQA model with the question held fixed.
  captum's own default model (``SkLearnLasso(alpha=0.01)``, float32, tol 1e-4) lands within its
  duality gap too.
* On a linear tail (Lite0's bn2), least squares with enough coalitions recovers α = w_c·mean(A_k).
* Reference backend = fast backend, determinism, batch = one image at a time, threads.

Tolerances. u = 2^-24, ε = 2^-52. LIME-CAM computes in float64 from float32 tail values; captum
computes the kernel and passes values and weights to the fit in float32. (1) Weights: captum's
cosine is three float32 sums of N = K·h·w products, each off by about √N·u (probabilistic bound);
the kernel's slope |dπ/dcos| = π·d/w² <= 1 for w = 1, so |Δπ| <= (3√N + 8)·u. (2) Values along
different float32 paths: <= RTOL·max|logit|, RTOL = 1e-4 (tests/engine/test_agreement.py).
(3) Coefficients: two lasso solutions with the same support S and signs differ exactly by
H2_SS⁻¹[(c2 - c1)_S - (H2 - H1)_SS β1_S] (:func:`coalition_games.support_shift` bounds its norm
from the two regressions), and scikit-learn's coordinate descent stops within its duality gap g of
the optimum: ‖β_sk - β*‖ <= √(2g/μ_S), μ_S = λ_min(H_SS) (:func:`coalition_games.lasso_gap`); the
float32 cast of α adds u·‖α‖.
"""

from __future__ import annotations

import concurrent.futures
import math

import pytest
import torch

import camlib
from camlib.methods import get_method
from camlib.methods.limecam import LimeCAM, fit_linear, kernel_weights, sample_coalitions
from coalition_games import EPS, U, centred, copy_head_model, lasso_gap, restricted_mu, support_shift

sklearn = pytest.importorskip("sklearn.linear_model")
RTOL = 1e-4
METHOD = LimeCAM()


class Float64Fit:
    """A captum interpretable model: scikit-learn's ``estimator`` (captum's default is
    ``Lasso(alpha=0.01)``) fitted in float64 to convergence, keeping the regression captum built."""

    def __init__(self, estimator):
        self.estimator = estimator

    def fit(self, train_data):
        self.data = tuple(t.double() for t in next(iter(train_data)))
        x, y, w = (t.numpy() for t in self.data)
        self.estimator.fit(x, y, sample_weight=w)

    def representation(self) -> torch.Tensor:
        return torch.as_tensor(self.estimator.coef_, dtype=torch.float64).reshape(1, -1)


def _lasso64(alpha: float = 0.01):
    return sklearn.Lasso(alpha=alpha, tol=1e-14, max_iter=1_000_000)


def _captum_lime(model, exp, interpretable_model, fixed: tuple = ()) -> torch.Tensor:
    """captum's Lime on the tail F at exp's layer, as in the authors' lime_cam: one feature per
    map, zero baselines, n_samples = the coalitions LIME-CAM drew (fed through perturb_func)."""
    from captum.attr import Lime

    tail = model.split(exp.layer).tail
    a = exp.activations[None]
    k = a.shape[1]
    masks = exp.info["coalitions"]

    def perturb(original, **kwargs):
        for row in masks:
            yield row[None].long()

    lime = Lime(tail, interpretable_model=interpretable_model, perturb_func=perturb)
    coefs = lime.attribute(a, baselines=torch.zeros_like(a), target=int(exp.target),
                           feature_mask=torch.arange(k).view(1, k, 1, 1).expand_as(a).contiguous(),
                           n_samples=masks.shape[0], perturbations_per_eval=64, return_input_shape=False,
                           additional_forward_args=fixed or None)
    return coefs.reshape(-1).double()


def _assert_same_regression(exp, captured):
    """captum's design = LIME-CAM's coalitions; its weights and values = LIME-CAM's (bounds (1), (2))."""
    x, y, w = captured
    assert torch.equal(x, exp.info["coalitions"].double())
    n_products = exp.activations.numel()
    weight_tol = (3 * math.sqrt(n_products) + 8) * U
    ours = exp.info["weights"][0]
    assert float((w - ours).abs().max()) <= weight_tol
    assert float((ours - ours ** 2).abs().max()) > 100 * weight_tol  # LIME's exp(-d²/w²) would be caught
    scale = float(exp.logits.abs().max())
    assert float((y - exp.info["values"][0]).abs().max()) <= RTOL * scale


def _coefficient_bound(exp, captured, theirs: torch.Tensor, lasso: float, ridge: float) -> float:
    """Bound (3) on ‖α - β_captum‖_2 for the same support and signs (asserted)."""
    alpha = exp.coefficients.double()
    # scikit-learn's coordinate descent leaves float64 rounding where its soft threshold gave 0
    # (seen: -7e-17 with one torch thread): zero within K rounding steps of the coefficients' scale
    zero = alpha.numel() * EPS * float(theirs.norm())
    theirs = torch.where(theirs.abs() <= zero, torch.zeros_like(theirs), theirs)
    assert torch.equal(alpha == 0, theirs == 0) and torch.equal(alpha.sign(), theirs.sign())
    x = exp.info["coalitions"].double()
    h1, c1, *_, n1 = centred(x, exp.info["values"][0], exp.info["weights"][0])
    h2, c2, *_, n2 = centred(*captured)
    eye = torch.eye(h1.shape[0], dtype=torch.float64)
    h1, h2 = h1 + ridge / float(n1) * eye, h2 + ridge / float(n2) * eye
    shift = support_shift(h1, c1, h2, c2, alpha)
    if lasso > 0:  # scikit-learn's coordinate descent: its duality gap
        solver = math.sqrt(2 * max(lasso_gap(*captured, lasso, theirs), 0.0) / restricted_mu(h2, theirs))
    else:  # a direct solve: backward stable, κ·K·ε relative
        solver = 64 * float(torch.linalg.cond(h2)) * h2.shape[0] * EPS * float(theirs.norm())
    return shift + solver + U * float(alpha.norm())


FITS = {"lasso": ({}, _lasso64),
        "ridge": ({"lasso": 0.0, "ridge": 1.0}, lambda: sklearn.Ridge(alpha=1.0)),
        "least squares": ({"lasso": 0.0}, lambda: sklearn.LinearRegression())}


@pytest.mark.parametrize("fit", list(FITS))
def test_tiny_equals_captums_lime(tiny, fit):
    """32 coalitions of the 6 maps (more than the 7 unknowns: every fit is determined)."""
    options, estimator = FITS[fit]
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    exp = camlib.explain(tiny, image, "limecam", samples=32, seed=1, **options)
    model = Float64Fit(estimator())
    theirs = _captum_lime(tiny, exp, model)
    _assert_same_regression(exp, model.data)
    bound = _coefficient_bound(exp, model.data, theirs, options.get("lasso", 0.01), options.get("ridge", 0.0))
    error = float((exp.coefficients.double() - theirs).norm())
    assert error <= bound, (error, bound)
    assert bound < 1e-4 * float(theirs.norm())


@pytest.mark.parametrize("fixture, layer", [("tiny", "features"), ("lite0", "blocks.6")])
def test_default_equals_captums_lime_as_the_authors_run_it(request, chelsea, fixture, layer):
    """The default: n = N_l coalitions (6 for tiny, 320 for Lite0's blocks.6), the lasso."""
    model = request.getfixturevalue(fixture)
    image = chelsea if fixture == "lite0" else torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
    exp = camlib.explain(model, image, "limecam", layer=layer)
    k = exp.activations.shape[0]
    assert exp.info["coalitions"].shape == (k, k) and bool(exp.info["converged"][0])
    fit = Float64Fit(_lasso64())
    theirs = _captum_lime(model, exp, fit)
    _assert_same_regression(exp, fit.data)
    bound = _coefficient_bound(exp, fit.data, theirs, 0.01, 0.0)
    error = float((exp.coefficients.double() - theirs).norm())
    assert error <= bound, (error, bound)
    # what this can tell apart: the LIME package's kernel exp(-d²/w²) instead of captum's
    other, *_ = fit_linear(exp.info["coalitions"], exp.info["values"][0], exp.info["weights"][0] ** 2, 0.01)
    assert float((other - theirs).norm()) > 10 * bound


def test_captums_own_default_model_within_its_tolerance(tiny):
    """captum's ``SkLearnLasso(alpha=0.01)`` as shipped: scikit-learn in float32 with tol 1e-4. With
    32 coalitions the problem is strongly convex (μ = λ_min(H) > 0), so its duality gap g bounds its
    distance to the optimum of its regression: √(2g/μ); then bound (3) to LIME-CAM's."""
    from captum._utils.models.linear_model import SkLearnLasso

    class Recording(SkLearnLasso):
        def fit(self, train_data, **kwargs):
            self.data = tuple(t.double() for t in next(iter(train_data)))
            return super().fit(train_data, **kwargs)

    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    exp = camlib.explain(tiny, image, "limecam", samples=32, seed=1)
    model = Recording(alpha=0.01)
    theirs = _captum_lime(tiny, exp, model)
    _assert_same_regression(exp, model.data)
    h2, c2, *_ = centred(*model.data)
    mu = float(torch.linalg.eigvalsh(h2).min())
    assert mu > 0
    optimum = Float64Fit(_lasso64())
    optimum.fit([model.data])
    exact = optimum.representation()[0]  # the optimum of captum's regression (to its 1e-14 gap)
    gap = lasso_gap(*model.data, 0.01, theirs)
    assert float((theirs - exact).norm()) <= math.sqrt(2 * gap / mu) + math.sqrt(2 * max(lasso_gap(
        *model.data, 0.01, exact), 0.0) / mu) + U * float(exact.norm())
    bound = _coefficient_bound(exp, model.data, exact, 0.01, 0.0)
    assert float((exp.coefficients.double() - exact).norm()) <= bound


def test_vqa_equals_captums_lime_with_the_question_held_fixed():
    from camlib.vqa import scenes

    model = camlib.load_model("vqa_shapes", device="cpu")
    scene = scenes.generate_scene(1_000_000_024)
    question = scenes.generate_questions(scene)[0]
    image = scenes.to_tensor(scene.image)
    exp = camlib.explain(model, image[0], "limecam", question=question.text)
    assert exp.info["coalitions"].shape == (64, 64)
    with torch.inference_mode():
        _, *fixed = model.split(exp.layer).head(model.normalize(image), model.question_tokens(question.text))
    fixed = tuple(f.clone() for f in fixed)
    fit = Float64Fit(_lasso64())
    theirs = _captum_lime(model, exp, fit, fixed)
    _assert_same_regression(exp, fit.data)
    bound = _coefficient_bound(exp, fit.data, theirs, 0.01, 0.0)
    assert float((exp.coefficients.double() - theirs).norm()) <= bound


# -- a linear tail -------------------------------------------------------------------------------

def test_least_squares_recovers_the_linear_tail(lite0, chelsea):
    """Lite0's bn2 (1280 maps, global average pooling + FC): F^c(h_A(a')) = b_c + Σ_k a'_k w_ck mean(A_k),
    so with [1, a'] of full column rank 1281 the weighted least squares is exact. 2560 = 2K coalitions:
    n >= K + 1 is needed, and a random Bernoulli(1/2) design with n = 2K is full rank and well
    conditioned (its singular values spread over (1 ± √(K/n))·√n/2, condition ≈ 5.8; λ_min(H) > 0
    asserted). Error: the values are float32 sums of K terms, off the affine function by about
    4√K·u·(|b_c| + Σ|w_ck mean(A_k)|) (probabilistic, factor 4), moved to α by the fit's operator
    M = H⁻¹X̃ᵀW/Σw (‖M‖_∞ computed); plus the float32 cast."""
    k = 1280
    exp = camlib.explain(lite0, chelsea, "limecam", samples=2 * k, lasso=0.0, seed=3)
    assert lite0.layer_info(exp.layer).linear_tail and exp.activations.shape[0] == k
    fc = lite0.module.classifier
    c = int(exp.target)
    d = fc.weight[c].double() * exp.activations.double().mean((1, 2))
    h, _, a, _, total = centred(exp.info["coalitions"], exp.info["values"][0], exp.info["weights"][0])
    assert float(torch.linalg.eigvalsh(h).min()) > 0
    operator = torch.linalg.solve(h, a.T * exp.info["weights"][0].sqrt()) / total
    delta_v = 4 * math.sqrt(k) * U * (abs(float(fc.bias[c])) + float(d.abs().sum()))
    tol = float(operator.abs().sum(1).max()) * delta_v + U * float(d.abs().max())
    error = float((exp.coefficients.double() - d).abs().max())
    assert error <= tol, (error, tol)
    assert tol < 0.05 * float(d.abs().max())
    assert abs(float(exp.info["intercept"][0]) - float(fc.bias[c])) <= 10 * delta_v


# -- the kernel, backends, determinism, batches, threads -------------------------------------------

@pytest.mark.parametrize("width", [1.0, 0.5, 3.0])
def test_kernel_weights_are_the_exponential_kernel_on_the_cosine_distance(tiny, width):
    """π = exp(-(1 - cos(A, A ∘ a'))² / (2w²)) with the cosine of the flattened tensors in float64 (captum's
    formula); the empty coalition has cos = 0, so π = exp(-1/(2w²))."""
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2))
    exp = camlib.explain(tiny, image, "limecam", samples=40, kernel_width=width)
    a = exp.activations.double().flatten()
    masks = torch.cat([exp.info["coalitions"], torch.zeros(1, 6, dtype=torch.bool)])
    masked = (exp.activations.double()[None] * masks[:, :, None, None]).flatten(1)
    cos = masked @ a / (a.norm() * masked.norm(dim=1)).clamp_min(1e-300)
    expected = torch.exp(-(1 - cos) ** 2 / (2 * width ** 2))
    norms = exp.activations.double().pow(2).sum((1, 2))
    ours = kernel_weights(masks.double(), norms, width)
    torch.testing.assert_close(ours, expected, rtol=1e-13, atol=0)  # float64 sums of 384 products
    torch.testing.assert_close(exp.info["weights"][0], expected[:-1], rtol=1e-13, atol=0)
    assert float(ours[-1]) == pytest.approx(math.exp(-1 / (2 * width ** 2)), rel=1e-15)


def test_reference_backend_gives_the_same_values(tiny):
    """Same coalitions and weights; values to float32 rounding (2); α by the exact shift of the
    lasso solution on a common support (H is the same: only the values differ)."""
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    fast = camlib.explain(tiny, images, "limecam", samples=40)
    reference = camlib.explain(tiny, images, "limecam", samples=40, backend="reference")
    assert fast.info["backends"] == {"coalition game": "fast-coalitions"}
    assert reference.info["backends"] == {"coalition game": "naive-coalitions"}
    assert torch.equal(fast.info["coalitions"], reference.info["coalitions"])
    assert torch.equal(fast.info["weights"], reference.info["weights"])
    scale = float(fast.logits.abs().max())
    assert float((fast.info["values"] - reference.info["values"]).abs().max()) <= RTOL * scale
    x = fast.info["coalitions"]
    for i in range(2):
        a, b = fast.coefficients[i].double(), reference.coefficients[i].double()
        assert torch.equal(a == 0, b == 0)
        h, c1, *_ = centred(x, fast.info["values"][i], fast.info["weights"][i])
        _, c2, *_ = centred(x, reference.info["values"][i], reference.info["weights"][i])
        bound = support_shift(h, c1, h, c2, a) + U * float(a.norm() + b.norm())
        assert float((a - b).norm()) <= bound


def test_determinism_and_seeds(tiny):
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(4))
    first, again, other = (camlib.explain(tiny, image, "limecam", seed=s) for s in (5, 5, 6))
    assert torch.equal(first.coefficients, again.coefficients)
    assert torch.equal(first.info["coalitions"], sample_coalitions(6, 6, 5))
    assert not torch.equal(first.info["coalitions"], other.info["coalitions"])
    assert not torch.equal(first.coefficients, other.coefficients)


def test_batch_equals_one_image_at_a_time():
    """The copy-head network's maps are exact (the same bits in a batch and alone) and every image
    gets the same coalitions: α must be identical."""
    model = copy_head_model()
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    together = camlib.explain(model, images, "limecam", target=[0, 2, 1], samples=20)
    for i, target in enumerate([0, 2, 1]):
        alone = camlib.explain(model, images[i], "limecam", target=target, samples=20)
        assert torch.equal(together.activations[i], alone.activations)
        assert torch.equal(together.coefficients[i], alone.coefficients)


def test_threads_sharing_one_model(tiny):
    """Four threads at once get what each gets alone: the same arithmetic (a BLAS library that
    splits a product by the threads it has free may round a value by a few u; α moves by the
    lasso's shift on its support, bounded as in the reference-backend test)."""
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    run = lambda s: camlib.explain(tiny, images[s], "limecam", samples=24, seed=s)  # noqa: E731
    alone = [run(s) for s in range(4)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        together = list(pool.map(run, range(4)))
    for a, b in zip(alone, together):
        assert torch.equal(a.info["coalitions"], b.info["coalitions"])
        scale = float(a.logits.abs().max())
        assert float((a.info["values"] - b.info["values"]).abs().max()) <= 16 * U * scale
        h, c1, *_ = centred(a.info["coalitions"], a.info["values"][0], a.info["weights"][0])
        _, c2, *_ = centred(b.info["coalitions"], b.info["values"][0], b.info["weights"][0])
        bound = support_shift(h, c1, h, c2, a.coefficients.double()) + U * float(a.coefficients.norm()) * 2
        assert float((a.coefficients - b.coefficients).norm()) <= bound


def test_options_evaluations_and_registry():
    assert METHOD.evaluations(320) == 320 and METHOD.evaluations(320, samples=1000) == 1000
    keys = camlib.list_methods()
    assert keys.index("shapcam") < keys.index("limecam") < keys.index("kernelshapcam")
    assert not get_method("LIME-CAM").default and get_method("lime").key == "limecam"
    assert METHOD.label() == "limecam" and METHOD.label(samples=64) == "limecam_64"
    with pytest.raises(ValueError, match="kernel_width"):
        camlib.explain(copy_head_model(), torch.rand(3, 8, 8), "limecam", kernel_width=0.0)
    with pytest.raises(ValueError, match="no option"):
        camlib.explain(copy_head_model(), torch.rand(3, 8, 8), "limecam", fit="lasso")
