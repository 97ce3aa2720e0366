"""``camlib.bench constant-maps``: every field against an independent computation on the tiny model."""

import csv

import pytest
import torch

import camlib
from bench_tiny import build, make_data
from camlib.bench import constant_maps
from camlib.bench.data import load_batch, load_index, select


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    root = make_data(tmp_path_factory.mktemp("data"), n=4)
    out = tmp_path_factory.mktemp("out")
    text = constant_maps.run(["--data", str(root), "--out", str(out), "--model", "bench_tiny:build",
                              "--layer", "features", "--n-images", "4", "--methods", "gradcam", "liftcam"])
    with open(out / "constant_maps.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return root, rows, text


def test_fields_equal_a_direct_computation(result):
    root, rows, text = result
    model = build()
    records = select(load_index(root), 4, 0)
    images, _ = load_batch(root, records, model.input_size)
    targets = [r.class_index for r in records]
    tail = model.split("features").tail
    for method in ("gradcam", "liftcam"):
        exp = camlib.explain(model, images, method, target=targets)
        mine = {r["image"]: r for r in rows if r["method"] == method}
        for b, record in enumerate(records):
            row = mine[record.file]
            alpha, a = exp.coefficients[b].double(), exp.activations[b].double()
            m = torch.einsum("k,khw->hw", alpha, a)
            assert int(row["constant"]) == int(bool(exp.constant[b])) == int(bool((m <= 0).all()))
            # float64 sums of float32 inputs: rounding ~1e-16 relative; the CSV keeps repr precision
            assert float(row["m_mean"]) == pytest.approx(float(m.mean()), rel=1e-12, abs=1e-15)
            assert float(row["positive_share"]) == float((m > 0).double().mean())
            mass = a.mean((1, 2))
            assert float(row["neg_part"]) == pytest.approx(float((alpha.clamp_max(0) * mass).sum()), rel=1e-12,
                                                           abs=1e-15)
            with torch.inference_mode():
                zero = tail(torch.zeros_like(exp.activations[b:b + 1]))[0, targets[b]]
            # F^c(0) from LIFT-CAM's stored reference pass and from this plain pass: the same float32
            # graph on the same input
            assert float(row["reference_logit"]) == pytest.approx(float(zero), rel=1e-6, abs=1e-6)
            assert float(row["delta"]) == pytest.approx(float(row["logit"]) - float(row["reference_logit"]), abs=1e-12)
            # BenchNet's last clamp is the ReLU after fc1 (fc2 after it is linear): never saturated
            # (hi = inf); 'off' is the share of fc1's outputs at or below 0
            x = model.module.pool(model.module.act(model.module.mix(exp.activations[b:b + 1])))
            h = model.module.fc1(torch.flatten(x, 1))
            assert float(row["saturated"]) == 0.0 and float(row["saturated_logit"]) == 0.0
            assert float(row["off"]) == float((h <= 0).double().mean())
    lift = {r["image"]: r for r in rows if r["method"] == "liftcam"}
    exp = camlib.explain(model, images, "liftcam", target=targets)
    for b, record in enumerate(records):  # LIFT-CAM's α add up to F^c(A) - F^c(0) (Eq. 8)
        # float32 through a 3-layer tail of ≤ 96-term sums: a few hundred u of the logits' magnitude
        scale = float(exp.logits[b].abs().max())
        assert float(exp.coefficients[b].sum()) == pytest.approx(float(lift[record.file]["delta"]), abs=1e-5 * scale)
    assert "| Grad-CAM |" in text and "| LIFT-CAM |" in text and "F^c(0)" in text
