"""Each method's coefficients against closed forms, hand-computed values and peer libraries."""

import pytest
import torch
import torch.nn as nn

import camlib
from camlib.methods import get_method, list_methods
from camlib.model import CamModel
from tests.numerics import alpha_scale, assert_close_scaled, chain, fan_ins

pytestmark = pytest.mark.numerics


# -- a network small enough to compute by hand ---------------------------------------------------

def _hand_model() -> tuple[CamModel, torch.Tensor]:
    """Layer "0" copies input channels 0 and 1 (A_0, A_1, 2x2); the tail is flatten + Linear, so
    ∂F^0/∂A_k(i, j) = W[0, 4k + 2i + j], a gradient that varies over space."""
    net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Flatten(), nn.Linear(8, 2))
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].bias.zero_()
        net[0].weight[0, 0] = net[0].weight[1, 1] = 1.0
        net[2].weight.copy_(torch.tensor([[1, -1, 2, 0.5, 0, 1, -2, 1], [1, 1, 1, 1, 1, 1, 1, 1.0]]))
        net[2].bias.zero_()
    model = CamModel("hand", net, torch.device("cpu"), ["c0", "c1"], default_layer="0", input_size=(2, 2))
    x = torch.zeros(3, 2, 2)
    x[0] = torch.tensor([[1.0, 2], [3, 0]])  # A_0
    x[1] = torch.tensor([[0.0, 1], [1, 2]])  # A_1
    return model, x


def test_gradcam_by_hand():
    model, x = _hand_model()
    # mean gradients: (1 - 1 + 2 + 0.5) / 4 and (0 + 1 - 2 + 1) / 4
    assert camlib.explain(model, x, "gradcam", target=0).coefficients.tolist() == [0.625, 0.0]


def test_xgradcam_by_hand():
    model, x = _hand_model()
    # Σ A g / Σ A: (1 - 2 + 6 + 0) / 6 and (0 + 1 - 2 + 2) / 4
    alpha = camlib.explain(model, x, "xgradcam", target=0).coefficients
    torch.testing.assert_close(alpha, torch.tensor([5 / 6, 1 / 4]))


def test_gradcampp_by_hand():
    model, x = _hand_model()
    # a = g²/(2g² + ΣA·g³); w = Σ a·ReLU(g).  Map 0 (ΣA = 6): g = 1 -> 1/8; g = -1 -> 0;
    # g = 2 -> (4/56)·2 = 1/7; g = 0.5 -> (0.25/1.25)·0.5 = 0.1.  Map 1 (ΣA = 4): g = 0 -> 0
    # (0/0 defined as 0); g = 1 -> 1/6 twice; g = -2 -> 0.
    alpha = camlib.explain(model, x, "gradcampp", target=0).coefficients
    torch.testing.assert_close(alpha, torch.tensor([1 / 8 + 1 / 7 + 0.1, 1 / 3]))


def test_liftcam_and_shap_on_the_linear_hand_model():
    model, x = _hand_model()
    # Linear tail: α_k = Σ_ij W[0,k,i,j] A_k(i,j) = 5 and 1, exactly the SHAP values.
    for method in ("liftcam", "shapcam"):
        torch.testing.assert_close(camlib.explain(model, x, method, target=0).coefficients, torch.tensor([5.0, 1.0]))


# -- linear tails: every method against the closed form ------------------------------------------

def _closed_form(model, exp, classifier):
    w = classifier.weight[int(exp.target)]
    return w, w * exp.activations.mean((1, 2))


@pytest.mark.parametrize("fixture,classifier", [("lite0", "classifier"), ("resnet50", "fc")])
def test_linear_tail_closed_forms(request, fixture, classifier, chelsea):
    model = request.getfixturevalue(fixture)
    fc = getattr(model.module, classifier)
    lift = camlib.explain(model, chelsea, "liftcam")
    assert model.layer_info(lift.layer).linear_tail
    w, exact = _closed_form(model, lift, fc)
    h, wd = lift.activations.shape[1:]
    # LIFT-CAM, SHAP-CAM, Grad-CAM and CAM compute each α_k from map k alone (A_k ≥ 0 after the
    # activation, so no cancellation): relative errors per entry, at most (49 + 2)·u ≈ 3e-6 for a
    # mean of 7×7 values times a weight, far below rtol; dead maps (A_k = 0) give exactly 0.
    torch.testing.assert_close(lift.coefficients, exact, rtol=1e-4, atol=1e-6)
    shap1 = camlib.explain(model, chelsea, "shapcam", permutations=1, seed=7)
    torch.testing.assert_close(shap1.coefficients, exact, rtol=1e-4, atol=1e-6)
    # Ablation-CAM: α_k·|F^c| = F^c(A) - F^c(A∖k) is a difference of two logits, each a float32 sum
    # of K products (2048 on ResNet50, 1280 on Lite0) of 7×7 means (49 terms): error ≈
    # chain(49, K) × the magnitude of the terms summed, Σ_k |D_k| + |b_c| (9 |F^c| on ResNet50:
    # they cancel), twice for the difference; against the closed form D_k in float64. A map whose
    # D_k is 0 has the same absolute error as the others (the failure of issue #16 was "relative
    # inf" there, under atol=1e-5 < u·Σ|D_k| on another CPU).
    ablation = camlib.explain(model, chelsea, "ablationcam")
    logit = lift.logits[int(lift.target)]
    exact64 = w.double() * lift.activations.double().mean((1, 2))
    terms = exact64.abs().sum() + fc.bias[int(lift.target)].double().abs()
    assert_close_scaled(ablation.coefficients * logit.abs(), exact64, terms, 2 * chain(h * wd, exact.numel()),
                        "Ablation-CAM α·|F^c| against the closed form")
    gradcam = camlib.explain(model, chelsea, "gradcam")
    torch.testing.assert_close(gradcam.coefficients, w / (h * wd), rtol=1e-4, atol=1e-7)
    cam = camlib.explain(model, chelsea, "cam")
    torch.testing.assert_close(cam.coefficients, w, rtol=1e-4, atol=1e-6)


def test_cam_refuses_nonlinear_tails(lite0, chelsea):
    with pytest.raises(ValueError, match="linear"):
        camlib.explain(lite0, chelsea, "cam", layer="blocks.6")


# -- Ablation-CAM: through the tail, no sign flip ------------------------------------------------

def test_ablation_with_a_negative_target_logit(tiny):
    torch.manual_seed(0)
    x = torch.rand(3, 16, 16)
    logits = tiny.predict(x[None])[0]
    target = int(logits.argmin())
    assert logits[target] < 0
    exp = camlib.explain(tiny, x, "ablationcam", target=target)
    a = exp.activations
    split = tiny.split()
    drops, peak = [], logits.abs().max()
    for k in range(a.shape[0]):
        ablated = a.clone()
        ablated[k] = 0
        out = split.tail(ablated[None])[0]
        drops.append(logits[target] - out[target])
        peak = torch.maximum(peak, out.abs().max())
    expected = torch.stack(drops) / logits[target].abs()
    # α_k·|F^c| is a difference of two tail values; the tail sums 6, 80 and 8 terms, of the size
    # of the logits of A and of A∖k (all classes: the terms of its last layer): twice its chain.
    rel = 2 * chain(*fan_ins(split.tail, a[None]))
    assert_close_scaled(exp.coefficients, expected, peak / logits[target].abs(), rel, "fast Ablation-CAM")
    naive = camlib.explain(tiny, x, "ablationcam", target=target, backend="reference")
    assert_close_scaled(naive.coefficients, expected, peak / logits[target].abs(), rel, "naive Ablation-CAM")


# -- Score-CAM and friends against pytorch-grad-cam -----------------------------------------------

def test_scorecam_gradcampp_xgradcam_match_pytorch_grad_cam(tiny):
    from pytorch_grad_cam import GradCAMPlusPlus, ScoreCAM, XGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(2)
    x = torch.rand(2, 3, 16, 16)
    net = tiny.module
    ours = {m: camlib.explain(tiny, x, m, target=[0, 2]) for m in ("scorecam", "gradcampp", "xgradcam")}
    acts = ours["scorecam"].activations.numpy()
    grads = []
    for i, c in enumerate([0, 2]):
        a = ours["scorecam"].activations[i:i + 1].clone().requires_grad_(True)
        out = tiny.split().tail(a)
        grads.append(torch.autograd.grad(out[0, c], a)[0])
    grads = torch.cat(grads).numpy()
    targets = [ClassifierOutputTarget(0), ClassifierOutputTarget(2)]
    # pytorch-grad-cam adds eps = 1e-6 (Grad-CAM++) and 1e-7 (XGrad-CAM) to denominators, which
    # we do not (we define 0/0 = 0 instead): a difference of definition, relative per entry,
    # far above float32's; hence rtol 5e-3 for those two.
    for key, cls in (("gradcampp", GradCAMPlusPlus), ("xgradcam", XGradCAM)):
        cam = cls(model=net, target_layers=[net.features[-1]])
        theirs = cam.get_cam_weights(x, net.features[-1], targets, acts, grads)
        torch.testing.assert_close(ours[key].coefficients, torch.as_tensor(theirs).float(), rtol=5e-3, atol=1e-6)
    # Score-CAM: both run TinyNet on the same masked images, in batches of their own (orders of
    # their own): scores off by twice the network's chain × |logits|, α = softmax per entry.
    cam = ScoreCAM(model=net, target_layers=[net.features[-1]])
    theirs = cam.get_cam_weights(x, net.features[-1], targets, acts, grads)
    assert_close_scaled(ours["scorecam"].coefficients, torch.as_tensor(theirs), alpha_scale("scorecam", ours["scorecam"]),
                        2 * chain(*fan_ins(net, x[:1])), "Score-CAM against pytorch-grad-cam")


def test_every_method_is_registered_with_a_title():
    assert set(list_methods()) == {"gradcam", "gradcampp", "xgradcam", "scorecam", "ablationcam", "liftcam",
                                   "lrpcam", "shapcam", "antishapcam", "stratshapcam", "limecam", "kernelshapcam",
                                   "cam"}
    assert get_method("Grad-CAM++").key == "gradcampp"
    assert get_method("LIFT-CAM").key == "liftcam"
    with pytest.raises(ValueError, match="unknown method"):
        get_method("magic")


def test_scorecam_with_constant_maps_matches_pytorch_grad_cam(make_tiny):
    """Constant maps share one score f^c(X ∘ 0); the result is pytorch-grad-cam's all the same."""
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = make_tiny(seed=3)
    conv = model.module.features[2]
    with torch.no_grad():  # maps 1 and 4 dead (all zero after the ReLU) on every image
        conv.weight[[1, 4]] = 0.0
        conv.bias[[1, 4]] = -1.0
    torch.manual_seed(4)
    x = torch.rand(2, 3, 16, 16)
    ours = camlib.explain(model, x, "scorecam", target=[1, 0])
    flat = ours.activations.flatten(2)
    assert (flat.amax(2) == flat.amin(2))[:, [1, 4]].all()
    net = model.module
    cam = ScoreCAM(model=net, target_layers=[net.features[-1]])
    theirs = cam.get_cam_weights(x, net.features[-1], [ClassifierOutputTarget(1), ClassifierOutputTarget(0)],
                                 ours.activations.numpy(), None)
    assert_close_scaled(ours.coefficients, torch.as_tensor(theirs), alpha_scale("scorecam", ours),
                        2 * chain(*fan_ins(net, x[:1])), "Score-CAM with constant maps against pytorch-grad-cam")
    assert ours.coefficients[0, 1] == ours.coefficients[0, 4]


@pytest.mark.parametrize("batch_size", [1, 3, 5])
def test_scorecam_tail_groups_do_not_change_the_scores(tiny, batch_size):
    """Score-CAM runs the head in chunks and the tail on groups of ``batch_size`` masked images
    (a group may span chunks, and the last one is partial): the same coefficients as one group."""
    torch.manual_seed(6)
    x = torch.rand(2, 3, 16, 16)
    whole = camlib.explain(tiny, x, "scorecam", target=[0, 2], batch_size=64)
    grouped = camlib.explain(tiny, x, "scorecam", target=[0, 2], batch_size=batch_size)
    # Groups of other sizes, other summation orders in the network's layers (see Score-CAM above).
    assert_close_scaled(grouped.coefficients, whole.coefficients, alpha_scale("scorecam", whole),
                        2 * chain(*fan_ins(tiny.module, x[:1])), f"Score-CAM in groups of {batch_size}")
    assert (whole.coefficients > 0).all() and torch.allclose(whole.coefficients.sum(1), torch.ones(2))
