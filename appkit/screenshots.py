"""Screenshots of the app for the docs: ``python -m appkit.screenshots`` (about a minute or two).

Starts the app, opens each view in headless Chromium at 1366×768 (a laptop screen; the landing page
is designed so that its first view holds the image and the heatmaps) and writes
``assets/screenshots/*.png``, quantised to 256 colours and optimised (100-300 kB each).
"""

from __future__ import annotations

import argparse
import io
import pathlib
import time

from appkit import browser

OUT = browser.ROOT / "assets" / "screenshots"
DEFAULT = ["cam_gradcam", "cam_gradcampp", "cam_xgradcam", "cam_liftcam"]


def save(driver, path: pathlib.Path) -> int:
    """The viewport as a 256-colour optimised PNG; returns its size in bytes."""
    from PIL import Image

    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    small = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)
    return path.stat().st_size


def settle(driver, keys=(), timeout: float = 300) -> None:
    if keys:
        browser.wait_rendered(driver, keys, timeout)
    browser.idle(driver, timeout)
    time.sleep(1.5)  # charts finish drawing


def scroll_to(driver, selector: str) -> None:
    driver.execute_script("document.querySelector(arguments[0]).scrollIntoView({block: 'start'})", selector)
    time.sleep(0.8)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=OUT)
    args = parser.parse_args(argv)
    reason = browser.missing()
    if reason:
        print(f"cannot run: {reason}")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    shots = []
    with browser.Server() as server:
        driver = browser.chrome(*browser.LAPTOP)
        try:
            def shot(name, url, keys=(), then=None):
                driver.get(url)
                settle(driver, keys)
                if then is not None:
                    then()
                    settle(driver)
                path = args.out / f"{name}.png"
                shots.append((path, save(driver, path)))

            shot("landing", server.url("/"), DEFAULT)
            shot("compare-inner-layer", server.url("/", methods="gradcam,gradcampp,xgradcam,liftcam", compare="blocks.6"),
                 DEFAULT + ["cmp_liftcam"])
            shot("coefficients", server.url("/"), DEFAULT,
                 then=lambda: scroll_to(driver, ".st-key-coef_method"))
            shot("more-methods", server.url("/", methods="gradcam,liftcam,scorecam,ablationcam,shapcam"),
                 ["cam_gradcam", "cam_liftcam"])
            shot("faithfulness", server.url("/Faithfulness", sample="coffee"))
            shot("vqa", server.url("/VQA"), ["vqa_cam_gradcam"])
            shot("shap-vs-lift", server.url("/SHAP_vs_LIFT", layer="blocks.6"))
            driver.get(server.url("/Faithfulness/extra/path"))
            time.sleep(1)
            path = args.out / "page-not-found.png"
            shots.append((path, save(driver, path)))
        finally:
            driver.quit()
    for path, size in shots:
        print(f"{path.relative_to(browser.ROOT)}  {size / 1024:.0f} kB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
