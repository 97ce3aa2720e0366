"""camlib.explain: inputs, targets, batches, the pretrained default, sharing between threads."""

import threading

import pytest
import torch

import camlib
from camlib.cam import upsample
from tests.numerics import U, alpha_scale, assert_close_scaled, chain, fan_ins

pytestmark = pytest.mark.numerics

FAST_METHODS = ["gradcam", "gradcampp", "xgradcam", "ablationcam", "liftcam", "shapcam"]


def _saliency_bound(a, batch, i: int) -> float:
    """Largest |s_a - s_b| that the differences of α and A allow between the explanation ``a`` of
    one image and row ``i`` of the batched explanation ``batch``.

    s = (u(L) - min) / (max - min) with L = ReLU(Σ_k α_k A_k): a change δ of L moves s by at most
    2δ / (max u(L) - min u(L)) (upsampling is a convex combination), with δ ≤ Σ_k |Δα_k| max A_k
    + Σ_k |α_k| max |ΔA_k| + the rounding of both K-term combinations and of the 4-term
    upsampling, 2·chain(K, 4)·Σ_k |α_k| max |A_k|; and 4u for the normalisation."""
    alpha, acts = a.coefficients.double(), a.activations.double()
    peak = acts.abs().amax((1, 2))
    delta = ((a.coefficients - batch.coefficients[i]).double().abs() * peak).sum() \
        + (alpha.abs() * (a.activations - batch.activations[i]).double().abs().amax((1, 2))).sum() \
        + 2 * chain(alpha.numel(), 4) * (alpha.abs() * peak).sum()
    up = upsample(a.cam[None], a.saliency.shape)[0]
    span = float(up.max() - up.min())
    return 2 * float(delta) / span + 4 * U if span > 0 else 4 * U


@pytest.mark.parametrize("method", [*FAST_METHODS, "scorecam"])
def test_batch_equals_one_at_a_time(tiny, method):
    torch.manual_seed(0)
    n = 7  # more than one chunk of images through the head (network_batch: 4 on the CPU)
    x = torch.rand(n, 3, 16, 16)
    targets = [i % 3 for i in range(n)]
    options = {"permutations": 3} if camlib.get_method(method).options else {}
    batch = camlib.explain(tiny, x, method, target=targets, **options)
    assert batch.batched and batch.coefficients.shape == (n, 6) and batch.saliency.shape == (n, 16, 16)
    # Both sides run the whole network in float32, in batches of other sizes (other summation
    # orders): twice the chain of its layers' sums (TinyNet: 27, 36, 6, 80 and 8 terms).
    rel = 2 * chain(*fan_ins(tiny.module, x[:1]))
    scale = alpha_scale(method, batch)
    for i in range(n):
        single = camlib.explain(tiny, x[i], method, target=targets[i], **options)
        assert not single.batched and single.coefficients.shape == (6,)
        assert_close_scaled(single.coefficients, batch.coefficients[i], scale[i], rel, f"{method} α, image {i}")
        assert_close_scaled(single.saliency, batch.saliency[i], 1.0, _saliency_bound(single, batch, i),
                            f"{method} saliency, image {i}")


def test_explanation_fields(lite0, chelsea):
    exp = camlib.explain(lite0, chelsea, "liftcam")
    assert exp.method == "liftcam" and exp.layer == "bn2" and exp.seconds > 0
    assert exp.coefficients.shape == (1280,) and exp.activations.shape == (1280, 7, 7)
    assert exp.saliency.shape == (224, 224) and exp.image.shape == (3, 224, 224)
    assert exp.logits.shape == (1000,) and exp.target.dim() == 0
    assert 0.0 <= float(exp.saliency.min()) and float(exp.saliency.max()) == 1.0
    assert torch.isclose(exp.probabilities.sum(), torch.tensor(1.0))


def test_pretrained_default_sees_the_cat(lite0, chelsea):
    exp = camlib.explain(lite0, chelsea, "liftcam")
    assert int(exp.target) in (281, 282, 283, 284, 285)  # tabby, tiger cat, Persian, Siamese, Egyptian
    # The cat's face, annotated on the 451x300 photo as x 100..370, y 60..280, in 224x224 pixels:
    x0, y0, x1, y1 = 100 * 224 / 451, 60 * 224 / 300, 370 * 224 / 451, 280 * 224 / 300
    peak = int(exp.saliency.argmax())
    py, px = divmod(peak, 224)
    assert x0 <= px <= x1 and y0 <= py <= y1, (px, py)


def test_targets_by_index_and_name_and_errors(lite0, chelsea):
    by_name = camlib.explain(lite0, chelsea, "gradcam", target="tabby")
    assert int(by_name.target) == 281
    assert int(camlib.explain(lite0, chelsea, "gradcam", target=281).target) == 281
    with pytest.raises(ValueError, match="out of range"):
        camlib.explain(lite0, chelsea, "gradcam", target=1000)
    with pytest.raises(ValueError, match="unknown class name"):
        camlib.explain(lite0, chelsea, "gradcam", target="unicorn")
    with pytest.raises(ValueError, match="unknown method"):
        camlib.explain(lite0, chelsea, "nope")
    with pytest.raises(camlib.LayerError):
        camlib.explain(lite0, chelsea, "gradcam", layer="blocks.6.0.conv_pw.weight")
    with pytest.raises(ValueError, match="image tensor"):
        camlib.explain(lite0, torch.rand(224, 224), "gradcam")


def test_image_inputs_path_pil_tensor_agree(lite0, chelsea, tmp_path):
    path = tmp_path / "cat.png"
    chelsea.save(path)
    from_path = camlib.explain(lite0, str(path), "gradcam")
    from_pil = camlib.explain(lite0, chelsea, "gradcam")
    torch.testing.assert_close(from_path.coefficients, from_pil.coefficients)
    from_tensor = camlib.explain(lite0, from_pil.image, "gradcam")
    torch.testing.assert_close(from_tensor.coefficients, from_pil.coefficients)


def test_threads_share_one_model(lite0, chelsea):
    torch.manual_seed(0)
    inputs = [chelsea, torch.rand(3, 224, 224), torch.rand(3, 224, 224), chelsea]
    jobs = [(inputs[i], m, layer) for i in range(4) for m, layer in
            (("liftcam", "blocks.6"), ("gradcam", None), ("ablationcam", "blocks.6"))]
    expected = [camlib.explain(lite0, x, m, layer=layer) for x, m, layer in jobs]
    results = [None] * len(jobs)
    errors = []

    def work(offset):
        try:
            for j in range(offset, len(jobs), 4):
                x, m, layer = jobs[j]
                results[j] = camlib.explain(lite0, x, m, layer=layer).coefficients
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    # The same computations, from threads that share torch's intra-op pool (its splits of a sum
    # may differ): twice the chain of Lite0's sums, relative to each method's scale.
    rel = 2 * chain(*fan_ins(lite0.module, lite0.normalize(torch.rand(1, 3, 224, 224))))
    for (_, m, layer), got, want in zip(jobs, results, expected):
        assert_close_scaled(got, want.coefficients, alpha_scale(m, want)[0], rel, f"{m} at {layer} from a thread")
    for m in lite0.module.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
        assert not m._forward_hooks_with_kwargs
    assert not any(p.requires_grad for p in lite0.module.parameters())


def test_progress_is_reported(tiny):
    seen = []
    camlib.explain(tiny, torch.rand(3, 16, 16), "shapcam", permutations=4, progress=seen.append)
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)


def _same(a, b, what: str) -> None:
    """Bit-identical: explain_many runs each method's own operations on the same tensors, in the
    same order and threads, so nothing may differ (not a tolerance question)."""
    assert a.info["backends"] == b.info["backends"], what
    for field in ("coefficients", "activations", "cam", "saliency", "logits", "target", "constant"):
        assert torch.equal(getattr(a, field), getattr(b, field)), f"{what}: {field}"


@pytest.mark.parametrize("layer", ["bn2", "blocks.6", "blocks.6.0.bn2"])
def test_explain_many_equals_each_method_alone(lite0, chelsea, layer):
    methods = ["gradcam", "gradcampp", "xgradcam", "liftcam", "lrpcam"] + (["cam"] if layer == "bn2" else [])
    many = camlib.explain_many(lite0, chelsea, methods, layer=layer)
    assert list(many) == methods
    for m in methods:
        _same(many[m], camlib.explain(lite0, chelsea, m, layer=layer), f"{m} at {layer}")
    assert len({e.activations.data_ptr() for e in many.values()}) == 1  # one head pass, shared


def test_explain_many_mixes_families_options_and_batches(tiny):
    torch.manual_seed(1)
    x = torch.rand(3, 3, 16, 16)
    options = {"SHAP-CAM": {"permutations": 4, "seed": 3}, "ablationcam": {}}
    many = camlib.explain_many(tiny, x, ["gradcam", "shapcam", "ablationcam", "liftcam"], target=[0, 2, 1],
                               options=options)
    assert many["shapcam"].batched and many["shapcam"].coefficients.shape == (3, 6)
    _same(many["shapcam"], camlib.explain(tiny, x, "shapcam", target=[0, 2, 1], permutations=4, seed=3), "shapcam")
    for m in ("gradcam", "ablationcam", "liftcam"):
        _same(many[m], camlib.explain(tiny, x, m, target=[0, 2, 1]), m)


def test_explain_many_refuses_bad_arguments(tiny):
    x = torch.rand(3, 16, 16)
    with pytest.raises(ValueError, match="no method"):
        camlib.explain_many(tiny, x, [])
    with pytest.raises(ValueError, match="not asked for: shapcam"):
        camlib.explain_many(tiny, x, ["gradcam"], options={"shapcam": {"permutations": 2}})
    with pytest.raises(ValueError, match="unknown model inputs: question"):
        camlib.explain_many(tiny, x, ["gradcam", "liftcam"], question="what?")
    with pytest.raises(ValueError, match="SHAP-CAM has no option 'orderings'"):
        camlib.explain(tiny, x, "shapcam", orderings=3)
    with pytest.raises(ValueError, match="permutations"):
        camlib.explain_many(tiny, x, ["shapcam"], options={"shapcam": {"permutations": 0}})
