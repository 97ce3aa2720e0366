"""End to end: ``python -m camlib.bench vqa`` on a few held-out questions (committed VQA weights)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench_tiny import read_csv
from camlib.bench import vqa
from camlib.bench.__main__ import main
from camlib.vqa import scenes, train

METHODS = ["gradcam", "gradcampp", "xgradcam", "scorecam", "ablationcam", "liftcam", "shapcam"]


def args(out, *extra):
    return ["--out", str(out), "--n", "3", "--permutations", "5", "--device", "cpu", "--no-progress", *extra]


@pytest.fixture(scope="module")
def model():
    import camlib

    return camlib.load_model("vqa_shapes", device="cpu")


def test_questions_are_the_documented_held_out_set():
    data = train.heldout_set(3)
    items = list(vqa.heldout_questions(8, train.TEST_QUESTION_SEED))
    assert len(items) == 8
    assert [q.answer_id for _, _, q in items] == data.answers[:8].tolist()
    assert [scenes.FAMILIES.index(q.family) for _, _, q in items] == data.families[:8].tolist()
    assert [qid.split("-")[0] for qid, _, _ in items] == [str(s) for s in data.scene_seeds[data.scene_index[:8]]]
    assert [q.text for _, _, q in vqa.heldout_questions(3, train.TEST_QUESTION_SEED)] == [q.text for _, _, q in items[:3]]


def test_cli_rows_markdown_and_resume(tmp_path, capsys, model):
    out = tmp_path / "out"
    assert main(["vqa", *args(out)]) == 0
    rows = read_csv(out / "vqa.csv")
    assert list(rows[0]) == list(vqa.FIELDS)
    items = list(vqa.heldout_questions(3, train.TEST_QUESTION_SEED))
    labels = [m if m != "shapcam" else "shapcam_5" for m in METHODS]
    assert sorted((r["question_id"], r["method"]) for r in rows) == sorted((qid, m) for qid, _, _ in items
                                                                          for m in labels)
    by_question = {qid: (scene, q) for qid, scene, q in items}
    for r in rows:
        scene, q = by_question[r["question_id"]]
        assert r["question"] == q.text and r["answer"] == q.answer and r["family"] == q.family
        assert r["target"] == r["predicted"]  # the predicted answer by default
        # Y independently: the network's own forward pass with this question
        with torch.inference_mode():
            logits = model.module(scenes.to_tensor(scene.image), scenes.tokenize(q.text)[None])
        probs = torch.softmax(logits[0], 0)
        assert model.class_names[int(probs.argmax())] == r["predicted"]
        assert float(r["Y"]) == pytest.approx(float(probs.max()), rel=1e-5)
        assert float(r["ic"]) == float(float(r["Y"]) < float(r["O"]))
        y = float(r["Y"])
        assert float(r["ad"]) == pytest.approx(max(0.0, y - float(r["O"])) / y, rel=1e-5, abs=1e-6)
        assert float(r["add"]) == pytest.approx((y - float(r["D"])) / y, rel=1e-5, abs=1e-6)
        assert float(r["mask_fraction"]) == pytest.approx(float(np.mean(q.evidence_mask)))
        assert math.isnan(float(r["pointing"])) == (not q.has_evidence)
        if q.has_evidence:
            assert 0.0 <= float(r["pointing"]) <= 1.0
        cosine = float(r["cosine"])
        assert math.isnan(cosine) if r["method"] == "shapcam_5" else -1.0 <= cosine <= 1.0
        assert r["constant"] in ("0", "1")
        if r["constant"] == "1":  # a black explanation image: e_inv = x, no energy anywhere
            assert float(r["D"]) == pytest.approx(y, rel=1e-5)
            assert math.isnan(float(r["pointing"])) or float(r["pointing"]) == 0.0
    # the cosine of LIFT-CAM to SHAP-CAM_5, recomputed
    import camlib
    from camlib import metrics

    qid, scene, q = items[0]
    image = scenes.to_tensor(scene.image)
    ref = camlib.explain(model, image, "shapcam", question=q.text, permutations=5, seed=0)
    lift = camlib.explain(model, image, "liftcam", question=q.text)
    row = next(r for r in rows if r["question_id"] == qid and r["method"] == "liftcam")
    assert float(row["cosine"]) == pytest.approx(float(metrics.cosine_similarity(lift.coefficients, ref.coefficients)[0]),
                                                 abs=1e-6)
    assert int(row["constant"]) == int(lift.constant)
    # the methods' maps of a question are scored together (score_maps): the same values as
    # confidence_scores per method, to float32 rounding of the network's passes in other batches
    conf = metrics.confidence_scores(model.logits_fn(model.question_tokens(q.text)), image, lift.saliency[None],
                                     lift.target[None], batch_size=1)
    for field in ("Y", "O", "D"):
        assert float(row[field]) == pytest.approx(float(getattr(conf, field)[0]), abs=2e-5)

    md = (out / "vqa.md").read_text()
    assert md == capsys.readouterr().out.rstrip("\n") + "\n"
    tables = [b for b in md.split("\n\n") if b.startswith("|")]
    any_constant = any(r["constant"] == "1" for r in rows)
    # means, paired differences to LIFT-CAM (both again over the non-constant questions if any map is
    # constant), evidence energy per family
    assert len(tables) == (5 if any_constant else 3)
    header, _, *lines = tables[0].splitlines()
    assert header == ("| Method | N | const. | IC (%) | AD (%) | ADD (%) | Evidence energy (%) | cos to SHAP-CAM "
                      "| s / question |")
    assert [cells(line)[0] for line in lines] == [
        "Grad-CAM", "Grad-CAM++", "XGrad-CAM", "Score-CAM", "Ablation-CAM", "LIFT-CAM", "SHAP-CAM (\\|Π\\|=5)"]
    for line in lines:
        label = next(lbl for lbl in labels if cells(line)[0] == common_title(lbl))
        assert cells(line)[2] == f"{sum(r['constant'] == '1' for r in rows if r['method'] == label)}/3"
    assert cells(lines[-1])[7] == "—"  # SHAP-CAM is the cosine's reference
    lift_line = next(line for line in lines if line.startswith("| LIFT-CAM"))
    ad = statistics_mean(rows, "liftcam", "ad")
    assert cells(lift_line)[4].strip("*").startswith(f"{100 * ad:.2f} [")
    assert tables[-1].splitlines()[0].startswith("| Method | const. |")  # evidence energy per family
    assert "nan" not in md.lower()

    # resume: nothing is recomputed, the CSV is unchanged
    before = (out / "vqa.csv").read_bytes()
    again = vqa.run(args(out))
    assert again["computed"] == 0 and again["skipped"] == 3 * len(METHODS)
    assert (out / "vqa.csv").read_bytes() == before
    # a larger N computes only the new question's rows
    more = vqa.run(args(out, "--n", "4", "--methods", "gradcam", "liftcam"))
    assert more["computed"] == 2 and more["skipped"] == 6
    assert len(read_csv(out / "vqa.csv")) == 3 * len(METHODS) + 2


def common_title(label: str) -> str:
    from camlib.bench.common import method_title

    return method_title(label)


def cells(line: str) -> list[str]:
    """The cells of a Markdown table line (escaped pipes, as in SHAP-CAM (\\|Π\\|=5), stay inside)."""
    return [c.strip() for c in line.strip().strip("|").split(" | ")]


def statistics_mean(rows, method, field) -> float:
    values = [float(r[field]) for r in rows if r["method"] == method]
    return sum(values) / len(values)


def test_other_configuration_and_bad_options_are_refused(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["vqa", *args(out, "--methods", "liftcam")]) == 0
    capsys.readouterr()
    assert main(["vqa", *args(out, "--methods", "liftcam", "--shap-seed", "1")]) == 2
    assert "another configuration" in capsys.readouterr().err
    assert main(["vqa", *args(tmp_path / "b", "--methods", "cam")]) == 2
    assert "linear tail" in capsys.readouterr().err
    assert main(["vqa", *args(tmp_path / "c", "--methods", "nosuchcam")]) == 2
    assert main(["vqa", "--out", str(tmp_path / "d"), "--n", "0"]) == 2
