"""The VQA page through streamlit.testing's AppTest: scenes, questions, methods, targets, bad input."""

from __future__ import annotations

import math

from test_pages import assert_clean, metric

import camlib
from appkit import vqa
from camlib.vqa import scenes

VQA_PAGE = "pages/3_VQA.py"


def open_page(app, **state):
    at = app(**state)
    at.switch_page(VQA_PAGE).run()
    assert_clean(at)
    return at


def shown(at, method) -> bool:
    """Whether the method's heatmap cell is on the page."""
    try:
        at.get_by_key(f"vqa_cam_{method}")
    except KeyError:
        return False
    return True


def test_default_scene_question_and_methods(app):
    at = open_page(app)
    seed = vqa.EXAMPLE_SEEDS[0]
    assert at.session_state["vqa_seed"] == seed
    _, questions = vqa.scene(seed)
    picker = at.selectbox(key="vqa_question")
    assert picker.options == [f"[{q.family}] {q.text}" for q in questions]
    first = questions[0]
    assert metric(at, "True answer") == first.answer == metric(at, "Model's answer")
    # the default methods (camlib's single-pass set): a heatmap each, a coefficient chart each, plus the top-5
    methods = at.pills(key="vqa_methods").value
    assert methods == ["gradcam", "gradcampp", "xgradcam", "liftcam"] == camlib.default_methods()
    assert all(shown(at, m) for m in methods)
    assert len(at.get("plotly_chart")) == 1 + len(methods)
    assert len(at.image) == 1 + 2 * len(methods)  # the scene, the maps, one activation map per method tab
    total, delta = float(metric(at, "Σ α")), float(metric(at, "F^c(A; q)"))
    assert math.isclose(total, delta, rel_tol=1e-4, abs_tol=1e-5)
    assert any("of the energy on the evidence" in c.value for c in at.caption)
    # the scene is shown upscaled (nearest): 3x its 128 pixels
    assert vqa.scene_view(vqa.scene(seed)[0].image).shape == (3 * 128, 3 * 128, 3)


def test_new_scene_example_and_seed(app):
    at = open_page(app, vqa_methods=["liftcam"])
    at.button(key="vqa_random").click().run()
    assert_clean(at)
    seed = at.session_state["vqa_seed"]
    assert seed >= 1_000_000_000 and seed != vqa.EXAMPLE_SEEDS[0]
    assert at.image[0].captions[0].startswith(f"seed {seed} ·")
    _, questions = vqa.scene(seed)
    assert at.selectbox(key="vqa_question").options == [f"[{q.family}] {q.text}" for q in questions]

    at.button(key="vqa_example_1").click().run()
    assert_clean(at)
    assert at.session_state["vqa_seed"] == vqa.EXAMPLE_SEEDS[1]
    at.number_input(key="vqa_seed").set_value(7).run()
    assert_clean(at)
    assert at.image[0].captions[0].startswith("seed 7 ·")
    assert shown(at, "liftcam")


def test_choose_question_methods_and_target(app, monkeypatch):
    import appkit.compute

    monkeypatch.setattr(appkit.compute, "AUTO_START", float("inf"))  # SHAP-CAM starts without a click
    at = open_page(app, vqa_methods=["gradcam"])
    seed = vqa.EXAMPLE_SEEDS[0]
    _, questions = vqa.scene(seed)
    relation = next(q for q in questions if q.family == "relation")
    at.selectbox(key="vqa_question").set_value(relation.text).run()
    assert_clean(at)
    assert metric(at, "True answer") == relation.answer

    at.pills(key="vqa_methods").set_value(["liftcam", "shapcam"]).run()
    at.slider(key="vqa_shapcam_permutations").set_value(20).run()
    assert_clean(at)
    assert shown(at, "liftcam") and shown(at, "shapcam") and not shown(at, "gradcam")

    other = scenes.ANSWERS.index("no")  # any answer, not the predicted one
    at.selectbox(key="vqa_target").set_value(other).run()
    assert_clean(at)
    assert any('Why "no"?' in m.value for m in [*at.markdown, *at.subheader])
    total, delta = float(metric(at, "Σ α")), float(metric(at, "F^c(A; q)"))
    assert math.isclose(total, delta, rel_tol=1e-4, abs_tol=1e-5)
    # a new question goes back to explaining the prediction
    at.selectbox(key="vqa_question").set_value(questions[0].text).run()
    assert at.selectbox(key="vqa_target").value in (None, -1)

    at.toggle(key="vqa_evidence").set_value(False).run()
    assert_clean(at)


def test_typed_questions(app):
    at = open_page(app, vqa_methods=["liftcam"])
    at.segmented_control(key="vqa_mode").set_value("typed").run()
    assert_clean(at)
    assert any("Type a question" in i.value for i in at.info)

    at.text_input(key="vqa_typed").input("what colour is the banana?").run()
    assert_clean(at)
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "“banana”" in errors[0] and "vocabulary" in errors[0] and "magenta" in errors[0]
    assert "[" not in errors[0]  # in words, not a Python list

    assert not shown(at, "liftcam")  # nothing explained
    assert len(at.image) == 1  # the scene is still shown

    # a question of the scene's own, typed loosely: its true answer is known
    _, questions = vqa.scene(vqa.EXAMPLE_SEEDS[0])
    at.text_input(key="vqa_typed").input("  " + questions[0].text.upper().rstrip("?") + " ").run()
    assert_clean(at)
    assert not at.error
    assert metric(at, "True answer") == questions[0].answer
    assert shown(at, "liftcam")

    # words of the vocabulary but no template (relations ask for colours): an answer, no truth
    text = "what shape is the object left of the cyan triangle?"
    assert text not in {q.text for q in questions}
    at.text_input(key="vqa_typed").input(text).run()
    assert_clean(at)
    assert metric(at, "True answer") == "—"
    assert shown(at, "liftcam")

    # common spellings work: "color" is the vocabulary's "colour"
    _, questions = vqa.scene(vqa.EXAMPLE_SEEDS[0])
    colour = next(q for q in questions if q.text.startswith("what colour"))
    at.text_input(key="vqa_typed").input(colour.text.replace("colour", "color")).run()
    assert_clean(at)
    assert not at.error and metric(at, "True answer") == colour.answer
