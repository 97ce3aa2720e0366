"""Constant maps in the benchmarks: the ``constant`` column, the counts in every table, the tables
over the non-constant images, resumption from CSVs written before the column existed, and the
batched scoring of all methods equal to the per-method metric functions."""

from __future__ import annotations

import csv

import pytest
import torch

from bench_tiny import build_signed, cells, make_data, read_csv, table_lines
from camlib.bench import faithfulness
from camlib.bench.report import RowStore, constant_cell, constant_flag, nonconstant_items

SIGNED = ["--model", "bench_tiny:build_signed", "--device", "cpu", "--no-progress"]
# Images 0 and 2 are of class 0 (Grad-CAM's map constant by construction), 1 and 3 of class 1.
LABELS = [0, 1, 0, 1]


@pytest.fixture
def data(tmp_path):
    return make_data(tmp_path / "data", n=4, labels=LABELS)


def args(data, out, *extra):
    return ["--data", str(data), "--out", str(out), *SIGNED, "--steps", "5", "--methods", "gradcam", "scorecam",
            *extra]


def test_constant_maps_are_flagged_and_scored_as_black_explanations(data, tmp_path):
    out = tmp_path / "out"
    faithfulness.run(args(data, out))
    rows = {(r["image"], r["method"]): r for r in read_csv(out / "faithfulness.csv")}
    files = [f"images/img_{i:03d}.png" for i in range(4)]
    assert [rows[(f, "gradcam")]["constant"] for f in files] == ["1", "0", "1", "0"]
    assert [rows[(f, "scorecam")]["constant"] for f in files] == ["0"] * 4

    # A constant map has saliency 0: e = 0 ∘ x is the black image, e_inv = x, pointing 0, and the
    # insertion order of its (all tied) pixels is row-major. Recomputed here with the network itself
    # (contiguous module; the bench runs a channels-last copy: float32 rounding of 3x3 convolutions
    # of values O(1), |Δp| < 2e-5).
    from camlib.bench.data import load_batch, load_index

    model = build_signed()
    images, _ = load_batch(data, load_index(data), (16, 16))

    def p0(x):
        return float(torch.softmax(model.predict(x), dim=1)[0, 0])

    black = torch.zeros(1, 3, 16, 16)
    for i in (0, 2):
        row = rows[(files[i], "gradcam")]
        x = images[i:i + 1]
        y = p0(x)
        assert float(row["Y"]) == pytest.approx(y, abs=2e-5)
        assert float(row["O"]) == pytest.approx(p0(black), abs=2e-5)
        assert float(row["D"]) == pytest.approx(y, abs=2e-5)
        assert float(row["add"]) == pytest.approx(0.0, abs=1e-4)  # (Y - D) / Y with D = Y
        assert float(row["ad"]) == pytest.approx(max(0.0, y - p0(black)) / y, abs=1e-4)
        assert float(row["pointing"]) == 0.0
        # 5 steps on 16 x 16: the first 0, 64, 128, 192, 256 pixels in row-major order = 0, 4, 8, 12, 16 rows
        ins = [p0(torch.cat([x[..., :4 * k, :], black[..., 4 * k:, :]], dim=2)) for k in range(5)]
        dele = [p0(torch.cat([black[..., :4 * k, :], x[..., 4 * k:, :]], dim=2)) for k in range(5)]
        trapezoid = lambda c: sum(0.25 * (c[j] + c[j + 1]) / 2 for j in range(4))  # noqa: E731
        assert float(row["ins_auc"]) == pytest.approx(trapezoid(ins), abs=2e-5)
        assert float(row["del_auc"]) == pytest.approx(trapezoid(dele), abs=2e-5)


def test_tables_count_constant_maps_and_repeat_over_nonconstant_images(data, tmp_path):
    out = tmp_path / "out"
    md = faithfulness.run(args(data, out))["markdown"]
    rows = read_csv(out / "faithfulness.csv")
    means = table_lines(md, 0)
    assert cells(means[0])[:3] == ["Method", "N", "const."]
    assert [cells(line)[:3] for line in means[2:]] == [["Grad-CAM", "4", "2/4"], ["Score-CAM", "4", "0/4"]]
    assert "Over the 2 of 4 images on which every method produced a non-constant map " \
           "(left out: 2 with a constant map of some method)" in md
    subset = table_lines(md, 1)  # no LIFT-CAM, so no paired table: the next table is the subset's
    assert [cells(line)[:3] for line in subset[2:]] == [["Grad-CAM", "2", "0/2"], ["Score-CAM", "2", "0/2"]]
    kept = {"images/img_001.png", "images/img_003.png"}
    for line, method in zip(subset[2:], ("gradcam", "scorecam")):
        ad = [float(r["ad"]) for r in rows if r["method"] == method and r["image"] in kept]
        assert float(cells(line)[4].split(" [")[0]) == pytest.approx(100 * sum(ad) / 2, abs=0.006)


def test_paired_differences_over_nonconstant_images(data, tmp_path):
    out = tmp_path / "out"
    md = faithfulness.run(args(data, out, "--methods", "gradcam", "scorecam", "liftcam"))["markdown"]
    rows = {(r["image"], r["method"]): r for r in read_csv(out / "faithfulness.csv")}
    # LIFT-CAM's α has the sign of the weights too: constant on images 0 and 2 like Grad-CAM
    assert [rows[(f"images/img_{i:03d}.png", "liftcam")]["constant"] for i in range(4)] == ["1", "0", "1", "0"]
    all_paired, subset_paired = table_lines(md, 1), table_lines(md, 3)
    assert [cells(line)[:3] for line in all_paired[2:]] == [["Grad-CAM − LIFT-CAM", "4", "2/4, 2/4"],
                                                           ["Score-CAM − LIFT-CAM", "4", "0/4, 2/4"]]
    assert [cells(line)[:3] for line in subset_paired[2:]] == [["Grad-CAM − LIFT-CAM", "2", "0/2, 0/2"],
                                                              ["Score-CAM − LIFT-CAM", "2", "0/2, 0/2"]]
    kept = ("images/img_001.png", "images/img_003.png")
    diff = [float(rows[(f, "scorecam")]["add"]) - float(rows[(f, "liftcam")]["add"]) for f in kept]
    assert float(cells(subset_paired[3])[5].split(" [")[0]) == pytest.approx(100 * sum(diff) / 2, abs=0.006)


def without_constant_column(path):
    """Rewrite a CSV as the previous version wrote it: the same rows without the ``constant`` column."""
    rows = read_csv(path)
    fields = [f for f in rows[0] if f != "constant"]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def test_resume_from_a_csv_without_the_constant_column(data, tmp_path):
    out = tmp_path / "out"
    faithfulness.run(args(data, out, "--n-images", "2"))
    without_constant_column(out / "faithfulness.csv")
    old = {(r["image"], r["method"]): r for r in read_csv(out / "faithfulness.csv")}
    result = faithfulness.run(args(data, out, "--n-images", "4"))
    assert (result["computed"], result["skipped"]) == (4, 4)  # the old rows are kept, not recomputed
    rows = read_csv(out / "faithfulness.csv")
    assert list(rows[0]) == list(faithfulness.FIELDS)
    for r in rows:
        if (r["image"], r["method"]) in old:  # unknown, never silently 0; every other value kept
            assert r["constant"] == ""
            assert {k: v for k, v in r.items() if k != "constant"} == old[(r["image"], r["method"])]
        else:
            assert r["constant"] == ("1" if r["image"] == "images/img_002.png" and r["method"] == "gradcam" else "0")
    md = result["markdown"]
    assert [cells(line)[:3] for line in table_lines(md, 0)[2:]] == [["Grad-CAM", "4", "1/4 (2 unknown)"],
                                                                    ["Score-CAM", "4", "0/4 (2 unknown)"]]
    assert "Over the 1 of 4 images on which every method produced a non-constant map (left out: 1 with a " \
           "constant map of some method, 2 with an unknown flag" in md
    assert [cells(line)[:3] for line in table_lines(md, 1)[2:]] == [["Grad-CAM", "1", "0/1"],
                                                                    ["Score-CAM", "1", "0/1"]]


def test_row_store_reads_and_upgrades_files_without_optional_columns(tmp_path):
    fields, key = ["image", "method", "constant", "value"], ["image", "method"]
    (tmp_path / "x.csv").write_text("image,method,value\na,m,0.5\n")
    store = RowStore(tmp_path, "x", fields, key, optional=["constant"])
    assert store.read_all() == [{"image": "a", "method": "m", "value": "0.5", "constant": ""}]
    # a missing column that is not optional, or the columns in another order, are refused
    with pytest.raises(ValueError, match="columns"):
        RowStore(tmp_path, "x", fields, key).read_all()
    (tmp_path / "y.csv").write_text("image,value,method\na,0.5,m\n")
    with pytest.raises(ValueError, match="columns"):
        RowStore(tmp_path, "y", fields, key, optional=["constant"]).read_all()
    # appending first rewrites the old file with the current columns
    store.open()
    store.append([{"image": "b", "method": "m", "constant": 1, "value": 0.25}])
    store.close()
    with open(tmp_path / "x.csv", newline="") as fh:
        assert list(csv.reader(fh)) == [fields, ["a", "m", "", "0.5"], ["b", "m", "1", "0.25"]]


def test_constant_helpers():
    rows = [{"image": "a", "method": "g", "constant": "1"}, {"image": "a", "method": "s", "constant": "0"},
            {"image": "b", "method": "g", "constant": "0"}, {"image": "b", "method": "s", "constant": "0"},
            {"image": "c", "method": "g", "constant": ""}, {"image": "c", "method": "s", "constant": "0"},
            {"image": "d", "method": "g", "constant": "0"}]  # d has no row of method s
    assert [constant_flag(r) for r in rows[:5]] == [True, False, False, False, None]
    assert constant_cell(rows) == "1/7 (1 unknown)" and constant_cell(rows[:4]) == "1/4"
    assert nonconstant_items(rows) == ({"b"}, 1, 2)


def test_batched_scoring_equals_per_method_metric_functions(data, tmp_path):
    """The bench scores all methods' maps of a batch in one metrics.score_maps call (x once per
    image); its rows equal confidence_scores + insertion_deletion + energy_pointing_game per method.
    Bound: the bench evaluates a channels-last copy of the network in other batches than the
    reference here (contiguous module): float32 rounding of convolutions over 27 values O(1) and a
    4-term pooled linear layer, |Δp| < 2e-5 for probabilities and AUCs (means of probabilities)."""
    import camlib
    from camlib import metrics
    from camlib.bench.data import load_batch, load_index

    out = tmp_path / "out"
    faithfulness.run(args(data, out, "--steps", "11", "--methods", "gradcam", "scorecam", "liftcam"))
    rows = {(r["image"], r["method"]): r for r in read_csv(out / "faithfulness.csv")}
    model = build_signed()
    records = load_index(data)
    images, boxes = load_batch(data, records, (16, 16))
    logits_fn = model.logits_fn()
    for method in ("gradcam", "scorecam", "liftcam"):
        exp = camlib.explain(model, images, method, target=LABELS)
        conf = metrics.confidence_scores(logits_fn, images, exp.saliency, exp.target, batch_size=1)
        curves = metrics.insertion_deletion(logits_fn, images, exp.saliency, exp.target, steps=11, batch_size=1)
        pointing = metrics.energy_pointing_game(exp.saliency, boxes)
        for i, record in enumerate(records):
            row = rows[(record.file, method)]
            assert int(row["constant"]) == int(exp.constant[i])
            for field in ("Y", "O", "D"):
                assert float(row[field]) == pytest.approx(float(getattr(conf, field)[i]), abs=2e-5)
            assert float(row["ins_auc"]) == pytest.approx(float(curves.ins_auc[i]), abs=2e-5)
            assert float(row["del_auc"]) == pytest.approx(float(curves.del_auc[i]), abs=2e-5)
            assert float(row["pointing"]) == pytest.approx(float(pointing[i]), abs=1e-6)


def test_shap_table1_and_agreement_flag_constant_maps(data, tmp_path):
    from camlib.bench import shap

    # On the signed model's linear tail SHAP-CAM's α_k has the sign of w_ck as well: constant on images 0, 2.
    out = tmp_path / "t1"
    md = shap.run_table1(["--data", str(data), "--out", str(out), *SIGNED, "--permutations", "1", "3",
                          "--seeds", "2", "--methods", "gradcam", "scorecam"])["markdown"]
    rows = read_csv(out / "shap_table1.csv")
    assert len(rows) == 4 * 2 * 2 + 4 * 2
    for r in rows:
        constant = r["method"] != "scorecam" and r["image"] in ("images/img_000.png", "images/img_002.png")
        assert r["constant"] == ("1" if constant else "0")
        if constant:  # black explanation image: e_inv = x (|Δp| < 2e-5, see above)
            assert float(r["D"]) == pytest.approx(float(r["Y"]), abs=2e-5)
    means = table_lines(md, 0)
    assert [cells(line)[:3] for line in means[2:]] == [["SHAP-CAM (\\|Π\\|=1)", "2 × 4", "4/8"],
                                                      ["SHAP-CAM (\\|Π\\|=3)", "2 × 4", "4/8"],
                                                      ["Grad-CAM", "1 × 4", "2/4"], ["Score-CAM", "1 × 4", "0/4"]]
    assert "Over the 2 of 4 images on which every run and method produced a non-constant map" in md
    assert [cells(line)[:3] for line in table_lines(md, 2)[2:]] == [["SHAP-CAM (\\|Π\\|=1)", "2 × 2", "0/4"],
                                                                   ["SHAP-CAM (\\|Π\\|=3)", "2 × 2", "0/4"],
                                                                   ["Grad-CAM", "1 × 2", "0/2"],
                                                                   ["Score-CAM", "1 × 2", "0/2"]]

    out = tmp_path / "agreement"
    md = shap.run_agreement(["--data", str(data), "--out", str(out), *SIGNED, "--permutations", "6",
                             "--compare-permutations", "2", "--methods", "gradcam", "scorecam",
                             "--samplers", "shapcam"])["markdown"]
    rows = {(r["image"], r["method"]): r for r in read_csv(out / "shap_agreement.csv")}
    for i in range(4):
        for method in ("gradcam", "scorecam", "shapcam_2"):
            expected = method != "scorecam" and i in (0, 2)
            assert rows[(f"images/img_{i:03d}.png", method)]["constant"] == ("1" if expected else "0")
    assert [cells(line)[:3] for line in table_lines(md, 0)[2:]] == [["Grad-CAM", "4", "2/4"],
                                                                   ["Score-CAM", "4", "0/4"],
                                                                   ["SHAP-CAM (\\|Π\\|=2)", "4", "2/4"]]
