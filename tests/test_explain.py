"""camlib.explain: inputs, targets, batches, the pretrained default, sharing between threads."""

import threading

import pytest
import torch

import camlib

FAST_METHODS = ["gradcam", "gradcampp", "xgradcam", "ablationcam", "liftcam", "shapcam"]


@pytest.mark.parametrize("method", [*FAST_METHODS, "scorecam"])
def test_batch_equals_one_at_a_time(tiny, method):
    torch.manual_seed(0)
    n = 7  # more than one chunk of images through the head (network_batch: 4 on the CPU)
    x = torch.rand(n, 3, 16, 16)
    targets = [i % 3 for i in range(n)]
    options = {"permutations": 3} if camlib.get_method(method).options else {}
    batch = camlib.explain(tiny, x, method, target=targets, **options)
    assert batch.batched and batch.coefficients.shape == (n, 6) and batch.saliency.shape == (n, 16, 16)
    for i in range(n):
        single = camlib.explain(tiny, x[i], method, target=targets[i], **options)
        assert not single.batched and single.coefficients.shape == (6,)
        torch.testing.assert_close(single.coefficients, batch.coefficients[i], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(single.saliency, batch.saliency[i], rtol=1e-4, atol=1e-5)


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
    expected = [camlib.explain(lite0, x, m, layer=layer).coefficients for x, m, layer in jobs]
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
    for got, want in zip(results, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    for m in lite0.module.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
        assert not m._forward_hooks_with_kwargs
    assert not any(p.requires_grad for p in lite0.module.parameters())


def test_progress_is_reported(tiny):
    seen = []
    camlib.explain(tiny, torch.rand(3, 16, 16), "shapcam", permutations=4, progress=seen.append)
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)
