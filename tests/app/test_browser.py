"""The app in a real browser: `streamlit run app.py` and headless Chromium at 1366×768 (appkit.browser).

One server for the module. Its first request is a page's own URL (Streamlit's legacy pages/ mode must
still give the app's navigation), then the landing page. Checked on screen:

* the first view of a 1366×768 laptop shows the image and the default heatmaps, the sample pills and
  the sidebar's method pills whole (nothing truncated or clipped); a screenshot goes to
  test-artifacts/landing-1366x768.png;
* a sample picked by its pill: every default map drawn anew for it, the URL naming it;
* the teaching box and its one-click inner layer (the same methods side by side);
* a bar clicked in the coefficient chart moves the picker, and the map beside it, to that bar;
* the share of Σ|α| lies between 0 and 100 %; the gallery note names the model's actual answer;
* URL round trips: sample, layer, target and methods (keys or titles, comma-separated) in, the same
  view and the same parameters out; an unknown method named in a message;
* a failed upload keeps the previous maps, labelled as such;
* Faithfulness in classroom words (the formulas in the help icons), the fair-box hint;
* VQA: "color" accepted, an unknown word explained in words;
* the SHAP page's chart: a log axis with readable ticks, labels in the legend;
* "page not found" for /Faithfulness/extra/path (HTTP 404) and /nope (a message on the landing page);
* four browser sessions at once, each on its own sample, each shown its own maps.

Timings are printed for information (`-s`), never asserted: `python -m appkit.bench` measures them.
Skipped when Chromium, chromedriver or selenium are missing, unless CAMLIB_REQUIRE_BROWSER=1.
"""

from __future__ import annotations

import os
import pathlib
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from appkit import browser

ROOT = pathlib.Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
DEFAULT = ["gradcam", "gradcampp", "xgradcam", "liftcam"]
KEYS = [f"cam_{m}" for m in DEFAULT]
TIMEOUT = 240


def _skip_without_browser():
    reason = browser.missing()
    if reason:
        if os.environ.get("CAMLIB_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser test required (CAMLIB_REQUIRE_BROWSER=1) but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def server():
    _skip_without_browser()
    ARTIFACTS.mkdir(exist_ok=True)
    with browser.Server(log=ARTIFACTS / "streamlit.log") as s:
        yield s


@pytest.fixture(scope="module")
def driver(server):
    d = browser.chrome(*browser.LAPTOP)
    yield d
    d.quit()


def open_page(driver, url: str, keys=(), timeout: float = TIMEOUT) -> dict:
    start = time.monotonic()
    driver.get(url)
    seen = browser.wait_rendered(driver, keys, timeout, start) if keys else {}
    assert browser.idle(driver, timeout), "the script run did not finish"
    assert not browser.exceptions(driver), browser.exceptions(driver)
    return seen


def alerts(driver) -> list[str]:
    return browser.texts(driver, '[data-testid="stAlertContainer"]')


def query(driver) -> dict:
    return urllib.parse.parse_qs(urllib.parse.urlparse(driver.current_url).query)


def click(driver, selector: str) -> None:
    element = driver.find_element("css selector", selector)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def test_first_request_for_a_page_url(server, driver):
    """A fresh server's first request is a page's own URL: the app's own navigation, no exception."""
    driver.get(server.url("/How_it_works"))
    assert browser.wait_for(lambda: driver.find_elements("css selector", ".katex"), TIMEOUT), \
        "the How it works page did not render"
    assert not browser.exceptions(driver)
    nav = driver.find_element("css selector", '[data-testid="stSidebarNav"]').text
    assert "Explain an image" in nav and "SHAP-CAM vs LIFT-CAM" in nav, nav


def test_landing_first_view_on_a_laptop(server, driver):
    seen = open_page(driver, server.url("/"), KEYS)
    assert len(seen) == len(KEYS), f"heatmaps not rendered: {seen}"
    time.sleep(1)
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(ARTIFACTS / "landing-1366x768.png"))
    assert driver.execute_script("return [window.innerWidth, window.innerHeight]") == list(browser.LAPTOP)
    # the image and the default heatmaps lie wholly inside the first view
    visible = [e for e in browser.in_view(driver, '[data-testid="stMainBlockContainer"] [data-testid="stImage"] img')
               if e["visible"]]
    assert len(visible) >= 1 + 2, visible
    for key in KEYS:
        box = browser.in_view(driver, f".st-key-{key} img")
        assert box and box[0]["visible"], (key, box)
    # the first activation map is not all zero on the image
    captions = browser.texts(driver, '[data-testid="stImageCaption"]')
    assert any("over the image (min–max scaled)" in c for c in captions), captions
    assert not any("all zero on this image" in c for c in captions)
    # sample pills and the sidebar's method pills: whole, never truncated or clipped
    clipped = driver.execute_script("""
        const side = document.querySelector('[data-testid="stSidebar"]').getBoundingClientRect();
        return Array.from(document.querySelectorAll('[data-testid="stSidebar"] [data-testid="stButtonGroup"] button'))
          .filter(b => { const r = b.getBoundingClientRect();
                         const t = b.querySelector('p') || b;
                         return r.left < side.left || r.right > side.right || t.scrollWidth > t.clientWidth + 1; })
          .map(b => b.textContent);""")
    assert not clipped, clipped
    pills = browser.texts(driver, '[data-testid="stSidebar"] [data-testid="stButtonGroup"] button')
    for title in ("Chelsea the cat", "Falcon 9 rocket on the launch pad", "Grad-CAM++", "LIFT-CAM", "SHAP-CAM"):
        assert any(title in p for p in pills), (title, pills)
    # what the page teaches, with the agreement measured on these maps
    text = driver.find_element("css selector", '[data-testid="stMainBlockContainer"]').text
    assert "Why do the maps look alike?" in text and "exactly the SHAP value" in text
    # the note names the model's answer; the share is of Σ|α|, within 0-100 %
    assert "answers 'Egyptian cat'" in text
    share = next(m for m in browser.texts(driver, '[data-testid="stMetric"]') if "share of Σ|α|" in m)
    assert 0 <= float(share.split("Σ|α|")[1].strip().rstrip("%")) <= 100, share
    # the URL now holds the view
    params = query(driver)
    assert params["sample"] == ["chelsea"] and params["layer"] == ["bn2"]
    assert params["methods"] == [",".join(DEFAULT)]
    # a new session on the warm server
    start = time.monotonic()
    warm = open_page(driver, server.url("/"), KEYS)
    print(f"\nlanding page: default maps after {max(seen.values()):.1f} s (server cold), "
          f"a new session {max(warm.values()):.1f} s (warm; page load until idle {time.monotonic() - start:.1f} s)")


def test_sample_pill_redraws_the_maps(server, driver):
    """A sample picked by its pill (a rerun of the open page, as a class explores): every default
    map is drawn anew for that sample, and the URL names it."""
    open_page(driver, server.url("/"), KEYS)
    before = {k: driver.execute_script(f"return document.querySelector('.st-key-{k} img').src") for k in KEYS}
    assert browser.forget_images(driver) >= len(KEYS) + 1  # the maps and the image itself
    assert not any(browser.rendered(driver, KEYS).values())  # the old maps no longer count
    start = time.monotonic()
    browser.click_pill(driver, "Espresso cup")
    seen = browser.wait_rendered(driver, KEYS, TIMEOUT, start)
    assert len(seen) == len(KEYS), seen
    assert browser.idle(driver, TIMEOUT) and not browser.exceptions(driver)
    after = {k: driver.execute_script(f"return document.querySelector('.st-key-{k} img').src") for k in KEYS}
    assert all(after[k] != before[k] for k in KEYS)
    assert "Espresso cup" in driver.find_element("css selector", '[data-testid="stMainBlockContainer"]').text
    assert query(driver)["sample"] == ["coffee"]
    with pytest.raises(LookupError, match="no sidebar pill"):
        browser.click_pill(driver, "No such sample")
    print("\nanother sample by its pill, default maps after (s):", round(max(seen.values()), 2))


def test_compare_with_the_inner_layer(server, driver):
    open_page(driver, server.url("/", methods="gradcam,liftcam"), ["cam_gradcam", "cam_liftcam"])
    click(driver, ".st-key-compare_on button")
    seen = browser.wait_rendered(driver, ["cmp_gradcam", "cmp_liftcam"], TIMEOUT)
    assert len(seen) == 2, seen
    assert browser.idle(driver, TIMEOUT)
    text = driver.find_element("css selector", '[data-testid="stMainBlockContainer"]').text
    assert "Layer bn2" in text and "Layer blocks.6" in text and "At blocks.6" in text
    assert query(driver)["compare"] == ["blocks.6"]
    driver.save_screenshot(str(ARTIFACTS / "compare-1366x768.png"))


def test_bar_click_moves_the_picker(server, driver):
    """Click the fifth bar: the picker, the map beside the chart and its α all name that bar's map."""
    from selenium.webdriver.common.action_chains import ActionChains

    open_page(driver, server.url("/", methods="gradcam"), ["cam_gradcam"])
    assert browser.wait_for(lambda: len(driver.find_elements("css selector", ".st-key-coef_gradcam .point path")) >= 5)
    labels = browser.texts(driver, ".st-key-coef_gradcam .xtick text")
    target = driver.find_elements("css selector", ".st-key-coef_gradcam .point path")[4]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", target)
    time.sleep(0.5)
    ActionChains(driver).move_to_element(target).pause(0.3).click().perform()
    wanted = labels[4]

    def synced():
        picker = driver.execute_script("return document.querySelector('.st-key-map_gradcam input').value")
        shown = [c.split(" ")[0] for c in browser.texts(driver, '[data-testid="stImageCaption"]') if " over the image" in c]
        alphas = [m for m in browser.texts(driver, '[data-testid="stMetric"]') if m.startswith("α of")]
        return picker == wanted and shown == [wanted] and len(alphas) == 1 and alphas[0].startswith(f"α of {wanted}")

    assert browser.wait_for(synced, TIMEOUT), "the picker, the map and its α do not follow the click"
    driver.save_screenshot(str(ARTIFACTS / "picked.png"))


@pytest.mark.parametrize("methods, expected", [("gradcam,liftcam", ["gradcam", "liftcam"]), ("gradcam", ["gradcam"]),
                                               ("Grad-CAM,LIFT-CAM", ["gradcam", "liftcam"])])
def test_url_round_trip(server, driver, methods, expected):
    keys = [f"cam_{m}" for m in expected]
    seen = open_page(driver, server.url("/", sample="coffee", layer="blocks.6", target="968", methods=methods), keys)
    assert len(seen) == len(keys), seen
    for other in DEFAULT:
        if other not in expected:
            assert not browser.rendered(driver, [f"cam_{other}"])[f"cam_{other}"]
    text = driver.find_element("css selector", '[data-testid="stMainBlockContainer"]').text
    assert "Espresso cup" in text and "Explaining class cup (index 968)" in text and "at layer blocks.6" in text
    params = query(driver)
    assert params["sample"] == ["coffee"] and params["layer"] == ["blocks.6"] and params["target"] == ["968"]
    assert params["methods"] == [",".join(expected)]
    # the written URL opens the same view
    again = driver.current_url
    seen = open_page(driver, again, keys)
    assert len(seen) == len(keys) and query(driver) == params


def test_url_unknown_method_is_named(server, driver):
    open_page(driver, server.url("/", methods="gradcam,nosuchcam"), ["cam_gradcam"])
    messages = " ".join(alerts(driver))
    assert "'nosuchcam'" in messages and "LIFT-CAM (liftcam)" in messages


def test_failed_upload_labels_the_old_results(server, driver):
    from upload_corpus import upload_corpus

    open_page(driver, server.url("/", methods="liftcam"), ["cam_liftcam"])
    path = ARTIFACTS / "truncated.jpg"
    path.write_bytes(upload_corpus()["truncated.jpg"][0])
    driver.find_element("css selector", '[data-testid="stSidebar"] input[type="file"]').send_keys(str(path))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any("previous image" in a for a in alerts(driver)):
        time.sleep(0.3)
    messages = " ".join(alerts(driver))
    assert "truncated" in messages.lower() and "still those of the previous image, “Chelsea the cat”" in messages
    assert browser.rendered(driver, ["cam_liftcam"])["cam_liftcam"]


def test_faithfulness_in_classroom_words(server, driver):
    open_page(driver, server.url("/Faithfulness", sample="chelsea"))
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and "Only the map kept" not in driver.page_source:
        time.sleep(0.5)
    assert browser.idle(driver, TIMEOUT)
    text = driver.find_element("css selector", '[data-testid="stMainBlockContainer"]').text
    assert "Only the map kept" in text and "The map removed" in text
    assert "∘" not in text and "s(u(L))" not in text  # the formulas are in the help icons only
    assert "no test" in text  # the cat's box covers most of the image
    assert driver.find_elements("css selector", ".st-key-faith_fair_sample button")
    driver.save_screenshot(str(ARTIFACTS / "faithfulness.png"))


def test_vqa_spellings_and_messages(server, driver):
    open_page(driver, server.url("/VQA"), ["vqa_cam_gradcam"])
    mode = [b for b in driver.find_elements("css selector", ".st-key-vqa_mode button") if "Type" in b.text]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", mode[0])
    mode[0].click()
    assert browser.wait_for(lambda: driver.find_elements("css selector", ".st-key-vqa_typed input"), 60)
    box = driver.find_element("css selector", ".st-key-vqa_typed input")
    box.send_keys("what colour is the banana?\n")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any("banana" in a for a in alerts(driver)):
        time.sleep(0.3)
    message = next(a for a in alerts(driver) if "banana" in a)
    assert "Colours: red, green, blue, yellow, magenta, cyan." in message and "[" not in message
    box = driver.find_element("css selector", ".st-key-vqa_typed input")
    box.send_keys("\ue009a")  # select all
    box.send_keys("what color is the circle\n")
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and (any("vocabulary" in a for a in alerts(driver))
                                           or not browser.rendered(driver, ["vqa_cam_gradcam"])["vqa_cam_gradcam"]):
        time.sleep(0.3)
    assert not any("vocabulary" in a for a in alerts(driver))
    assert "what colour is the circle?" in driver.page_source


def test_shap_chart_ticks_and_labels(server, driver):
    open_page(driver, server.url("/SHAP_vs_LIFT", layer="blocks.6"))
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and not driver.find_elements("css selector", ".xtick text"):
        time.sleep(0.5)
    assert browser.idle(driver, TIMEOUT)
    ticks = [t for t in browser.texts(driver, ".xtick text") if t]
    assert ticks[:3] == ["1", "10", "100"], ticks  # tail evaluations, read in decades
    assert not driver.find_elements("css selector", ".annotation-text")  # names are in the legend
    legend = " ".join(browser.texts(driver, ".legendtext"))
    assert all(name in legend for name in ("SHAP-CAM", "Stratified SHAP-CAM", "LIFT-CAM", "Grad-CAM", "XGrad-CAM"))


def test_page_not_found(server, driver):
    open_page(driver, server.url("/", methods="liftcam"), ["cam_liftcam"])  # app.py has run once
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(server.url("/Faithfulness/extra/path"), timeout=30)
    assert info.value.code == 404
    driver.get(server.url("/Faithfulness/extra/path"))
    assert "Page not found" in driver.find_element("tag name", "body").text
    driver.find_element("link text", "Faithfulness").click()  # its links lead back into the app
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "Keep only what the map highlights" not in driver.page_source:
        time.sleep(0.3)
    assert "Keep only what the map highlights" in driver.page_source
    open_page(driver, server.url("/nope"))
    assert any("Page not found" in a and "“nope”" in a for a in alerts(driver))


def test_four_sessions_at_once(server):
    """Four browsers open the landing page at the same moment, each on another sample: each gets its
    own sample's maps (the server computes them in its shared service)."""
    samples = {"coffee": "Espresso cup", "rocket": "Falcon 9 rocket on the launch pad",
               "camera": "Cameraman with a tripod", "astronaut": "Astronaut Eileen Collins"}
    drivers = [browser.chrome(*browser.LAPTOP) for _ in samples]
    try:
        results, barrier = {}, threading.Barrier(len(drivers))

        def run(d, key):
            barrier.wait()
            start = time.monotonic()
            d.get(server.url("/", sample=key, methods="gradcam,liftcam"))
            results[key] = browser.wait_rendered(d, ["cam_gradcam", "cam_liftcam"], TIMEOUT, start)

        threads = [threading.Thread(target=run, args=(d, k)) for d, k in zip(drivers, samples)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for d, (key, title) in zip(drivers, samples.items()):
            assert len(results[key]) == 2, (key, results[key])
            assert browser.idle(d, TIMEOUT) and not browser.exceptions(d)
            text = d.find_element("css selector", '[data-testid="stMainBlockContainer"]').text
            assert title in text, (key, text[:200])
            assert query(d)["sample"] == [key]
        sources = [d.execute_script("return document.querySelector('.st-key-cam_liftcam img').src") for d in drivers]
        assert len(set(sources)) == len(drivers)  # four different images, one per session
        print("\n4 sessions at once, default maps after (s):",
              {k: round(max(v.values()), 1) for k, v in results.items()})
    finally:
        for d in drivers:
            d.quit()
