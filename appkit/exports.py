"""Images and downloads: overlays, boxes, PNG and CSV exports."""

from __future__ import annotations

import base64
import io
from typing import Sequence

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from appkit.compute import coefficient_table
from appkit.format import finite
from appkit.inputs import Box
from camlib.images import overlay, to_png_bytes


def inline(image: Image.Image | np.ndarray, output_format: str = "JPEG", quality: int = 90) -> str:
    """The image as a data URL ("data:image/jpeg;base64,..."), for ``st.image``.

    Every image on the pages goes inline rather than as a Streamlit media file. Streamlit deletes a
    media file that no session references at the moment *any* session's run ends; a session's
    references are cleared when its next full run starts. So with several sessions, a map drawn in
    one run and redrawn in the next could be deleted in between, before a slow browser fetched it:
    that browser shows a broken image for good (the URL does not change when the file comes back).
    Seen here in 2 of 13 four-browser runs (docs/APP.md, "Measured timings"); a data URL cannot
    go missing. ``image``: PIL, or uint8 / [0, 1] float arrays (H, W) or (H, W, 3)."""
    if isinstance(image, np.ndarray):
        array = image
        if array.dtype != np.uint8:
            array = (np.clip(finite(array.astype(np.float32)), 0, 1) * 255 + 0.5).astype(np.uint8)
        image = Image.fromarray(array)
    fmt = output_format.upper()
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": int(quality)} if fmt == "JPEG" else {}))
    mime = "jpeg" if fmt == "JPEG" else fmt.lower()
    return f"data:image/{mime};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def overlay_image(image: Image.Image, saliency: np.ndarray, alpha: float, colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """The heatmap blended over the image at the image's own size (uint8 RGB)."""
    return overlay(np.asarray(image.convert("RGB")), finite(saliency), alpha=float(alpha), colormap=colormap)


def activation_overlay(image: Image.Image, activation01: np.ndarray) -> np.ndarray:
    """One activation map (already scaled to [0, 1]) over the image, in viridis (not the CAM colours)."""
    return overlay_image(image, activation01, 0.6, colormap=cv2.COLORMAP_VIRIDIS)


def draw_boxes(image: np.ndarray | Image.Image, boxes: Sequence[Box], color=(80, 255, 120)) -> np.ndarray:
    out = np.array(image, dtype=np.uint8, copy=True)
    thickness = max(1, round(max(out.shape[:2]) / 200))
    for x0, y0, x1, y1 in boxes:
        cv2.rectangle(out, (int(x0), int(y0)), (int(x1), int(y1)), color, thickness)
    return out


def overlay_png(image: Image.Image, saliency: np.ndarray, alpha: float) -> bytes:
    return to_png_bytes(overlay_image(image, saliency, alpha))


def coefficients_csv(results: dict[str, dict], model_name: str, class_names: Sequence[str]) -> bytes:
    """All methods' coefficients in long form: model, layer, target, method, map, alpha, share, rank."""
    frames = []
    for key, result in results.items():
        table = coefficient_table(result["coefficients"])
        table.insert(0, "method", key)
        table.insert(0, "target_name", class_names[result["target"]])
        table.insert(0, "target", result["target"])
        table.insert(0, "layer", result["layer"])
        table.insert(0, "model", model_name)
        frames.append(table)
    if not frames:
        return b""
    buffer = io.StringIO()
    pd.concat(frames, ignore_index=True).to_csv(buffer, index=False, float_format="%.8g")
    return buffer.getvalue().encode("utf-8")
