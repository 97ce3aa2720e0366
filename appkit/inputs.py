"""The image every page works on: samples, uploads (a message, never a traceback), the working copy."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import streamlit as st
from PIL import Image

from camlib import metrics
from camlib.images import ImageError, image_hash, load_image_with_notes


#: Known sample first shown; longest side of the working image (display, overlays; the model sees
#: it resized to its input size).
DEFAULT_SAMPLE = "chelsea"
WORK_SIDE = 512

Box = tuple[int, int, int, int]


@dataclasses.dataclass(frozen=True)
class CurrentImage:
    """The image all pages work on.

    ``image``: RGB, longest side at most :data:`WORK_SIDE` (what is shown and overlaid); ``key``: its
    hash (the cache key of every computation); ``size``: (width, height) of the original;
    ``boxes``: known object boxes (xmin, ymin, xmax, ymax), inclusive, in original pixels.
    """

    key: str
    image: Image.Image
    title: str
    source: str
    size: tuple[int, int]
    notes: tuple[str, ...] = ()
    boxes: tuple[Box, ...] = ()
    sample: str | None = None

    def with_boxes(self, boxes: Sequence[Box]) -> "CurrentImage":
        return dataclasses.replace(self, boxes=tuple(tuple(int(v) for v in b) for b in boxes))

    def boxes_at(self, height: int, width: int) -> list[Box]:
        """The boxes scaled from the original image to an (height, width) grid."""
        if not self.boxes:
            return []
        w0, h0 = self.size
        return [tuple(b) for b in metrics.scale_boxes(list(self.boxes), (h0, w0), (height, width)).tolist()]


def thumbnail(image: Image.Image, size: tuple[int, int] = (240, 180)) -> Image.Image:
    """A centre crop of ``image`` at ``size`` (width, height), so that gallery tiles line up."""
    from PIL import ImageOps

    return ImageOps.fit(image, size, Image.Resampling.LANCZOS)


def working_image(image: Image.Image) -> Image.Image:
    """``image`` downscaled (aspect kept) so that its longest side is at most :data:`WORK_SIDE`."""
    if max(image.size) <= WORK_SIDE:
        return image
    scale = WORK_SIDE / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def make_current(image: Image.Image, title: str, source: str, notes=(), boxes=(), sample=None) -> CurrentImage:
    work = working_image(image)
    return CurrentImage(key=image_hash(work), image=work, title=title, source=source, size=image.size,
                        notes=tuple(notes), boxes=tuple(boxes), sample=sample)


@dataclasses.dataclass(frozen=True)
class UploadResult:
    """What became of an upload: an image and notes, or an error message for the user."""

    image: Image.Image | None
    notes: tuple[str, ...] = ()
    error: str | None = None


def read_upload(data: bytes | None, name: str = "") -> UploadResult:
    """Turn uploaded bytes into an RGB image and notes, or a clear error; never raises.

    Every check of :func:`camlib.images.load_image_with_notes` applies (size caps before decoding,
    decompression bombs, truncated files, 16-bit, CMYK, palettes with transparency, animations,
    EXIF rotation, grayscale); anything unexpected still ends in a message, not a traceback.
    """
    label = f" '{name}'" if name else ""
    if data is None:
        return UploadResult(None, error="No file was received.")
    try:
        image, notes = load_image_with_notes(bytes(data))
    except ImageError as exc:
        return UploadResult(None, error=f"Could not use{label}: {exc}")
    except Exception as exc:  # a decoder bug or an exotic file: still a message, not a traceback
        return UploadResult(None, error=f"Could not use{label}: the file could not be decoded as an image "
                                        f"({type(exc).__name__}).")
    return UploadResult(image, tuple(notes))


def upload_to_current(data: bytes, name: str) -> tuple[CurrentImage | None, UploadResult]:
    result = read_upload(data, name)
    if result.image is None:
        return None, result
    current = make_current(result.image, title=name or "uploaded image",
                           source=f"your upload ({result.image.width}×{result.image.height} px)",
                           notes=result.notes)
    return current, result


@st.cache_resource(show_spinner=False)
def sample_image(key: str) -> CurrentImage:
    """A gallery sample (from scikit-image's bundled photos, offline) with its boxes."""
    from camlib.samples import load_sample

    image, sample = load_sample(key)
    notes = (sample.note,) if sample.note else ()
    return make_current(image, title=sample.title, source=sample.source, notes=notes,
                        boxes=sample.boxes, sample=key)


@st.cache_resource(show_spinner=False)
def sample_list() -> list:
    from camlib.samples import list_samples

    return list_samples()
