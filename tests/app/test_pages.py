"""Every page through streamlit.testing's AppTest: choose widgets, run, check what is on screen.

Pages run with the fast methods (from the URL, like a shared link) and small SHAP-CAM budgets.
"""

from __future__ import annotations

import math
import re

import pytest
from upload_corpus import upload_corpus

import appkit
import camlib
from camlib.methods import METHODS, Cost

CORPUS = upload_corpus()
SHAP_PAGE, FAITH_PAGE, HOW_PAGE, EXPLAIN_PAGE = ("pages/2_SHAP_vs_LIFT.py", "pages/4_Faithfulness.py",
                                                 "pages/5_How_it_works.py", "pages/1_Explain.py")


def texts(at) -> list[str]:
    """Every string shown: markdown, captions, metric labels and values, alerts."""
    out = [m.value for m in at.markdown] + [c.value for c in at.caption]
    out += [f"{m.label} {m.value}" for m in at.metric]
    out += [e.value for e in (*at.error, *at.warning, *at.info)]
    return out


def assert_clean(at) -> None:
    assert not at.exception, [e.value for e in at.exception]
    for text in texts(at):
        assert not re.search(r"\b(nan|inf)\b", str(text), re.IGNORECASE), text
        assert "Traceback" not in str(text)


def metric(at, label_start: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(label_start))


def test_landing_page_default_sample(app):
    at = app()
    at.run()
    assert_clean(at)
    assert at.session_state["selection"]["image"].sample == appkit.DEFAULT_SAMPLE
    # gallery thumbnails + current image + one heatmap and one activation map per method
    assert len(at.image) >= 5 + 1 + 2 * 3
    for key in ("cam_gradcam", "cam_xgradcam", "cam_liftcam"):
        assert at.get_by_key(key) is not None
    assert len(at.get("plotly_chart")) >= 1 + 3  # top-5 + one coefficient chart per method
    assert len(at.download_button) == 3 + 1  # a PNG per method + the CSV
    total, delta = float(metric(at, "Σ α")), float(metric(at, "F^c(A)"))
    assert math.isclose(total, delta, rel_tol=1e-3, abs_tol=1e-3)
    # the method picker's default is camlib's default set (the URL overrides it here)
    picker = at.multiselect(key="methods")
    assert picker.value == ["gradcam", "xgradcam", "liftcam"]
    assert [picker.options[i] for i in picker.proto.default] == [appkit.method_title(m) for m in appkit.DEFAULT_METHODS]
    # the sidebar says the default (last) layer has a linear tail
    assert any("linear" in c.value and "exact SHAP" in c.value for c in at.sidebar.caption)


def test_slow_method_progress_and_cache_hit(app):
    """Ablation-CAM reports progress from inside st.cache_data; the rerun (a cache hit) must not try to
    replay that progress bar."""
    at = app(methods=["Ablation-CAM", "LIFT-CAM"])
    at.run()
    assert_clean(at)
    at.slider(key="alpha").set_value(0.8).run()
    assert_clean(at)
    assert at.get_by_key("cam_ablationcam") is not None


def test_switch_sample_target_and_layer(app):
    at = app(methods=["LIFT-CAM"])
    at.run()
    at.button(key="sample_coffee").click().run()
    assert_clean(at)
    assert at.session_state["selection"]["image"].sample == "coffee"
    assert any("scikit-image data: coffee" in c.value for c in at.caption)

    at.selectbox(key="target").set_value(1).run()  # ImageNet class 1: goldfish
    assert_clean(at)
    assert at.session_state["selection"]["target"] == 1
    assert any("goldfish" in m.value for m in at.markdown)

    at.selectbox(key="layer").set_value("blocks.6").run()
    assert_clean(at)
    assert at.session_state["selection"]["layer"] == "blocks.6"
    assert any("nonlinear" in c.value for c in at.sidebar.caption)
    # a new image resets the target to the prediction
    at.button(key="sample_chelsea").click().run()
    assert at.session_state["selection"]["target"] == at.session_state["selection"]["probabilities"].argmax()


def test_cam_on_nonlinear_tail_is_a_message(app):
    at = app(methods=["CAM", "Grad-CAM"], layer="blocks.6")
    at.run()
    assert_clean(at)
    assert any("nonlinear" in w.value for w in at.warning)
    assert at.get_by_key("cam_gradcam") is not None


def test_activation_map_picker(app):
    at = app()
    at.run()
    picker = at.selectbox(key="map_liftcam")
    second = picker.options[1]
    picker.set_value(int(second.lstrip("A"))).run()
    assert_clean(at)
    assert any(m.label == f"α of {second}" for m in at.metric)
    at.slider(key="top_k").set_value(5).run()
    assert_clean(at)
    assert len(at.selectbox(key="map_liftcam").options) == 5


def test_upload_widget_good_and_bad_files(app):
    at = app()
    at.run()
    data, _ = CORPUS["cmyk.jpg"]
    at.file_uploader(key="upload").set_value(("cmyk.jpg", data, "image/jpeg")).run()
    assert_clean(at)
    assert at.session_state["selection"]["image"].title == "cmyk.jpg"
    data, _ = CORPUS["truncated.jpg"]
    at.file_uploader(key="upload").set_value(("truncated.jpg", data, "image/jpeg")).run()
    assert not at.exception
    assert any("truncated" in e.value.lower() for e in at.error)
    assert at.session_state["selection"]["image"].title == "cmyk.jpg"  # the previous image stays


@pytest.mark.parametrize("name", ["one_pixel.png", "sixteen_bit.png", "animated.gif", "palette_alpha.png"])
def test_awkward_images_render(app, name):
    current, result = appkit.upload_to_current(CORPUS[name][0], name)
    at = app(methods=["Grad-CAM", "LIFT-CAM"], image=current)
    at.run()
    assert_clean(at)
    assert at.get_by_key("cam_liftcam") is not None
    shown = " ".join(i.value for i in at.info)
    for note in result.notes:
        assert note in shown


def test_unavailable_model_is_listed_and_falls_back(app, monkeypatch):
    reason = "weights file vgg16-397923af.pth is not cached and this machine is offline. Put it in /somewhere."
    monkeypatch.setattr(appkit, "model_status", lambda name: None if name == appkit.DEFAULT_MODEL else reason)
    at = app()
    at.run()
    at.selectbox(key="model_name").set_value("vgg16").run()
    assert_clean(at)
    assert any("vgg16-397923af.pth" in e.value for e in at.sidebar.error)
    assert at.session_state["selection"]["model_name"] == appkit.DEFAULT_MODEL
    assert at.get_by_key("cam_liftcam") is not None


def _figure(at) -> dict:
    import json

    (chart,) = at.get("plotly_chart")
    return json.loads(chart.proto.spec)


def _values(data) -> list[float]:
    """A trace's x or y from the figure's JSON: a list, or plotly's typed array {dtype, bdata}."""
    import base64

    import numpy as np

    if isinstance(data, dict):
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"]).tolist()
    return list(data)


def test_estimators_page_nonlinear_layer(app):
    at = app(layer="blocks.6", est_orderings=4, est_seeds=2, est_reference=100)
    at.run()
    at.switch_page(SHAP_PAGE).run()
    assert_clean(at)
    figure = _figure(at)
    names = [t.get("name") for t in figure["data"]]
    samplers = [appkit.method_title(k) for k in camlib.estimators.sampling_methods()]
    assert all(names.count(title) == 1 for title in samplers)  # one mean line each (and a band: 2 seeds)
    assert sum(1 for t in figure["data"] if t.get("fill") == "toself") == len(samplers)
    assert {"LIFT-CAM", "Grad-CAM", "Ablation-CAM"} <= set(names) and "CAM" not in names
    ablation = next(t for t in figure["data"] if t.get("name") == "Ablation-CAM")
    assert _values(ablation["x"]) == [320]  # N_l evaluations
    axis = figure["layout"]["xaxis"]
    assert axis["type"] == "log" and axis["ticktext"] == ["1", "10", "100", "1k"]  # 4 · 321 = 1,284 at most
    text = " ".join(texts(at))
    assert "activation maps of layer **blocks.6**" in text and "LIFT-CAM needs a single pass" in text
    assert float(metric(at, "LIFT-CAM: cosine to the reference")) > 0.9
    assert len(at.image) == 1 + 3 + 1  # the reference, the three ordering estimators at 4 orderings, LIFT-CAM
    assert not at.info  # a nonlinear tail: no "exact" note


def test_estimators_page_linear_tail_is_exact(app):
    at = app(est_orderings=2, est_seeds=2, est_reference=100)
    at.run()
    at.switch_page(SHAP_PAGE).run()
    assert_clean(at)
    assert any("every ordering estimator is exact" in i.value for i in at.info)
    orderings = {m.title for m in METHODS.values() if m.cost is Cost.PER_ORDERING}
    lines = [t for t in _figure(at)["data"] if t.get("fill") != "toself" and t.get("mode", "").startswith("lines")
             and t.get("name") in orderings]
    # every ordering is exact: 1 - cos (the y of the axis of nines) is float32 rounding only
    assert len(lines) == len(orderings) and all(max(_values(t["y"])) < 1e-5 for t in lines)
    assert float(metric(at, "LIFT-CAM: cosine to the reference")) > 1 - 1e-5
    at.button[0].click().run()  # "Use layer blocks.6"
    assert at.session_state["selection"]["layer"] == "blocks.6"


def test_faithfulness_page_with_sample_box(app):
    at = app(faith_steps=11)
    at.run()
    at.switch_page(FAITH_PAGE).run()
    assert_clean(at)
    assert len(at.image) == 4  # x, the map, e, e_inv
    assert len(at.get("plotly_chart")) == 1
    labels = [m.label for m in at.metric]
    for label in ("IC", "AD", "ADD", "Insertion AUC", "Deletion AUC", "Energy in box"):
        assert any(l.startswith(label) for l in labels), label
    assert metric(at, "Energy in box").endswith("%")
    assert 0 <= float(metric(at, "Insertion AUC")) <= 1


def test_faithfulness_page_typed_box_for_upload(app):
    current, _ = appkit.upload_to_current(CORPUS["ok.jpg"][0], "ok.jpg")
    at = app(image=current, faith_steps=11)
    at.run()
    at.switch_page(FAITH_PAGE).run()
    assert_clean(at)
    assert metric(at, "Energy in box") == "no box"
    tag = current.key[:12]
    at.checkbox(key=f"box_on_{tag}").check().run()
    at.number_input(key=f"box_x1_{tag}").set_value(40).run()
    assert_clean(at)
    assert metric(at, "Energy in box").endswith("%")
    at.number_input(key=f"box_x0_{tag}").set_value(60).run()  # x min > x max: a warning, no box
    assert any("x min" in w.value for w in at.sidebar.warning)


def test_faithfulness_compare_methods(app):
    at = app(methods=["Grad-CAM", "LIFT-CAM"], faith_steps=11)
    at.run()
    at.switch_page(FAITH_PAGE).run()
    at.toggle(key="faith_compare").set_value(True).run()
    assert_clean(at)
    table = at.dataframe[0].value
    assert list(table.index) == ["Grad-CAM", "LIFT-CAM"]
    assert table.notna().all().all()


def test_how_it_works(app):
    at = app()
    at.run()
    at.switch_page(HOW_PAGE).run()
    assert_clean(at)
    formulas = " ".join(l.value for l in at.latex)
    for eq in ("(1)", "(5)", "(6)", "(7)", "(8)", "(9)"):
        assert eq in formulas


def test_choices_carry_across_pages(app):
    at = app(methods=["LIFT-CAM"], layer="blocks.5", faith_steps=11)
    at.run()
    at.slider(key="alpha").set_value(0.3).run()
    at.switch_page(FAITH_PAGE).run()
    assert at.session_state["selection"]["layer"] == "blocks.5"
    assert any("blocks.5" in c.value for c in at.caption)
    at.switch_page(EXPLAIN_PAGE).run()
    assert_clean(at)
    assert at.slider(key="alpha").value == 0.3
    assert at.selectbox(key="layer").value == "blocks.5"
