"""appkit's helpers, without Streamlit's runtime: tables, figures, exports, guards."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import appkit


def test_numbers_never_show_nan():
    assert appkit.fmt(float("nan")) == "—" and appkit.fmt(float("inf")) == "—" and appkit.fmt(None) == "—"
    assert appkit.fmt_percent(float("nan")) == "—" and appkit.fmt_percent(0.1234) == "12.3%"
    assert appkit.fmt_fixed(1.0) == "1.0000" and appkit.fmt_fixed(float("-inf")) == "—"
    assert np.all(np.isfinite(appkit.finite([np.nan, np.inf, -np.inf, 1.0])))


def test_coefficient_table_shares_and_ranks():
    table = appkit.coefficient_table(np.array([1.0, -3.0, 4.0]))
    assert list(table["rank"]) == [3, 2, 1]
    assert list(table["share"]) == pytest.approx([1 / 8, 3 / 8, 4 / 8])  # |α_k| / Σ|α|
    # Σα ≈ 0 with large α of both signs (Grad-CAM at the last layer): shares stay in [0, 1], not ±100 %
    signed = appkit.coefficient_table(np.array([0.004, -0.003, -0.005]))
    assert (signed["share"] >= 0).all() and (signed["share"] <= 1).all()
    assert signed["share"].sum() == pytest.approx(1.0)
    assert signed["share"][0] == pytest.approx(0.004 / 0.012)
    zero = appkit.coefficient_table(np.zeros(3))
    assert (zero["share"] == 0).all()  # all α = 0: no division, no NaN
    assert appkit.top_maps(np.array([1.0, -3.0, 2.0]), 2) == [1, 2]


def test_coefficient_figure_hover_and_colours():
    alpha = np.array([0.5, -2.0, 1.0, 0.0])
    fig = appkit.coefficient_figure(alpha, top_k=3)
    bar = fig.data[0]
    assert list(bar.x) == ["A1", "A2", "A0"]
    assert bar.marker.color[0] == appkit.NEGATIVE and bar.marker.color[1] == appkit.POSITIVE
    assert [int(c[0]) for c in bar.customdata] == [1, 2, 0]
    assert "Σ|α|" in bar.hovertemplate and "map" in bar.hovertemplate
    outlined = appkit.coefficient_figure(alpha, top_k=3, selected=2).data[0].marker.line.color
    assert [c != "rgba(0,0,0,0)" for c in outlined] == [False, True, False]  # the map shown beside it


def test_bar_labels_never_crowd():
    """At most MAX_BAR_LABELS category labels (evenly spread), whatever the number of bars."""
    from appkit.figures import MAX_BAR_LABELS

    for k in (5, 20, 21, 57, 100):
        fig = appkit.coefficient_figure(np.arange(1, k + 1, dtype=float), top_k=k)
        ticks = list(fig.layout.xaxis.tickvals)
        assert len(ticks) <= MAX_BAR_LABELS and ticks[0] == fig.data[0].x[0]
        assert set(ticks) <= set(fig.data[0].x)
        if k <= MAX_BAR_LABELS:
            assert ticks == list(fig.data[0].x)


def test_selected_map_from_plotly_events():
    assert appkit.selected_map(None) is None
    assert appkit.selected_map({"selection": {"points": []}}) is None
    assert appkit.selected_map({"selection": {"points": [{"customdata": [7, 0.1, 3.0], "x": "A7"}]}}) == 7
    assert appkit.selected_map({"selection": {"points": [{"x": "A12"}]}}) == 12
    # the browser sends customdata as a dict keyed by position
    assert appkit.selected_map({"selection": {"points": [{"customdata": {"0": 5, "1": 0.2, "2": 1.0}}]}}) == 5
    assert appkit.selected_map({"selection": {"points": [{"customdata": {"a": 1}}, {"x": "A3"}]}}) == 3
    assert appkit.selected_map({"selection": {"points": [{"customdata": None}]}}) is None


def test_coefficients_csv_long_format():
    results = {m: {"coefficients": np.array([0.5, -1.0]), "target": 1, "layer": "bn2"} for m in ("gradcam", "liftcam")}
    table = pd.read_csv(io.BytesIO(appkit.coefficients_csv(results, "efficientnet_lite0", ["a", "b"])))
    assert list(table.columns) == ["model", "layer", "target", "target_name", "method", "map", "alpha", "share", "rank"]
    assert len(table) == 4 and set(table["method"]) == {"gradcam", "liftcam"}
    assert (table["target_name"] == "b").all()
    assert appkit.coefficients_csv({}, "m", []) == b""


def test_map_saliency_constant_map_is_zero_not_nan():
    maps = np.ones((3, 4, 4), dtype=np.float32)
    saliency, constant = appkit.map_saliency(np.array([-1.0, -1.0, -1.0]), maps, (8, 8))
    assert constant and saliency.shape == (8, 8) and not saliency.any()
    a, flat = appkit.activation_map(np.zeros((2, 3, 3)), 1)
    assert flat and not a.any()


def test_overlays_and_png():
    image = Image.new("RGB", (40, 30), (100, 100, 100))
    out = appkit.overlay_image(image, np.full((7, 7), np.nan), 0.5)
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8
    png = appkit.overlay_png(image, np.random.default_rng(0).random((7, 7)), 0.5)
    assert Image.open(io.BytesIO(png)).size == (40, 30)
    e, e_inv = appkit.explanation_images(image, np.ones((224, 224)))
    assert (e == 100).all() and (e_inv == 0).all()
    boxed = appkit.draw_boxes(image, [(5, 5, 20, 20)])
    assert boxed.shape == (30, 40, 3) and (boxed != 100).any()


def test_current_image_boxes_scale_and_working_size():
    big = Image.new("RGB", (1000, 500))
    current = appkit.make_current(big, "big", "test", boxes=[(0, 0, 499, 249)])
    assert current.image.size == (512, 256) and current.size == (1000, 500)
    assert current.boxes_at(224, 224) == [(0, 0, 111, 111)]
    assert appkit.make_current(Image.new("RGB", (10, 10)), "s", "t").boxes_at(224, 224) == []


def test_pointing_game():
    saliency = np.zeros((10, 10))
    saliency[:5, :5] = 1
    assert appkit.pointing_game(saliency, [(0, 0, 4, 4)]) == pytest.approx(1.0)
    assert appkit.pointing_game(saliency, []) is None
    assert appkit.pointing_game(np.zeros((10, 10)), [(0, 0, 4, 4)]) == 0.0


def test_grid_and_compute_order():
    assert [appkit.grid_columns(n) for n in (1, 3, 4, 5, 6, 7, 8)] == [1, 3, 4, 5, 5, 5, 5]
    assert appkit.ordered_for_compute(["scorecam", "gradcam", "ablationcam", "liftcam"]) == \
        ["gradcam", "liftcam", "scorecam", "ablationcam"]
    assert appkit.snapshot_budget(_estimators_result(orderings=50)) == 10
    assert appkit.snapshot_budget(_estimators_result(orderings=4)) == 4


def test_target_options_put_top5_first():
    probabilities = np.array([0.1, 0.5, 0.05, 0.2, 0.1, 0.05])
    names = ["f", "e", "d", "c", "b", "a"]
    options = appkit.target_options(probabilities, names)
    assert options[0] == appkit.PREDICTED and options[1:3] == [1, 3] and sorted(options[1:]) == list(range(6))
    assert appkit.target_label(appkit.PREDICTED, probabilities, names).startswith("Predicted class: e")
    assert appkit.target_label(3, probabilities, names) == "c (20.0%)"


def _estimators_result(orderings: int = 5, seeds: int = 2, linear: bool = False) -> dict:
    """A comparison as appkit.estimator_comparison returns it, with made-up numbers (K = 320)."""
    p = np.arange(1, orderings + 1)
    cos = np.stack([1 - 0.3 / (p + s) for s in range(seeds)])
    curve = {"cost": "orderings", "evaluations": 321.0 * p, "cosine": cos, "seconds": np.stack([0.01 * p] * seeds),
             "estimates": np.ones((seeds, orderings, 320))}
    return {"layer": "blocks.6", "target": 3, "n_maps": 320, "linear_tail": linear, "reference": np.ones(320),
            "reference_permutations": 1000, "reference_evaluations": 321000, "reference_seconds": 3.0,
            "curves": {"shapcam": {**curve, "title": "SHAP-CAM"},
                       "stratshapcam": {**curve, "title": "Stratified SHAP-CAM", "cosine": 1 - (1 - cos) / 5}},
            "points": {"liftcam": {"title": "LIFT-CAM", "evaluations": 1, "cosine": 0.99, "seconds": 0.04},
                       "gradcam": {"title": "Grad-CAM", "evaluations": 1, "cosine": 0.01, "seconds": 0.04},
                       "ablationcam": {"title": "Ablation-CAM", "evaluations": 320, "cosine": 0.98, "seconds": 0.3}},
            "skipped": {"cam": "CAM needs a linear tail"}}


def test_decade_ticks_read_in_powers_of_ten():
    assert appkit.decade_ticks(5) == ([1.0, 10.0], ["1", "10"])
    assert appkit.decade_ticks(32100)[1] == ["1", "10", "100", "1k", "10k"]
    assert appkit.decade_ticks(1000)[1] == ["1", "10", "100", "1k"]
    assert appkit.decade_ticks(1)[1] == ["1", "10"] and appkit.decade_ticks(2e7)[1][-2:] == ["1M", "10M"]


def test_estimators_figure():
    result = _estimators_result()
    fig = appkit.estimators_figure(result)
    names = [t.name for t in fig.data]
    # per curve a band (two seeds) and the mean; one marker per point; names only in the legend
    assert names.count("SHAP-CAM") == 1 and names.count("Stratified SHAP-CAM") == 1
    assert sum(1 for t in fig.data if t.fill == "toself") == 2
    assert {"LIFT-CAM", "Grad-CAM", "Ablation-CAM"} <= set(names) and not fig.layout.annotations
    mean = next(t for t in fig.data if t.name == "SHAP-CAM")
    cosine = result["curves"]["shapcam"]["cosine"].mean(0)
    np.testing.assert_allclose(mean.y, 1 - cosine)  # the axis of nines: 1 - cos, reversed, log
    np.testing.assert_allclose(mean.customdata[:, 4], cosine)  # the hover's cosine
    yaxis = fig.layout.yaxis
    assert yaxis.type == "log" and yaxis.autorange == "reversed"
    assert dict(zip(yaxis.tickvals, yaxis.ticktext))[0.01] == "0.99" and dict(zip(yaxis.tickvals, yaxis.ticktext))[1.0] == "0"
    assert "s<extra>" in mean.hovertemplate and "orderings" in mean.hovertemplate
    lift = next(t for t in fig.data if t.name == "LIFT-CAM")
    assert list(lift.x) == [1] and "%{customdata[0]:.3f} s" in lift.hovertemplate
    assert lift.y[0] == pytest.approx(0.01) and list(lift.customdata[0]) == [0.04, 0.99]
    axis = fig.layout.xaxis
    assert axis.type == "log" and list(axis.ticktext) == ["1", "10", "100", "1k"]
    assert list(axis.tickvals) == [1, 10, 100, 1000]
    assert list(axis.minor.tickvals) == [2, 5, 20, 50, 200, 500, 2000]  # unlabelled: no "2, 3, 4, 5" between decades
    one_seed = _estimators_result(seeds=1)
    assert not any(t.fill == "toself" for t in appkit.estimators_figure(one_seed).data)


def test_estimators_reading_in_plain_words():
    text = appkit.reading(_estimators_result(), "tabby cat")
    assert "tabby cat" in text and "320 activation maps" in text and "blocks.6" in text
    # plain SHAP-CAM's last point: the mean of 1 - 0.3/5 and 1 - 0.3/6, 0.945, at 5 · 321 = 1,605 evaluations;
    # the stratified curve (errors / 5) stays above it from its first ordering (0.955): 5.0× fewer
    assert "reaches 0.945 after 1,605 evaluations" in text
    assert "Stratified SHAP-CAM gets as close with 321, 5.0× fewer" in text
    assert "LIFT-CAM needs a single pass and scores 0.990, better than plain SHAP-CAM with all its 1,605" in text
    assert "Grad-CAM also cost one pass" in text
    assert "nan" not in text.lower()
    linear = appkit.reading(_estimators_result(linear=True), "tabby cat")
    assert "every ordering estimator is exact" in linear


def test_figures_build():
    curves = {"deltas": np.linspace(0, 1, 3), "ins": np.array([0, .5, 1]), "del": np.array([1, .5, 0]),
              "ins_auc": 0.5, "del_auc": 0.5}
    assert len(appkit.insertion_deletion_figure(curves).data) == 2
    table = appkit.top_classes(np.array([0.2, 0.8]), ["x", "y"], k=2)
    assert list(table["class"]) == ["y", "x"] and math.isclose(table["probability"][0], 0.8)


def test_model_status():
    assert appkit.model_status(appkit.DEFAULT_MODEL) is None
    assert appkit.model_status("nope")
    assert "vqa_shapes" not in appkit.IMAGE_MODELS and appkit.DEFAULT_MODEL in appkit.IMAGE_MODELS


def test_varying_maps_and_the_first_map_shown():
    maps = np.zeros((4, 3, 3), dtype=np.float32)
    maps[1, 0, 0] = 1.0
    maps[3] = 2.0  # constant: nothing to see
    assert list(appkit.varying_maps(maps)) == [False, True, False, False]
    assert appkit.first_varying([3, 0, 1, 2], maps) == 1
    assert appkit.first_varying([0, 3], maps) == 0  # none varies: the first choice


def test_saliency_agreement():
    a = np.array([[1.0, 0.0], [0.0, 0.0]])
    b = np.array([[1.0, 1.0], [0.0, 0.0]])
    assert appkit.saliency_agreement([a, a], stride=1) == pytest.approx(1.0)
    assert appkit.saliency_agreement([a, b, a], stride=1) == pytest.approx(1 / np.sqrt(2))
    # on maps upsampled from a coarse grid (as every CAM is), every 4th pixel gives the same cosine
    big_a, big_b = (np.kron(m, np.ones((8, 8))) for m in (a, b))
    assert appkit.saliency_agreement([big_a, big_b]) == pytest.approx(1 / np.sqrt(2))
    assert appkit.saliency_agreement([a]) is None
    assert appkit.saliency_agreement([a, np.zeros((2, 2))]) is None


def test_box_area_share():
    assert appkit.box_area_share([], 10, 10) is None
    assert appkit.box_area_share([(0, 0, 4, 9)], 10, 10) == pytest.approx(0.5)
    assert appkit.box_area_share([(0, 0, 4, 9), (0, 0, 9, 4)], 10, 10) == pytest.approx(0.75)  # the union


def test_url_methods_and_targets():
    from appkit import urlstate

    assert urlstate.parse_methods(["gradcam", "liftcam"]) == (["gradcam", "liftcam"], [])
    assert urlstate.parse_methods(["Grad-CAM", "LIFT-CAM", "gradcam"]) == (["gradcam", "liftcam"], [])
    # '+' becomes a space in a query string: "Grad-CAM++" arrives as "Grad-CAM  "
    assert urlstate.parse_methods(["Grad-CAM  "]) == (["gradcampp"], [])
    assert urlstate.parse_methods(["gradcam", "nosuch"]) == (["gradcam"], ["nosuch"])
    message = urlstate.methods_message(["nosuch"])
    assert "'nosuch'" in message and "LIFT-CAM (liftcam)" in message
    names = ["tench", "crane", "goldfish", "crane"]
    assert urlstate.parse_target("2", names) == (2, None)
    assert urlstate.parse_target("Goldfish", names) == (2, None)
    assert urlstate.parse_target("9", names)[0] is None and "0 to 3" in urlstate.parse_target("9", names)[1]
    assert urlstate.parse_target("crane", names)[0] is None and "1, 3" in urlstate.parse_target("crane", names)[1]
    assert "no class" in urlstate.parse_target("zebra", names)[1]


def test_not_found_page_and_unknown_paths():
    from appkit import notfound

    page = notfound.page_html("/Faithfulness/extra/<b>", "", [("Explain an image", ""), ("Faithfulness", "Faithfulness")])
    assert "Page not found" in page and "&lt;b&gt;" in page and 'href="/Faithfulness"' in page
    known = ["", "Faithfulness", "VQA"]
    assert notfound.unknown_page("http://h:1/Faithfulness", known) is None
    assert notfound.unknown_page("http://h:1/", known) is None
    assert notfound.unknown_page("http://h:1/nope?x=1", known) == "nope"
    assert notfound.unknown_page(None, known) is None


def test_costs_from_the_method_metadata():
    """Expected times and cost words come from each method's own evaluations() (new methods too)."""
    import camlib
    from appkit import costs

    model = appkit.get_model(appkit.DEFAULT_MODEL)
    layer = model.default_layer
    k = model.layer_info(layer).shape[0]
    for key, method in camlib.methods.METHODS.items():
        options = method.resolve_options({})
        words = costs.cost_words(model, layer, key, options)
        if method.cost is camlib.methods.Cost.ONE_PASS:
            assert words == "one pass" and costs.expected_seconds("m", model, layer, key, options) is None
        else:
            assert f"{method.evaluations(k, **options):,}" in words
    costs.learn("test-model", model, layer, "scorecam", {}, 2.56)
    assert costs.expected_seconds("test-model", model, layer, "scorecam", {}) == pytest.approx(2.56)
    assert costs.estimate_known("test-model", layer, "scorecam")


def test_inline_images_are_data_urls_that_decode_back():
    import base64

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    url = appkit.inline(rgb, "PNG")
    assert url.startswith("data:image/png;base64,")
    back = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    assert np.array_equal(back, rgb)  # PNG is lossless
    gray = np.linspace(0, 1, 20 * 30, dtype=np.float32).reshape(20, 30)
    gray[0, 0] = np.nan  # never NaN on screen: shown as 0
    back = np.asarray(Image.open(io.BytesIO(base64.b64decode(appkit.inline(gray, "PNG").split(",", 1)[1]))))
    assert back.shape == (20, 30) and back[0, 0] == 0 and back[-1, -1] == 255
    assert back[10, 15] == int(gray[10, 15] * 255 + 0.5)
    jpeg = appkit.inline(Image.fromarray(rgb).convert("RGBA"))
    assert jpeg.startswith("data:image/jpeg;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(jpeg.split(",", 1)[1])))
    assert decoded.format == "JPEG" and decoded.size == (30, 20)


def test_chart_waits_for_a_browser_whose_timer_runs_on_time():
    """appkit.pages.browser_free: the chart loads after two timer runs at most 1.6 × delay apart (the
    first being the page's own run), and after `patience` runs whatever the gaps."""
    from appkit.pages import browser_free

    assert not browser_free([], 0.5) and not browser_free([10.0], 0.5)  # the page's own run alone
    assert browser_free([10.0, 10.5], 0.5)  # an idle browser: its first tick, on time
    assert browser_free([10.0, 10.75], 0.5) and not browser_free([10.0, 10.875], 0.5)  # 1.6 × 0.5 = 0.8
    assert not browser_free([10.0, 12.3], 0.5)  # drawing the page held its timer back
    assert browser_free([10.0, 12.3, 12.8], 0.5)  # then on time: free
    assert not browser_free([10.0, 12.3, 14.0, 16.1], 0.5)
    late = [10.0 + 2 * i for i in range(8)]
    assert not browser_free(late[:7], 0.5) and browser_free(late, 0.5)  # patience: 8 runs
    assert browser_free([0.0, 1.0], 1.0, on_time=1.0) and not browser_free([0.0, 1.01], 1.0, on_time=1.0)


def test_benchmark_helpers(tmp_path):
    """appkit.bench's arithmetic: the server's part of a phase from the service trace, the
    browsers' CPU per process kind between two samples, this process's kind and CPU time."""
    import json
    import os

    from appkit import bench

    trace = tmp_path / "trace.jsonl"
    events = [{"event": "start", "t": 99.0}, {"event": "end", "t": 99.5},  # before the phase
              {"event": "start", "t": 100.2}, {"event": "end", "t": 101.25}, {"event": "end", "t": 102.75},
              {"event": "start", "t": 103.0}]
    trace.write_text("".join(json.dumps(e) + "\n" for e in events) + "\n")
    assert bench.computed_by(str(trace), 100.0) == pytest.approx(2.75)
    assert bench.computed_by(str(trace), 103.0) is None  # no job ended after it
    assert bench.computed_by(str(tmp_path / "none.jsonl"), 0.0) is None
    before = {1: ("renderer", 2.0), 2: ("gpu-process", 1.0), 3: ("renderer", 0.5)}
    after = {1: ("renderer", 3.5), 2: ("gpu-process", 1.25), 4: ("renderer", 0.75)}  # 3 ended, 4 is new
    assert bench.browsers_cpu_since(before, after) == {"renderer": 2.25, "gpu-process": 0.25}
    assert bench.process_kind(os.getpid()) == "browser"  # no --type= in python's command line
    assert 0 < bench.cpu_seconds(os.getpid()) < 1e6
    up, steal = bench.cpu_times()
    assert up > 0 and steal >= 0
    loads = [{"wall": 1.0, "cpu": {"renderer": 1.0}, "ScriptDuration": 0.5, "LayoutDuration": 0.1,
              "RecalcStyleDuration": 0.1, "TaskDuration": 1.0, "Nodes": 270},
             {"wall": 3.0, "cpu": {"renderer": 2.0, "gpu-process": 0.5}, "ScriptDuration": 1.5, "LayoutDuration": 0.3,
              "RecalcStyleDuration": 0.2, "TaskDuration": 2.0, "Nodes": 280}]
    m = bench.medians(loads)  # a kind missing from one load counts 0 there
    assert m["wall"] == 2.0 and m["Nodes"] == 275 and m["ScriptDuration"] == 1.0
    assert m["cpu"] == {"gpu-process": 0.25, "renderer": 1.5}
    compile(bench.TRIVIAL_PAGE, "app.py", "exec")  # the trivial page of --first-load is valid Python
