"""The app in a real browser: `streamlit run app.py` + headless Chromium driven by Selenium.

Opens a page's own URL first (a fresh server's first request), then the landing page with the default
sample, and waits until every method's heatmap has rendered
(an <img> with naturalWidth > 0 inside the method's cell), checks that no exception is shown, and saves
a screenshot to test-artifacts/app.png. Then a new session (warm cache) is timed, and a click on a
bar of a coefficient chart must pick that activation map (test-artifacts/app-picked.png).

The methods come from the URL (`?methods=...`, the multiselect is bound to the query string): the fast
ones by default, so the test fits in ~2 minutes on a busy 2-core CPU; set CAMLIB_BROWSER_METHODS=default
to wait for the six default methods (Score-CAM included) instead.

Skipped when Chromium, chromedriver or selenium are missing, unless CAMLIB_REQUIRE_BROWSER=1.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("CAMLIB_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CAMLIB_CHROMEDRIVER", "/usr/bin/chromedriver")
FAST_METHODS = {"gradcam": "Grad-CAM", "gradcampp": "Grad-CAM++", "xgradcam": "XGrad-CAM", "liftcam": "LIFT-CAM"}
DEFAULT_METHODS = {**FAST_METHODS, "scorecam": "Score-CAM", "ablationcam": "Ablation-CAM"}
RENDER_TIMEOUT = 120 if os.environ.get("CAMLIB_BROWSER_METHODS") != "default" else 900


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    for path, what in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromedriver")):
        if not (pathlib.Path(path).exists() or shutil.which(path)):
            return f"{what} not found at {path} (apt-get install chromium chromium-driver)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(port: int, server: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"streamlit did not answer on port {port} within {timeout} s")


def _rendered(driver, methods) -> dict[str, bool]:
    """Per method: does its cell hold a loaded image?"""
    script = """
        const out = {};
        for (const key of arguments[0]) {
            const imgs = document.querySelectorAll(`.st-key-cam_${key} img`);
            out[key] = Array.from(imgs).some(i => i.complete && i.naturalWidth > 0);
        }
        return out;"""
    return driver.execute_script(script, list(methods))


def test_landing_page_renders_heatmaps_in_chromium():
    reason = _missing()
    if reason:
        if os.environ.get("CAMLIB_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser test required (CAMLIB_REQUIRE_BROWSER=1) but {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.action_chains import ActionChains

    methods = DEFAULT_METHODS if os.environ.get("CAMLIB_BROWSER_METHODS") == "default" else FAST_METHODS
    ARTIFACTS.mkdir(exist_ok=True)
    port = _free_port()
    log = open(ARTIFACTS / "streamlit.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    driver = None
    try:
        _wait_healthy(port, server)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-dev-shm-usage", "--window-size=1500,3200"):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)

        # First request of a fresh server: a page's own URL. Streamlit's legacy pages/ mode would run the
        # page file alone; the app must still come up with its own navigation and no exception.
        driver.get(f"http://127.0.0.1:{port}/How_it_works")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not driver.find_elements("css selector", ".katex"):
            time.sleep(0.5)
        assert driver.find_elements("css selector", ".katex"), "the How it works page did not render"
        nav = driver.find_element("css selector", '[data-testid="stSidebarNav"]').text
        assert "Explain an image" in nav and "SHAP-CAM vs LIFT-CAM" in nav, nav
        assert not driver.find_elements("css selector", '[data-testid="stException"]')

        query = urllib.parse.urlencode([("methods", title) for title in methods.values()])
        start = time.monotonic()
        driver.get(f"http://127.0.0.1:{port}/?{query}")

        done, seen = {}, {}
        while time.monotonic() - start < RENDER_TIMEOUT:
            done = _rendered(driver, methods)
            seen.update({m: round(time.monotonic() - start, 1) for m, ok in done.items() if ok and m not in seen})
            if all(done.values()):
                break
            time.sleep(0.5)
        elapsed = time.monotonic() - start
        # The coefficient charts come after the maps: wait for them (and the script run to finish).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            charts = driver.find_elements("css selector", '[data-testid="stPlotlyChart"]')
            running = driver.find_elements("css selector", '[data-testid="stStatusWidget"]')
            if len(charts) >= 2 and not running:
                break
            time.sleep(1)
        time.sleep(2)  # let the charts draw before the screenshot
        driver.save_screenshot(str(ARTIFACTS / "app.png"))

        assert all(done.values()), f"heatmaps not rendered after {elapsed:.0f} s: {done}"
        images = driver.execute_script(
            "return Array.from(document.querySelectorAll('[data-testid=\"stImage\"] img'))"
            ".filter(i => i.naturalWidth > 0).length")
        assert images >= len(methods)
        exceptions = driver.find_elements("css selector", '[data-testid="stException"]')
        assert not exceptions, exceptions[0].text
        assert "Class activation maps" in driver.page_source

        # A new session (reload) on the warm server: the maps come from the cache.
        start = time.monotonic()
        driver.get(f"http://127.0.0.1:{port}/?{query}")
        while time.monotonic() - start < 60 and not all(_rendered(driver, methods).values()):
            time.sleep(0.25)
        warm = time.monotonic() - start
        assert all(_rendered(driver, methods).values()), "warm reload did not render the heatmaps"
        print(f"cold: each map appeared after (s): {seen}")
        print(f"{len(methods)} heatmaps rendered in {elapsed:.1f} s cold (model load included), "
              f"{warm:.1f} s warm (new session, cached)")

        # Click the largest bar of the first coefficient chart: the plotly selection picks that map.
        first = next(iter(methods))
        clicked = False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not clicked:
            try:  # the chart may re-render between finding and clicking a bar: try again
                bars = driver.find_elements("css selector", f".st-key-coef_{first} .point path")
                if bars:
                    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", bars[0])
                    time.sleep(0.5)
                    ActionChains(driver).move_to_element(bars[0]).pause(0.5).click().perform()
                    clicked = True
            except StaleElementReferenceException:
                pass
            time.sleep(0.5)
        assert clicked, "no coefficient chart to click"
        picked = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not picked:
            captions = driver.execute_script(
                "return Array.from(document.querySelectorAll('[data-testid=\"stCaptionContainer\"]'))"
                ".map(e => e.textContent)")
            picked = [c for c in captions if "Picked in the chart" in c]
            time.sleep(0.5)
        assert picked, "clicking a bar did not pick its activation map"
        driver.save_screenshot(str(ARTIFACTS / "app-picked.png"))
        assert not driver.find_elements("css selector", '[data-testid="stException"]')

    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
