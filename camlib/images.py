"""Safe, clear image loading and small image utilities for camlib.

Everything the app or a researcher hands us (an upload, a path, bytes, an
array, a PIL image) goes through :func:`load_image` /
:func:`load_image_with_notes`, which return an 8-bit RGB :class:`PIL.Image.Image`
or raise :class:`ImageError` with a message that can be shown to a user as is.

Safety rules followed here:

* The file size is checked against :data:`MAX_BYTES` before anything is decoded.
* Only the formats in :data:`ALLOWED_FORMATS` are handed to Pillow, so no other
  Pillow plugin (EPS, which calls Ghostscript, for example) ever runs.
* The pixel count is read from the file header and checked against
  :data:`MAX_PIXELS` *before* the pixels are decoded.  Pillow's own
  decompression-bomb error (and its warning, where warnings are turned into
  errors) is caught as well.
* No Pillow globals are changed (``ImageFile.LOAD_TRUNCATED_IMAGES``,
  ``Image.MAX_IMAGE_PIXELS``): a truncated file is an error, not a
  half-grey picture.  Warning filters are not touched either (they are
  process-wide and not thread-safe, and the app serves several sessions from
  threads).  Because :data:`MAX_PIXELS` is below Pillow's warning threshold
  (about 89 MP by default), every image that makes Pillow emit a
  ``DecompressionBombWarning`` is refused by our own header check anyway; the
  warning itself still reaches the log.
* Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "ALLOWED_EXTENSIONS",
    "ALLOWED_FORMATS",
    "MAX_BYTES",
    "MAX_PIXELS",
    "MIN_SIDE",
    "SMALL_SIDE",
    "ImageError",
    "load_image",
    "load_image_with_notes",
    "image_hash",
    "to_tensor01",
    "overlay",
    "to_png_bytes",
]

#: File extensions accepted by the uploader (lower case, no dot; the form
#: Streamlit's ``st.file_uploader(type=...)`` expects).  The loader itself goes
#: by the file's content, not by its name.
ALLOWED_EXTENSIONS: tuple[str, ...] = (
    "jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff",
)

#: Pillow format names that may be decoded.  ``JPEG`` also covers the
#: multi-picture JPEG (MPO) files that many phones and cameras write.
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")

#: Largest accepted file, in bytes (25 MiB).
MAX_BYTES: int = 25 * 1024 * 1024

#: Largest accepted image, in pixels (width x height), checked from the header
#: before decoding.  40 megapixels covers photos from current phones and most
#: cameras; the model only ever sees a few hundred pixels per side.
MAX_PIXELS: int = 40_000_000

#: Smallest accepted width and height.  A 1x1 image is allowed: it is upsampled
#: to the model's input size later, so the explanation is just very coarse.
MIN_SIDE: int = 1

#: Images whose shorter side is below this get a note that they will be
#: upscaled and that the heatmap will therefore be coarse.
SMALL_SIDE: int = 32

_SUPPORTED_TEXT = "JPEG, PNG, WebP, BMP, GIF or TIFF"


class ImageError(ValueError):
    """An input could not be turned into an image.

    The message is meant for end users: it says what is wrong and, where
    possible, what to do about it.  The underlying exception, if any, is kept
    as ``__cause__`` for debugging.
    """


# --------------------------------------------------------------------------
# Public loading API
# --------------------------------------------------------------------------


def load_image(source: Any) -> Image.Image:
    """Load ``source`` as an 8-bit RGB PIL image.

    ``source`` may be a path (``str`` or ``os.PathLike``), ``bytes`` /
    ``bytearray`` / ``memoryview``, a binary file-like object (for example
    Streamlit's ``UploadedFile``), a NumPy array or a PIL image.  See
    :func:`load_image_with_notes` for the details and for the notes that
    describe what was converted.

    Raises:
        ImageError: with a user-facing message for any input that is not a
            usable image.
    """
    image, _notes = load_image_with_notes(source)
    return image


def load_image_with_notes(source: Any) -> tuple[Image.Image, list[str]]:
    """Load ``source`` as an 8-bit RGB PIL image and describe what was done.

    Accepted inputs:

    * a path (``str`` / ``os.PathLike``) to a JPEG, PNG, WebP, BMP, GIF or
      TIFF file (detected from the content, not the extension);
    * ``bytes``, ``bytearray`` or ``memoryview`` holding such a file;
    * a binary file-like object: objects with ``getvalue()`` (``io.BytesIO``,
      Streamlit's ``UploadedFile``) are read in full whatever their position,
      others are ``read()`` from their current position;
    * a NumPy array of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) with
      dtype ``uint8``, ``uint16``, ``bool`` or float with values in [0, 1];
    * a PIL image (its current frame is used; the caller's image is not
      modified).

    Conversions (each one adds a note):

    * EXIF orientation is applied (``ImageOps.exif_transpose``);
    * animated GIF / WebP / APNG and multi-page TIFF: the first frame is used;
    * 16-bit and 32-bit integer images, and 32-bit float images, are scaled
      linearly from their actual minimum..maximum to 0..255 (no clipping);
    * CMYK, YCbCr, grayscale, palette, ... are converted to RGB;
    * transparency (RGBA, LA, palette with tRNS) is composited on white.

    Returns:
        ``(image, notes)``: an RGB image of mode ``"RGB"`` and a list of short,
        human-readable notes for the app to show (empty if nothing notable
        happened).

    Raises:
        ImageError: for empty, oversized, truncated, corrupt, unsupported or
            otherwise unusable input.
    """
    notes: list[str] = []
    if isinstance(source, Image.Image):
        image = _normalize_pil(source, notes)
    elif isinstance(source, np.ndarray):
        image = _from_array(source, notes)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        image = _decode(bytes(source), notes)
    elif isinstance(source, (str, os.PathLike)):
        image = _decode(_read_path(source), notes)
    elif hasattr(source, "getvalue") or hasattr(source, "read"):
        image = _decode(_read_file_like(source), notes)
    else:
        raise ImageError(
            f"Cannot load an image from an object of type {type(source).__name__!r}. "
            "Pass a file path, the file's bytes, an open file or upload, "
            "a NumPy array or a PIL image."
        )
    width, height = image.size
    if min(width, height) < SMALL_SIDE:
        notes.append(
            f"very small image ({width}×{height} px): it will be upscaled, "
            "so the explanation will be coarse"
        )
    return image, notes


# --------------------------------------------------------------------------
# Reading raw bytes
# --------------------------------------------------------------------------


def _too_many_bytes(n: int) -> ImageError:
    megabyte = 1024 * 1024
    return ImageError(
        f"The file is too large: {n / megabyte:.1f} MB, which is over the "
        f"{MAX_BYTES / megabyte:g} MB limit. Please use a smaller or more "
        "compressed image."
    )


def _read_path(path: str | os.PathLike) -> bytes:
    """Read a file from disk, refusing missing, non-file and oversized paths."""
    p = Path(path)
    try:
        if not p.exists():
            raise ImageError(f"No file found at '{p}'.")
        if not p.is_file():
            raise ImageError(f"'{p}' is not a file.")
        size = p.stat().st_size
        if size > MAX_BYTES:
            raise _too_many_bytes(size)
        with p.open("rb") as fh:
            return fh.read(MAX_BYTES + 1)
    except OSError as exc:  # permissions, broken mounts, ...
        raise ImageError(f"The file '{p}' could not be read.") from exc


def _read_file_like(obj: Any) -> bytes:
    """Read an uploaded or open binary file, at most ``MAX_BYTES + 1`` bytes."""
    size = getattr(obj, "size", None)  # Streamlit's UploadedFile has .size
    if isinstance(size, int) and size > MAX_BYTES:
        raise _too_many_bytes(size)
    try:
        if hasattr(obj, "getvalue"):
            data = obj.getvalue()
        else:
            data = obj.read(MAX_BYTES + 1)
    except Exception as exc:  # any reader may fail in its own way
        raise ImageError("The uploaded file could not be read.") from exc
    if isinstance(data, str):
        raise ImageError(
            "The file was opened in text mode; open it in binary mode ('rb')."
        )
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageError("The uploaded file could not be read.")
    return bytes(data)


# --------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------


def _check_dimensions(width: int, height: int) -> None:
    """Refuse images that are empty or have more than ``MAX_PIXELS`` pixels."""
    if width < MIN_SIDE or height < MIN_SIDE:
        raise ImageError(
            f"The image has no pixels ({width}×{height}); it must be at least "
            f"{MIN_SIDE}×{MIN_SIDE}."
        )
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"The image is too large: {width}×{height} pixels "
            f"({width * height / 1e6:,.0f} megapixels); the limit is "
            f"{MAX_PIXELS / 1e6:.0f} megapixels. Please resize it and try again."
        )


def _too_large_for_pillow() -> ImageError:
    return ImageError(
        "The image is too large (its header claims more pixels than can be "
        f"decoded safely); the limit is {MAX_PIXELS / 1e6:.0f} megapixels. "
        "Please resize it and try again."
    )


def _available_formats() -> tuple[str, ...]:
    """The formats of :data:`ALLOWED_FORMATS` that this Pillow build can open."""
    Image.init()  # Pillow's own lazy plugin registration; a no-op after the first call
    return tuple(f for f in ALLOWED_FORMATS if f in Image.OPEN)


def _decode(data: bytes, notes: list[str]) -> Image.Image:
    """Decode an encoded image file held in memory."""
    if len(data) == 0:
        raise ImageError("The file is empty (0 bytes).")
    if len(data) > MAX_BYTES:
        raise _too_many_bytes(len(data))
    try:
        # Image.open reads only the header; Pillow checks its own (higher)
        # decompression-bomb limit here.
        image = Image.open(io.BytesIO(data), formats=_available_formats())
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_large_for_pillow() from exc
    except UnidentifiedImageError as exc:
        raise ImageError(
            "This file is not an image that can be opened. Please use a "
            f"{_SUPPORTED_TEXT} file."
        ) from exc
    except Exception as exc:  # a damaged header can raise almost anything
        raise ImageError(
            "The image file is damaged and could not be read."
        ) from exc

    with image:
        _check_dimensions(*image.size)  # from the header, before decoding
        try:
            if getattr(image, "is_animated", False):
                if image.format == "TIFF":
                    notes.append("first page of a multi-page TIFF used")
                else:
                    notes.append("first frame of an animated image used")
                image.seek(0)
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _too_large_for_pillow() from exc
        except Exception as exc:
            if "truncated" in str(exc).lower() or isinstance(exc, EOFError):
                raise ImageError(
                    "The image file is incomplete (truncated): it may not have "
                    "finished downloading or uploading. Please try the file "
                    "again or save it again."
                ) from exc
            raise ImageError(
                "The image file is damaged and its pixels could not be decoded."
            ) from exc
        return _normalize_pil(image, notes)


# --------------------------------------------------------------------------
# Normalising PIL images and arrays to 8-bit RGB
# --------------------------------------------------------------------------


def _exif_transpose(image: Image.Image, notes: list[str]) -> Image.Image:
    """Apply the EXIF orientation tag, if there is one other than 'normal'."""
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # malformed EXIF: ignore it rather than refuse the image
        return image
    if orientation not in (2, 3, 4, 5, 6, 7, 8):
        return image
    try:
        rotated = ImageOps.exif_transpose(image)
    except Exception:
        return image
    notes.append("rotated according to EXIF orientation")
    return rotated


def _composite_on_white(image: Image.Image, notes: list[str]) -> Image.Image:
    """Flatten an image with alpha onto a white background."""
    rgba = image.convert("RGBA")
    alpha = rgba.getchannel("A")
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba.convert("RGB"), mask=alpha)
    if alpha.getextrema()[0] < 255:
        notes.append("transparent areas composited on white")
    return background


def _stretch_to_uint8(values: np.ndarray, nominal_max: float) -> np.ndarray:
    """Map an array linearly from its actual min..max to 0..255.

    Non-finite values are treated as the minimum.  A flat (single-valued)
    array has no range to stretch; it is scaled by ``nominal_max`` instead
    (for example 65535 for 16-bit data), so all-black stays black and
    all-white stays white.
    """
    a = values.astype(np.float64)
    finite = np.isfinite(a)
    if not finite.any():
        return np.zeros(a.shape, dtype=np.uint8)
    lo, hi = float(a[finite].min()), float(a[finite].max())
    a = np.where(finite, a, lo)
    if hi > lo:
        scaled = (a - lo) * (255.0 / (hi - lo))
    else:
        scaled = np.full(a.shape, lo * 255.0 / nominal_max)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _scaled_note(bits: str, lo: int, hi: int) -> str:
    if lo == hi:
        return f"{bits} image scaled to 8-bit (a flat image, every value {lo})"
    return f"{bits} image scaled to 8-bit (values {lo}..{hi} mapped to 0..255)"


def _high_bit_depth_to_l(image: Image.Image, notes: list[str]) -> Image.Image:
    """Scale a 16/32-bit integer or 32-bit float grayscale image to mode L."""
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float32)
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            raise ImageError("The image contains no valid pixel values (all NaN).")
        if finite.min() >= 0.0 and finite.max() <= 1.0:
            # Already a [0, 1] intensity image: scale, don't stretch.
            values = np.nan_to_num(values, nan=0.0, posinf=1.0, neginf=0.0)
            out = np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
            notes.append("32-bit float image scaled to 8-bit")
            return Image.fromarray(out)
        out = _stretch_to_uint8(values, nominal_max=1.0)
        notes.append(
            "32-bit float image scaled to 8-bit (its value range "
            f"{finite.min():g}..{finite.max():g} mapped to 0..255)"
        )
        return Image.fromarray(out)
    values = np.asarray(image.convert("I"), dtype=np.int64)
    lo, hi = int(values.min()), int(values.max())
    is_16_bit = image.mode.startswith("I;16") or (lo >= 0 and hi <= 65535)
    bits = "16-bit" if is_16_bit else "32-bit"
    out = _stretch_to_uint8(values, nominal_max=65535.0)
    notes.append(_scaled_note(bits, lo, hi))
    return Image.fromarray(out)


def _normalize_pil(image: Image.Image, notes: list[str]) -> Image.Image:
    """Turn any PIL image into a new 8-bit RGB image (the input is untouched)."""
    _check_dimensions(*image.size)
    try:
        image.load()
    except Exception as exc:
        raise ImageError("The image's pixels could not be decoded.") from exc
    oriented = _exif_transpose(image, notes)
    if oriented.mode == "RGB":
        # Never hand back the caller's (or the file's) own image object.
        return oriented.copy() if oriented is image else oriented
    try:
        return _convert_to_rgb(oriented, notes)
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError(
            f"The image's colour mode ({oriented.mode}) cannot be converted to "
            "RGB. Please save it as an ordinary RGB image."
        ) from exc


def _convert_to_rgb(image: Image.Image, notes: list[str]) -> Image.Image:
    """Convert a non-RGB PIL image to RGB, adding a note where useful."""
    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;"):
        return _high_bit_depth_to_l(image, notes).convert("RGB")
    if mode == "La":  # premultiplied: Pillow only converts it to LA
        image, mode = image.convert("LA"), "LA"
    if mode in ("RGBA", "RGBa", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        return _composite_on_white(image, notes)
    if mode in ("L", "1"):
        notes.append("grayscale image converted to RGB")
    elif mode == "CMYK":
        notes.append("converted from CMYK to RGB")
    elif mode == "LAB":
        # Pillow's convert() would reinterpret Lab values as RGB bytes.
        raise ImageError(
            "The image uses the Lab colour space, which is not supported. "
            "Please save it as an RGB image."
        )
    return image.convert("RGB")


def _from_array(array: np.ndarray, notes: list[str]) -> Image.Image:
    """Convert a NumPy image array to an RGB PIL image."""
    a = array
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise ImageError(
            f"An image array must have shape (H, W), (H, W, 3) or (H, W, 4); "
            f"got {array.shape}."
        )
    _check_dimensions(a.shape[1], a.shape[0])

    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        lo, hi = int(a.min()), int(a.max())
        a = _stretch_to_uint8(a, nominal_max=65535.0)
        notes.append(_scaled_note("16-bit", lo, hi))
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ImageError("The image array contains NaN or infinite values.")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:
            raise ImageError(
                f"A float image array must have values in [0, 1]; its values "
                f"range from {lo:g} to {hi:g}. Divide by 255 if it holds 0..255 "
                "values."
            )
        a = np.rint(a.astype(np.float64) * 255.0).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise ImageError(
            f"Unsupported image array type {a.dtype}; use uint8, uint16, bool "
            "or float with values in [0, 1]."
        )

    a = np.ascontiguousarray(a)
    if a.ndim == 2:
        return Image.fromarray(a).convert("RGB")
    if a.shape[2] == 4:
        return _composite_on_white(Image.fromarray(a), notes)
    return Image.fromarray(a)


# --------------------------------------------------------------------------
# Utilities
# --------------------------------------------------------------------------


def image_hash(image: Image.Image) -> str:
    """Return a hex SHA-256 of the image's mode, size and pixel bytes.

    Two images with the same pixels (and mode and size) get the same hash,
    whatever file they came from, so the hash is a good cache key.
    """
    h = hashlib.sha256()
    h.update(f"{image.mode}\0{image.width}x{image.height}\0".encode("ascii"))
    h.update(image.tobytes())
    return h.hexdigest()


def _as_rgb(image: Any) -> Image.Image:
    if isinstance(image, Image.Image) and image.mode == "RGB":
        return image
    return load_image(image)


def to_tensor01(image: Any, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``image`` to exactly ``size`` = (H, W) and return a float tensor.

    The image is resized with Pillow's ``BILINEAR`` filter, which antialiases
    when downscaling (the same as torchvision's ``Resize(antialias=True)`` on
    PIL images).  The aspect ratio is not preserved.  No mean/std
    normalisation is applied: that belongs to the model.

    Args:
        image: an RGB PIL image, or anything :func:`load_image` accepts.
        size: (height, width) in pixels, both >= 1.

    Returns:
        A ``torch.float32`` tensor of shape (3, H, W) with values in [0, 1].
    """
    height, width = (int(v) for v in size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be two positive integers (H, W); got {size!r}")
    rgb = _as_rgb(image)
    resized = rgb.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(resized, dtype=np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def overlay(
    image_rgb_uint8: np.ndarray,
    saliency: np.ndarray,
    alpha: float = 0.5,
    colormap: int = cv2.COLORMAP_JET,
) -> np.ndarray:
    """Blend a colour-mapped saliency map over an RGB image.

    Args:
        image_rgb_uint8: (H, W, 3) uint8 RGB image (a PIL RGB image is also
            accepted).
        saliency: (h, w) map with values in [0, 1].  NaN counts as 0 and
            values outside [0, 1] (including ±inf) are clipped; the map is not
            rescaled.  It is resized bilinearly to (H, W).
        alpha: weight of the heatmap, in [0, 1]; 0 returns the image.
        colormap: an OpenCV colormap id (``cv2.COLORMAP_*``).  OpenCV returns
            BGR; the result is converted to RGB before blending.

    Returns:
        (H, W, 3) uint8 RGB array: ``(1 - alpha) * image + alpha * heatmap``.
    """
    image = np.asarray(image_rgb_uint8)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            "overlay() needs an (H, W, 3) uint8 RGB image; got shape "
            f"{image.shape} and dtype {image.dtype}"
        )
    sal = np.asarray(saliency, dtype=np.float32)
    if sal.ndim != 2 or sal.size == 0:
        raise ValueError(f"saliency must be a non-empty (h, w) array; got shape {sal.shape}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}")

    sal = np.clip(np.nan_to_num(sal, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    height, width = image.shape[:2]
    sal = cv2.resize(sal, (width, height), interpolation=cv2.INTER_LINEAR)
    sal8 = np.clip(np.rint(sal * 255.0), 0, 255).astype(np.uint8)
    heat = cv2.cvtColor(cv2.applyColorMap(sal8, colormap), cv2.COLOR_BGR2RGB)

    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * heat.astype(np.float32)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def to_png_bytes(array_or_image: Any) -> bytes:
    """Encode an image as PNG bytes (for downloads and caching).

    A uint8 array of shape (H, W), (H, W, 3) or (H, W, 4) is written as is
    (gray, RGB or RGBA); a PIL image is written in its own mode when PNG
    supports it, otherwise converted to RGB.  Any other array is converted
    with :func:`load_image` first.
    """
    if isinstance(array_or_image, np.ndarray):
        a = array_or_image
        if a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 1:
            a = a[:, :, 0]
        if a.dtype == np.uint8 and (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
            image = Image.fromarray(np.ascontiguousarray(a))
        else:
            image = load_image(a)
    elif isinstance(array_or_image, Image.Image):
        image = array_or_image
        if image.mode not in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"):
            image = image.convert("RGB")
    else:
        raise TypeError(
            "to_png_bytes() needs a NumPy array or a PIL image; got "
            f"{type(array_or_image).__name__}"
        )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
