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
    for image in at.image:  # inline, never a Streamlit media file (appkit.inline says why)
        assert image.value and all(url.startswith("data:image/") for url in image.value), image.value[:1]
    for text in texts(at):
        assert not re.search(r"\b(nan|inf)\b", str(text), re.IGNORECASE), text
        assert "Traceback" not in str(text)


def param(at, name: str) -> list[str]:
    """The values of a query parameter as the app last wrote them (AppTest keeps str or list)."""
    value = at.query_params.get(name)
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def metric(at, label_start: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(label_start))


def test_landing_page_default_sample(app):
    at = app()
    at.run()
    assert_clean(at)
    assert at.session_state["selection"]["image"].sample == appkit.DEFAULT_SAMPLE
    # the image, one heatmap per method, one activation map
    assert len(at.image) >= 1 + 3 + 1
    for key in ("cam_gradcam", "cam_xgradcam", "cam_liftcam"):
        assert at.get_by_key(key) is not None
    # the coefficient chart comes on the session's next run (the browser loads plotly.js after the maps)
    assert len(at.get("plotly_chart")) == 0 and any("on its way" in c.value for c in at.caption)
    at.run()
    assert_clean(at)
    assert len(at.get("plotly_chart")) == 1  # the coefficients of the method picked above the chart
    total, delta = float(metric(at, "Σ α")), float(metric(at, "F^c(A)"))
    assert math.isclose(total, delta, rel_tol=1e-3, abs_tol=1e-3)
    # the method picker shows the URL's methods; without a URL it starts from camlib's default set
    assert at.pills(key="methods").value == ["gradcam", "xgradcam", "liftcam"]
    # the sidebar says the default (last) layer has a linear tail, the page says what that means
    assert any("linear" in c.value and "exact SHAP" in c.value for c in at.sidebar.caption)
    why = next(m.value for m in at.markdown if "Why do the maps look alike" in m.value)
    agreement = float(why.split("**")[-2])
    assert 0.9 < agreement <= 1.0  # measured on the maps shown: nearly identical at the last layer
    # the share is of Σ|α|: between 0 and 100 % whatever the signs
    share = metric(at, "share of Σ|α|")
    assert share.endswith("%") and 0 <= float(share.rstrip("%")) <= 100


def test_default_methods_without_url(app):
    at = app(methods=[])
    at.query_params.pop("methods", None)
    at.run()
    assert_clean(at)
    assert at.pills(key="methods").value == list(appkit.DEFAULT_METHODS)
    for method in appkit.DEFAULT_METHODS:
        assert at.get_by_key(f"cam_{method}") is not None
    # the other methods are one click away, each with its cost from its own metadata
    import camlib
    for method in camlib.list_methods():
        if method not in appkit.DEFAULT_METHODS:
            assert at.button(key=f"add_{method}") is not None


def test_first_activation_map_shown_varies_on_the_image(app):
    at = app(methods=["Grad-CAM"])
    at.run()
    picker = at.selectbox(key="map_gradcam")
    k = picker.value
    maps = appkit.activations(appkit.DEFAULT_MODEL, at.session_state["selection"]["image"].key,
                              at.session_state["selection"]["image"].image, "bn2")
    assert appkit.varying_maps(maps)[k]
    first = int(picker.options[0].lstrip("A"))
    if not appkit.varying_maps(maps)[first]:  # the case: the top map is all zero on the image
        assert k != first
    captions = [c for image in at.image for c in image.captions]
    assert f"A{k} over the image (min–max scaled)" in captions


def test_slow_method_waits_for_a_click_then_runs(app, monkeypatch):
    """SHAP-CAM (many tail evaluations) shows its cost and a button; a click starts it; a rerun shows
    the cached result without recomputing. (AUTO_START = 0: no method starts by itself, whatever this
    machine's speed.)"""
    import appkit.compute

    monkeypatch.setattr(appkit.compute, "AUTO_START", 0.0)
    at = app(methods=["SHAP-CAM", "LIFT-CAM"], explain_shapcam_permutations=3, explain_shapcam_seed=7)
    at.run()
    assert_clean(at)
    start = at.button(key="start_bn2_shapcam")
    assert any("tail evaluations" in c.value and "≈" in c.value for c in at.caption)
    start.click().run()
    assert_clean(at)
    assert at.get_by_key("cam_shapcam") is not None
    at.slider(key="alpha").set_value(0.8).run()
    assert_clean(at)
    assert any(c.value.endswith("cached") for c in at.caption)


def test_compare_with_the_inner_layer(app):
    at = app(methods=["Grad-CAM", "LIFT-CAM"])
    at.run()
    at.button(key="compare_on").click().run()
    assert_clean(at)
    assert at.session_state["compare_layer"] == "blocks.6"
    for method in ("gradcam", "liftcam"):
        assert at.get_by_key(f"cam_{method}") is not None and at.get_by_key(f"cmp_{method}") is not None
    why = next(m.value for m in at.markdown if "Why do the maps look alike" in m.value)
    assert "At *blocks.6*" in why
    assert param(at, "compare") == ["blocks.6"]
    at.button(key="compare_off").click().run()
    assert_clean(at)
    with pytest.raises(KeyError):
        at.get_by_key("cmp_gradcam")


def test_switch_sample_target_and_layer(app):
    at = app(methods=["LIFT-CAM"])
    at.run()
    at.pills(key="sample_pick").set_value("coffee").run()
    assert_clean(at)
    assert at.session_state["selection"]["image"].sample == "coffee"
    assert any("scikit-image data: coffee" in c.value for c in at.caption)
    assert param(at, "sample") == ["coffee"]

    at.selectbox(key="target").set_value(1).run()  # ImageNet class 1: goldfish
    assert_clean(at)
    assert at.session_state["selection"]["target"] == 1
    assert any("goldfish" in m.value for m in at.markdown)
    assert param(at, "target") == ["1"]

    at.selectbox(key="layer").set_value("blocks.6").run()
    assert_clean(at)
    assert at.session_state["selection"]["layer"] == "blocks.6"
    assert any("nonlinear" in c.value for c in at.sidebar.caption)
    assert any("Why do the maps differ" in m.value for m in at.markdown)
    # a new image resets the target to the prediction
    at.pills(key="sample_pick").set_value("chelsea").run()
    assert at.session_state["selection"]["target"] == at.session_state["selection"]["probabilities"].argmax()
    assert "target" not in at.query_params


def test_a_full_compute_queue_is_a_message(app, monkeypatch):
    """When the service's queue is full (here: it holds no job at all), a view that needs a new
    computation says that the server is busy, with no traceback."""
    from appkit.service import service

    monkeypatch.setattr(service(), "max_queued", 0)
    at = app(layer="blocks.3")  # a layer no other test computes: nothing cached
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("The server is busy" in w.value for w in at.warning)


def test_cam_on_nonlinear_tail_is_a_message(app):
    at = app(methods=["CAM", "Grad-CAM"], layer="blocks.6")
    at.run()
    assert_clean(at)
    assert any("nonlinear" in w.value for w in at.warning)
    assert at.get_by_key("cam_gradcam") is not None


def test_activation_map_picker(app):
    at = app()
    at.run()
    picker = at.selectbox(key="map_liftcam" if at.segmented_control(key="coef_method").value == "liftcam"
                          else f"map_{at.segmented_control(key='coef_method').value}")
    at.segmented_control(key="coef_method").set_value("liftcam").run()
    picker = at.selectbox(key="map_liftcam")
    second = picker.options[1]
    picker.set_value(int(second.lstrip("A"))).run()
    assert_clean(at)
    assert any(m.label == f"α of {second}" for m in at.metric)
    at.slider(key="top_k").set_value(5).run()
    assert_clean(at)
    assert len(at.selectbox(key="map_liftcam").options) == 5


def test_chart_click_moves_the_picker(app):
    """A bar clicked in the chart becomes the picker's value (not a greyed, stale one): picker, outline
    and the map beside the chart name the same A_k; the picker still works afterwards."""
    at = app(methods=["Grad-CAM"])
    at.run()
    options = at.selectbox(key="map_gradcam").options
    clicked = int(options[3].lstrip("A"))
    at.session_state["coef_gradcam"] = {"selection": {"points": [{"x": f"A{clicked}", "customdata": [clicked]}]}}
    at.run()
    assert_clean(at)
    picker = at.selectbox(key="map_gradcam")
    assert picker.value == clicked and not picker.disabled
    assert any(m.label == f"α of A{clicked}" for m in at.metric)
    other = int(options[1].lstrip("A"))
    picker.set_value(other).run()  # the chart's selection is unchanged: the picker wins
    assert at.selectbox(key="map_gradcam").value == other
    assert any(m.label == f"α of A{other}" for m in at.metric)


def test_url_state_round_trip(app):
    """A teacher's link: sample, layer, target and methods (keys and titles, comma-separated)."""
    at = app(methods=["gradcam,liftcam"])
    at.query_params.update({"sample": "coffee", "layer": "blocks.6", "target": "968"})
    at.run()
    assert_clean(at)
    sel = at.session_state["selection"]
    assert (sel["image"].sample, sel["layer"], sel["target"]) == ("coffee", "blocks.6", 968)
    assert at.pills(key="methods").value == ["gradcam", "liftcam"]
    assert at.get_by_key("cam_gradcam") is not None and at.get_by_key("cam_liftcam") is not None
    assert param(at, "methods") == ["gradcam,liftcam"]
    assert param(at, "layer") == ["blocks.6"] and param(at, "target") == ["968"]


@pytest.mark.parametrize("methods, keys", [(["gradcam"], ["gradcam"]), (["Grad-CAM", "LIFT-CAM"], ["gradcam", "liftcam"]),
                                           (["liftcam,Grad-CAM++"], ["gradcampp", "liftcam"])])
def test_url_methods_by_key_or_title(app, methods, keys):
    at = app(methods=methods)
    at.run()
    assert_clean(at)
    assert at.pills(key="methods").value == keys
    assert not at.warning


def test_url_unknown_values_are_named(app):
    at = app(methods=["gradcam,nosuchcam"])
    at.query_params.update({"sample": "zebra", "layer": "blocks.99", "target": "tabby"})
    at.run()
    assert_clean(at)
    warnings = " ".join(w.value for w in at.warning)
    assert "'nosuchcam'" in warnings and "Grad-CAM (gradcam)" in warnings
    assert "'zebra'" in warnings and "'blocks.99'" in warnings
    assert at.pills(key="methods").value == ["gradcam"]
    assert at.session_state["selection"]["target"] == 281  # 'tabby' by name
    at.button(key="url_dismiss").click().run()  # the messages go; what applied stays
    assert_clean(at)
    assert not at.warning and "url_dismiss" not in [b.key for b in at.button]
    assert at.pills(key="methods").value == ["gradcam"]


def test_upload_widget_good_and_bad_files(app):
    at = app()
    at.run()
    data, _ = CORPUS["cmyk.jpg"]
    at.file_uploader(key="upload").set_value(("cmyk.jpg", data, "image/jpeg")).run()
    assert_clean(at)
    assert at.session_state["selection"]["image"].title == "cmyk.jpg"
    assert "sample" not in at.query_params
    data, _ = CORPUS["truncated.jpg"]
    at.file_uploader(key="upload").set_value(("truncated.jpg", data, "image/jpeg")).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("truncated" in e.lower() for e in errors)
    # the old results stay, labelled: the error says whose maps are still shown
    assert any("still those of the previous image, “cmyk.jpg”" in e for e in errors)
    assert at.session_state["selection"]["image"].title == "cmyk.jpg"
    at.pills(key="sample_pick").set_value("coffee").run()  # choosing another image clears the label
    assert not any("previous image" in e.value for e in at.error)


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
    for label, formula in (("More sure with only the map?", "IC, Eq. 11"), ("Drop when only the map is kept", "AD, Eq. 12"),
                           ("Drop when the map is removed", "ADD, Eq. 13"), ("Insertion area", "insertion curve"),
                           ("Deletion area", "deletion curve"), ("Map's energy in the box", "Eq. 14")):
        assert label in labels, label
        assert formula in next(m.help for m in at.metric if m.label == label)
    assert metric(at, "Map's energy in the box").endswith("%")
    assert 0 <= float(metric(at, "Insertion area")) <= 1


def test_faithfulness_page_typed_box_for_upload(app):
    current, _ = appkit.upload_to_current(CORPUS["ok.jpg"][0], "ok.jpg")
    at = app(image=current, faith_steps=11)
    at.run()
    at.switch_page(FAITH_PAGE).run()
    assert_clean(at)
    assert metric(at, "Map's energy in the box") == "no box"
    tag = current.key[:12]
    at.checkbox(key=f"box_on_{tag}").check().run()
    at.number_input(key=f"box_x1_{tag}").set_value(40).run()
    assert_clean(at)
    assert metric(at, "Map's energy in the box").endswith("%")
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


def test_faithfulness_captions_and_a_fair_box(app):
    """Classroom words on screen, the formulas in the help; the cat's box covers most of the image, so
    the page says so and offers a sample whose box is a fair test."""
    at = app(faith_steps=11)
    at.run()
    at.switch_page(FAITH_PAGE).run()
    assert_clean(at)
    shown = " ".join(m.value for m in at.markdown)
    assert "Only the map kept" in shown and "The map removed" in shown and "∘" not in shown
    helps = " ".join(m.help or "" for m in at.markdown)
    assert "s(u(L)) ∘ x" in helps and "(1 − s(u(L))) ∘ x" in helps
    assert any("Average Drop" in (m.help or "") for m in at.metric)
    warning = " ".join(w.value for w in at.warning)
    assert "of the image" in warning and "no test" in warning
    button = at.button(key="faith_fair_sample")
    button.click().run()
    assert_clean(at)
    assert at.session_state["selection"]["image"].sample != "chelsea"
    assert not any("no test" in w.value for w in at.warning)
    assert any("a map spread evenly" in c.value for c in at.caption)


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
