"""End-to-end tests of ``python -m camlib.bench``: CSV rows, Markdown, resumption, SHAP commands."""

from __future__ import annotations

import math
import statistics

import pytest

from bench_tiny import cells, make_data, read_csv, table_lines
from camlib.bench.__main__ import main
from camlib.bench import faithfulness, shap

TINY = ["--model", "bench_tiny:build", "--device", "cpu", "--no-progress"]
FIELDS = ["image", "method", "target", "predicted", "constant", "Y", "O", "D", "ic", "ad", "add", "ins_auc",
          "del_auc", "pointing", "seconds"]


@pytest.fixture
def data(tmp_path):
    return make_data(tmp_path / "data", n=4)


def faith(data, out, *extra):
    return ["--data", str(data), "--out", str(out), *TINY, "--steps", "5", "--methods", "gradcam", "liftcam",
            *extra]


def test_faithfulness_rows_and_markdown(data, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["faithfulness", *faith(data, out, "--batch-size", "3")]) == 0
    rows = read_csv(out / "faithfulness.csv")
    assert list(rows[0]) == FIELDS
    assert len(rows) == 8
    assert [(r["image"], r["method"]) for r in rows] == sorted((f"images/img_{i:03d}.png", m)
                                                               for i in range(4) for m in ("gradcam", "liftcam"))
    index = {r["file"]: int(r["class_index"]) for r in read_csv(data / "index.csv")}
    for r in rows:
        assert int(r["target"]) == index[r["image"]]  # target = ground-truth class by default
        for f in ("Y", "O", "D", "ins_auc", "del_auc", "pointing"):
            assert 0.0 <= float(r[f]) <= 1.0
        assert float(r["ic"]) == float(float(r["Y"]) < float(r["O"]))
        y = max(float(r["Y"]), 1e-12)
        assert float(r["ad"]) == pytest.approx(max(0.0, float(r["Y"]) - float(r["O"])) / y, rel=1e-5, abs=1e-6)
        assert float(r["add"]) == pytest.approx((float(r["Y"]) - float(r["D"])) / y, rel=1e-5, abs=1e-6)
        assert float(r["seconds"]) > 0
        assert r["constant"] in ("0", "1")
    # same image, same Y for every method: x is scored once per image
    assert rows[0]["Y"] == rows[1]["Y"]

    md = (out / "faithfulness.md").read_text()
    assert md == capsys.readouterr().out.rstrip("\n") + "\n"
    blocks = [b for b in md.split("\n\n") if b.startswith("|")]
    any_constant = any(r["constant"] == "1" for r in rows)
    # the means and the paired differences to LIFT-CAM; again over the non-constant images if any map is constant
    assert len(blocks) == (4 if any_constant else 2)
    lines = blocks[0].splitlines()
    paired = blocks[1].splitlines()
    assert paired[0].startswith("| Difference | N | const. | IC (%)")
    assert paired[2].startswith("| Grad-CAM − LIFT-CAM | 4 |")
    assert lines[0] == ("| Method | N | const. | IC (%) | AD (%) | ADD (%) | Insertion AUC | Deletion AUC "
                        "| Pointing (%) | s / image |")
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["Grad-CAM", "LIFT-CAM"]
    assert all(line.split("|")[2].strip() == "4" for line in lines[2:])
    for line, m in zip(lines[2:], ("gradcam", "liftcam")):
        assert line.split("|")[3].strip() == f"{sum(r['constant'] == '1' for r in rows if r['method'] == m)}/4"
    # the table's AD mean is the CSV's mean x 100
    ad = [100 * sum(float(r["ad"]) for r in rows if r["method"] == m) / 4 for m in ("gradcam", "liftcam")]
    for line, mean in zip(lines[2:], ad):
        cell = line.split("|")[5].strip().strip("*")
        assert float(cell.split(" [")[0]) == pytest.approx(mean, abs=0.006)
        low, high = (float(v) for v in cell.split("[")[1].rstrip("]").split(","))
        assert low <= mean + 0.006 and mean - 0.006 <= high
    assert "target = ground-truth class" in md
    assert md.count("**") >= 2 * 6  # a best value per column is bold


def test_paired_to_rewrites_the_tables_of_a_finished_run(data, tmp_path):
    """--paired-to: one paired table per reference method, values from the CSV; re-running a
    finished run with it computes nothing and keeps the rows; an unknown name fails at the start."""
    out = tmp_path / "out"
    first = faithfulness.run(faith(data, out))
    rows = read_csv(out / "faithfulness.csv")
    again = faithfulness.run(faith(data, out, "--paired-to", "gradcam", "LIFT-CAM"))
    assert (again["computed"], again["skipped"]) == (0, 8)
    assert read_csv(out / "faithfulness.csv") == rows
    md = again["markdown"]
    assert "Paired differences to Grad-CAM on the same images" in md and "Paired differences to LIFT-CAM" in md
    assert md.index("LIFT-CAM − Grad-CAM") < md.index("Grad-CAM − LIFT-CAM")  # in the order asked
    # each table's difference is the mean of the per-image differences of the CSV, and flips sign
    ad = {m: [100 * float(r["ad"]) for r in rows if r["method"] == m] for m in ("gradcam", "liftcam")}
    mean = sum(a - b for a, b in zip(ad["liftcam"], ad["gradcam"])) / 4
    for line, sign in (("| LIFT-CAM − Grad-CAM | 4 |", 1), ("| Grad-CAM − LIFT-CAM | 4 |", -1)):
        cell = next(x for x in md.splitlines() if x.startswith(line)).split("|")[5].strip()
        assert float(cell.split(" [")[0]) == pytest.approx(sign * mean, abs=0.006)
    assert first["markdown"].count("Paired differences to") == md.count("Paired differences to") / 2
    with pytest.raises(ValueError, match="nomethod"):
        faithfulness.run(faith(data, tmp_path / "other", "--paired-to", "nomethod"))
    assert not (tmp_path / "other").exists()


def test_resume_computes_only_missing_rows(data, tmp_path):
    out = tmp_path / "out"
    first = faithfulness.run(faith(data, out, "--n-images", "2"))
    assert (first["computed"], first["skipped"]) == (4, 0)
    before = {(r["image"], r["method"]): r for r in read_csv(out / "faithfulness.csv")}
    second = faithfulness.run(faith(data, out, "--n-images", "4"))
    assert (second["computed"], second["skipped"]) == (4, 4)
    after = read_csv(out / "faithfulness.csv")
    assert len(after) == 8
    for r in after:  # old rows are kept as they were (same seconds: not recomputed)
        if (r["image"], r["method"]) in before:
            assert r == before[(r["image"], r["method"])]
    third = faithfulness.run(faith(data, out, "--n-images", "4"))
    assert (third["computed"], third["skipped"]) == (0, 8)
    # the Markdown of a smaller selection only uses its images
    faithfulness.run(faith(data, out, "--n-images", "2"))
    assert "| Grad-CAM | 2 |" in (out / "faithfulness.md").read_text()
    assert len(read_csv(out / "faithfulness.csv")) == 8


def test_resume_after_interruption_mid_row(data, tmp_path):
    out = tmp_path / "out"
    faithfulness.run(faith(data, out, "--n-images", "2"))
    text = (out / "faithfulness.csv").read_text().splitlines(keepends=True)
    # keep the header and one complete row, then half a row (killed while writing)
    (out / "faithfulness.csv").write_text("".join(text[:2]) + text[2][:25])
    result = faithfulness.run(faith(data, out, "--n-images", "2"))
    assert (result["computed"], result["skipped"]) == (3, 1)
    rows = read_csv(out / "faithfulness.csv")
    assert len(rows) == 4 and all(None not in r.values() for r in rows)


def test_other_configuration_is_refused(data, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["faithfulness", *faith(data, out, "--n-images", "1")]) == 0
    assert main(["faithfulness", *faith(data, out, "--n-images", "1", "--target", "predicted")]) == 2
    assert "another configuration" in capsys.readouterr().err


def test_target_predicted_and_no_auc(data, tmp_path):
    out = tmp_path / "out"
    faithfulness.run(["--data", str(data), "--out", str(out), *TINY, "--steps", "0", "--methods", "xgradcam",
                      "--target", "predicted", "--seed", "3", "--n-images", "3"])
    rows = read_csv(out / "faithfulness.csv")
    assert len(rows) == 3
    assert all(r["target"] == r["predicted"] for r in rows)
    assert all(math.isnan(float(r["ins_auc"])) for r in rows)
    md = (out / "faithfulness.md").read_text()
    assert "| XGrad-CAM | 3 |" in md and "—" in md and "target = predicted class" in md


def test_shap_agreement(data, tmp_path):
    import camlib
    from bench_tiny import build
    from camlib.bench.data import load_batch, load_index, select

    out = tmp_path / "out"
    argv = ["--data", str(data), "--out", str(out), *TINY, "--n-images", "2", "--methods", "gradcam", "liftcam",
            "ablationcam", "--permutations", "30", "--compare-permutations", "1", "5"]
    result = shap.run_agreement(argv)
    rows = read_csv(out / "shap_agreement.csv")
    samplers = camlib.estimators.sampling_methods()  # every method with a budget option, from its metadata
    assert {"shapcam", "antishapcam", "stratshapcam"} <= set(samplers)
    ordering = [k for k in samplers if camlib.get_method(k).cost is camlib.methods.Cost.PER_ORDERING]
    labels = {"ablationcam", "gradcam", "liftcam"} | {f"{k}_{p}" for k in ordering for p in range(1, 6)}
    assert labels <= {r["method"] for r in rows}
    assert all(-1 <= float(r["cosine"]) <= 1 for r in rows)
    assert len(list((out / "shap_agreement.ref").glob("*.pt"))) == 2
    # The values: SHAP-CAM_p's row is the cosine of the running estimate after p orderings (seed 1)
    # to SHAP-CAM_30 (seed 0); the evaluations are Method.evaluations.
    model = build(device="cpu", weights=None)
    k = model.layer_info(model.default_layer).shape[0]
    record = select(load_index(data), 2)[0]
    image, _ = load_batch(data, [record], model.input_size)
    ref = camlib.explain(model, image, "shapcam", target=[record.class_index], permutations=30, seed=0)
    for key in ordering:
        run = camlib.explain(model, image, key, target=[record.class_index], permutations=5, seed=1)
        for p in (1, 3, 5):
            (row,) = [r for r in rows if r["image"] == record.file and r["method"] == f"{key}_{p}"]
            expected = camlib.metrics.cosine_similarity(run.info["running"][p - 1], ref.coefficients)
            assert abs(float(row["cosine"]) - float(expected)) <= 1e-5  # float32 cosine of the same estimates
            assert int(row["evaluations"]) == p * (k + 1)
    evaluations = {r["method"]: int(r["evaluations"]) for r in rows if r["image"] == record.file}
    assert evaluations["gradcam"] == evaluations["liftcam"] == 1 and evaluations["ablationcam"] == k
    md = result["markdown"]
    assert "cosine to SHAP-CAM" in md and "| LIFT-CAM | 2 |" in md and "SHAP-CAM (\\|Π\\|=5)" in md
    assert "Antithetic SHAP-CAM (\\|Π\\|=5)" in md and "SHAP-CAM (\\|Π\\|=3)" not in md  # only compared budgets
    assert "tail evaluations / image" in md and f"| {5 * (k + 1):,} |" in md
    assert "warning" not in md  # 'features' has a nonlinear tail
    budget = md[md.index("stays at least plain SHAP-CAM"):]
    assert "| Stratified SHAP-CAM |" in budget and "cos " in budget
    again = shap.run_agreement(argv)
    assert again["computed"] == 0
    only = shap.run_agreement([*argv, "--samplers", "shapcam"])  # a subset of the samplers: rows exist
    assert only["computed"] == 0 and "Antithetic" not in only["markdown"]


def test_shap_agreement_linear_tail_warns_and_lift_is_exact(tmp_path):
    data = make_data(tmp_path / "data", n=2)
    out = tmp_path / "out"
    # efficientnet_lite0 (random weights): the tail after bn2 is linear, so SHAP-CAM_2 is exact
    result = shap.run_agreement(["--data", str(data), "--out", str(out), "--model", "efficientnet_lite0",
                                 "--weights", "none", "--device", "cpu", "--no-progress", "--layer", "bn2",
                                 "--n-images", "1", "--methods", "liftcam", "--permutations", "2",
                                 "--compare-permutations"])
    assert "is linear" in result["markdown"]
    (row,) = read_csv(out / "shap_agreement.csv")
    assert row["method"] == "liftcam" and float(row["cosine"]) > 0.9999


def test_shap_table1(data, tmp_path):
    out = tmp_path / "out"
    result = shap.run_table1(["--data", str(data), "--out", str(out), *TINY, "--n-images", "3",
                              "--permutations", "1", "4", "--seeds", "2", "--methods", "liftcam"])
    rows = read_csv(out / "shap_table1.csv")
    assert len(rows) == 3 * 2 * 2 + 3
    assert {(r["method"], r["permutations"], r["seed"]) for r in rows} == {
        ("shapcam", "1", "0"), ("shapcam", "1", "1"), ("shapcam", "4", "0"), ("shapcam", "4", "1"),
        ("liftcam", "0", "0")}
    md = result["markdown"]
    assert "| SHAP-CAM (\\|Π\\|=1) | 2 × 3 |" in md and "| LIFT-CAM | 1 × 3 |" in md
    assert "Paired differences" in md
    # the differences: |Π| = 4 against 1, and the largest |Π| against LIFT-CAM, per image over the runs
    diffs = [cells(line) for line in table_lines(md, 1)[2:]]
    assert [d[0] for d in diffs] == ["SHAP-CAM (\\|Π\\|=4) − SHAP-CAM (\\|Π\\|=1)",
                                     "SHAP-CAM (\\|Π\\|=4) − LIFT-CAM"]

    def per_image(method, p, field):
        mine = [r for r in rows if r["method"] == method and r["permutations"] == p]
        return {i: statistics.fmean(float(r[field]) for r in mine if r["image"] == i)
                for i in {r["image"] for r in mine}}

    for line, (a, b) in zip(diffs, ((("shapcam", "4"), ("shapcam", "1")), (("shapcam", "4"), ("liftcam", "0")))):
        for column, field in ((2, "ic"), (3, "ad"), (4, "add")):
            x, y = per_image(*a, field), per_image(*b, field)
            expected = 100.0 * statistics.fmean(x[i] - y[i] for i in x)
            assert float(line[column].split(" [")[0]) == pytest.approx(expected, abs=0.006)  # printed to 2 decimals
    resumed = shap.run_table1(["--data", str(data), "--out", str(out), *TINY, "--n-images", "3",
                               "--permutations", "1", "4", "--seeds", "3", "--methods", "liftcam"])
    assert resumed["computed"] == 3 * 2  # only the new seed


def test_zoo_model_with_random_weights(tmp_path):
    data = make_data(tmp_path / "data", n=2)
    out = tmp_path / "out"
    assert main(["faithfulness", "--data", str(data), "--out", str(out), "--model", "efficientnet_lite0",
                 "--weights", "none", "--device", "cpu", "--no-progress", "--steps", "2", "--methods", "gradcampp",
                 "--layer", "blocks.6"]) == 0
    rows = read_csv(out / "faithfulness.csv")
    assert len(rows) == 2 and {r["method"] for r in rows} == {"gradcampp"}
    assert "layer `blocks" in (out / "faithfulness.md").read_text()
