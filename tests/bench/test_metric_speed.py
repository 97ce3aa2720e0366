"""``python -m camlib.bench metric-speed``: the peers' adapters give camlib's numbers where the
definitions coincide (values, not timings: timings are machine- and load-dependent), and the CLI
writes its report."""

from __future__ import annotations

import pytest
import torch

from bench_tiny import build, make_data
from camlib.bench import metric_speed
from camlib.bench.common import PixelSpaceNetwork


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import camlib
    from camlib.bench.data import load_batch, load_index

    data = make_data(tmp_path_factory.mktemp("data"), n=4)
    model = build()
    records = load_index(data)
    images, _ = load_batch(data, records, model.input_size)
    target = torch.tensor([r.class_index for r in records])
    maps = []
    for method in ("gradcam", "liftcam"):
        exp = camlib.explain(model, images, method, target=target.tolist())
        maps.append((method, exp.saliency, exp.target))
    net = PixelSpaceNetwork(model, channels_last=False).eval()
    return data, net, images, maps


def test_torchcam_ic_ad_equals_camlib(setup):
    pytest.importorskip("torchcam")
    _, net, images, maps = setup
    ours = metric_speed.camlib_confidence(net, images, maps, batch=3)
    theirs = metric_speed.torchcam_ic_ad(net, images, maps, batch=3)
    for label, _, _ in maps:
        # torchcam: max(0, Y - O) / (Y + 1e-7); camlib: / max(Y, 1e-12). The terms differ by at most
        # 1e-7 / min Y relative, plus float32 rounding (1e-6 relative) of the probabilities and the mean.
        bound = 1e-7 / float(ours[label].Y.min()) + 1e-6
        assert theirs[label]["avg_drop"] == pytest.approx(float(ours[label].ad.mean()), rel=bound, abs=1e-7)
        assert theirs[label]["conf_increase"] == float(ours[label].ic.mean())


def test_torchcam_insertion_deletion_equals_camlib_on_the_same_grid(setup):
    pytest.importorskip("torchcam")
    _, net, images, maps = setup
    # 16 x 16 = 256 pixels, 5 thresholds = 4 intervals of 64 pixels: the same counts in both libraries,
    # the same stable row-major tie order, the same trapezoid over the kept fraction
    ours = metric_speed.camlib_insertion_deletion(net, images, maps, batch=3, steps=5)
    theirs = metric_speed.torchcam_insertion_deletion(net, images, maps, batch=3, steps=5)
    for label, _, _ in maps:
        # the same images through the same network, in other batches: float32 rounding, < 1e-6
        assert theirs[label]["insertion_auc"] == pytest.approx(float(ours[label].ins_auc.mean()), abs=1e-6)
        assert theirs[label]["deletion_auc"] == pytest.approx(float(ours[label].del_auc.mean()), abs=1e-6)


def test_quantus_deletion_equals_camlib_when_ties_are_broken_alike(setup):
    pytest.importorskip("quantus")
    _, net, images, maps = setup
    assert metric_speed.quantus_steps(images, 5) == 64  # 256 / 4 features per step: 12 steps, 3 per interval
    assert metric_speed.quantus_steps(images, 41) is None  # 256 / 40 is no whole number
    ours = metric_speed.camlib_insertion_deletion(net, images, maps, batch=3, steps=5)
    tied = metric_speed.quantus_deletion(net, images, maps, batch=3, steps=5, tie_broken=True)
    raw = metric_speed.quantus_deletion(net, images, maps, batch=3, steps=5)
    for label, _, _ in maps:
        assert tied[label].shape == (4, 12)
        # every third Quantus step removes whole intervals: del(δ_j), j = 1..4 (float32 rounding only)
        torch.testing.assert_close(tied[label][:, 2::3], ours[label].del_curve[:, 1:].double(), rtol=0, atol=1e-6)
        # with the maps themselves Quantus orders tied pixels its own way, feature by feature: the last
        # point (everything removed) agrees whatever the order
        torch.testing.assert_close(raw[label][:, -1], ours[label].del_curve[:, -1].double(), rtol=0, atol=1e-6)


def test_quantus_refuses_all_zero_maps(setup):
    pytest.importorskip("quantus")
    _, net, images, maps = setup
    zero = [("constant", torch.zeros_like(maps[0][1]), maps[0][2])]
    out = metric_speed.quantus_deletion(net, images, zero, batch=3, steps=5)
    assert isinstance(out["constant"], str) and "zero" in out["constant"]


def test_cli_report(setup, tmp_path):
    pytest.importorskip("torchcam")
    data = setup[0]
    out = tmp_path / "speed.md"
    assert metric_speed.main(["--data", str(data), "--model", "bench_tiny:build", "--device", "cpu", "--n-images",
                              "2", "--steps", "5", "--peer-steps", "5", "--forward-images", "4", "--out",
                              str(out)]) == 0
    text = out.read_text()
    for case in ("camlib score_maps", "camlib per method", "camlib per method, batch 64", "camlib confidence_scores",
                 "torchcam ClassificationMetric", "camlib insertion_deletion", "torchcam DeletionInsertionMetric"):
        assert f"| {case} |" in text
    # network images per row, counted: score_maps 2 + 2 * 3 per map + (2 images + black) / 4 rows;
    # per method 3 + 2 * 5
    assert "| camlib score_maps | IC/AD/ADD + ins/del (5 thr.) | 8.8 |" in text
    assert "| camlib per method | IC/AD/ADD + ins/del (5 thr.) | 13.0 |" in text
    # torchcam's whole suite is its two metrics: 2 + (2 + 2 * 3) network images per row
    assert "| torchcam ClassificationMetric + DeletionInsertionMetric | IC/AD + ins/del (5 thr.) | 10.0 |" in text
    assert "## Agreement on the same maps" in text and "load average" in text
