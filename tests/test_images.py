"""Tests of camlib.images: the bad-input corpus is built here, in memory.

Each case either returns an 8-bit RGB image (and we check specific pixel
values) or raises ImageError with a message containing a helpful phrase.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from camlib.images import (
    ALLOWED_EXTENSIONS,
    MAX_BYTES,
    MAX_PIXELS,
    ImageError,
    image_hash,
    load_image,
    load_image_with_notes,
    overlay,
    to_png_bytes,
    to_tensor01,
)

# --------------------------------------------------------------------------
# helpers that build test files in memory
# --------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def noise_photo(width: int = 96, height: int = 64) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR claiming width x height, with a tiny IDAT.

    Opening it reads the header only; decoding it would need width*height
    pixels, so a loader that decodes before checking would fail or blow up.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit gray
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def px(image: Image.Image, x: int, y: int) -> tuple[int, ...]:
    assert image.mode == "RGB"
    return tuple(int(v) for v in np.asarray(image)[y, x])


def assert_rgb8(image: Image.Image) -> None:
    assert isinstance(image, Image.Image)
    assert image.mode == "RGB"
    assert np.asarray(image).dtype == np.uint8


def assert_image_error(source, *phrases: str) -> ImageError:
    with pytest.raises(ImageError) as info:
        load_image(source)
    message = str(info.value)
    for phrase in phrases:
        assert phrase.lower() in message.lower(), message
    assert "Traceback" not in message
    return info.value


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"hello, this is a text file and not an image\n", np.random.default_rng(1).bytes(2048)],
    ids=["text", "random-bytes"],
)
def test_not_an_image(data):
    assert_image_error(data, "not an image", "PNG")


def test_zero_bytes():
    assert_image_error(b"", "empty")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert_image_error(path, "empty")


def test_truncated_jpeg():
    data = encode(noise_photo(), "JPEG", quality=90)
    assert_image_error(data[: len(data) // 2], "truncated")
    # and Pillow's global switch was not flipped to make it "work"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_png():
    data = encode(noise_photo(), "PNG")
    assert_image_error(data[: len(data) // 2], "truncated")


def test_decompression_bomb_over_pillow_limit():
    # 10^10 pixels: Pillow raises DecompressionBombError while opening.
    assert_image_error(png_header_only(100_000, 100_000), "too large", "megapixels")


def test_image_over_pixel_cap_is_refused_from_header():
    # 48 MP: under Pillow's limit, over ours; refused before decoding (the
    # IDAT is far too short, so decoding would say "truncated" instead).
    assert 8000 * 6000 > MAX_PIXELS
    assert_image_error(png_header_only(8000, 6000), "too large", "48 megapixels", "40 megapixels")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_image_in_pillow_warning_range_is_refused():
    # 100 MP: Pillow only warns; our header check refuses it.
    assert_image_error(png_header_only(10_000, 10_000), "too large")


def test_decompression_bomb_warning_as_error_is_caught():
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        assert_image_error(png_header_only(10_000, 10_000), "too large")


def test_pillow_globals_untouched():
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    with pytest.raises(ImageError):
        load_image(png_header_only(100_000, 100_000))
    load_image(encode(noise_photo(), "PNG"))
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == before


def test_file_over_byte_cap():
    assert_image_error(b"\x00" * (MAX_BYTES + 1), "too large", "25 MB")


def test_path_over_byte_cap_not_read(tmp_path):
    path = tmp_path / "huge.jpg"
    with open(path, "wb") as fh:  # sparse: no 25 MB written to disk
        fh.truncate(MAX_BYTES + 1)
    assert_image_error(path, "too large", "limit")


def test_upload_reporting_large_size_is_refused():
    class FakeUpload(io.BytesIO):
        size = MAX_BYTES * 4

    assert_image_error(FakeUpload(b"x"), "too large")


def test_other_pillow_formats_are_not_decoded():
    # Pillow could open this as EPS (which runs Ghostscript); we must not try.
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\n"
    assert_image_error(eps, "not an image")


def test_missing_path_and_directory(tmp_path):
    assert_image_error(tmp_path / "nope.png", "no file")
    assert_image_error(tmp_path, "not a file")


def test_unsupported_source_type():
    assert_image_error(12345, "int", "file path")


@pytest.mark.parametrize(
    ("array", "phrase"),
    [
        (np.full((4, 4, 3), 3.0), "[0, 1]"),
        (np.full((4, 4), np.nan), "NaN"),
        (np.zeros((4, 4), dtype=np.int64), "int64"),
        (np.zeros((4, 4, 2), dtype=np.uint8), "shape"),
        (np.zeros((0, 4, 3), dtype=np.uint8), "no pixels"),
    ],
    ids=["float-range", "nan", "int64", "2-channels", "empty"],
)
def test_bad_arrays(array, phrase):
    assert_image_error(array, phrase)


# --------------------------------------------------------------------------
# odd but valid input
# --------------------------------------------------------------------------


def test_one_pixel_image():
    image, notes = load_image_with_notes(encode(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG"))
    assert_rgb8(image)
    assert image.size == (1, 1)
    assert px(image, 0, 0) == (10, 20, 30)
    assert any("small" in note for note in notes)


def test_16_bit_png_is_scaled_by_its_range():
    values = np.array([[1000, 2000], [3000, 5000]], dtype=np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    image, notes = load_image_with_notes(data)
    assert_rgb8(image)
    # (v - 1000) / 4000 * 255, rounded; clipping would have made all 255
    expected = np.array([[0, 64], [128, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(image)[..., 0], expected)
    np.testing.assert_array_equal(np.asarray(image)[..., 2], expected)
    assert any("16-bit image scaled to 8-bit" in note for note in notes)


def test_flat_16_bit_image_keeps_its_brightness():
    white = encode(Image.fromarray(np.full((3, 3), 65535, dtype=np.uint16)), "PNG")
    black = encode(Image.fromarray(np.zeros((3, 3), dtype=np.uint16)), "PNG")
    assert px(load_image(white), 1, 1) == (255, 255, 255)
    assert px(load_image(black), 1, 1) == (0, 0, 0)


def test_float_tiff_in_unit_range():
    values = np.array([[0.0, 0.5], [0.25, 1.0]], dtype=np.float32)
    data = encode(Image.fromarray(values), "TIFF")
    image, notes = load_image_with_notes(data)
    assert_rgb8(image)
    np.testing.assert_array_equal(np.asarray(image)[..., 1], [[0, 128], [64, 255]])
    assert any("float" in note for note in notes)


def test_float_image_outside_unit_range_is_stretched():
    values = np.array([[-2.0, 0.0], [2.0, 6.0]], dtype=np.float32)
    image = load_image(Image.fromarray(values))
    np.testing.assert_array_equal(np.asarray(image)[..., 0], [[0, 64], [128, 255]])


def test_all_nan_float_image():
    assert_image_error(Image.fromarray(np.full((2, 2), np.nan, dtype=np.float32)), "NaN")


@pytest.mark.parametrize(
    ("mode", "color", "expected"),
    [
        ("YCbCr", (128, 128, 128), (128, 128, 128)),
        ("HSV", (0, 0, 200), (200, 200, 200)),
        ("RGBX", (1, 2, 3, 0), (1, 2, 3)),
        ("RGBa", (10, 20, 30, 255), (10, 20, 30)),
        ("La", (50, 255), (50, 50, 50)),
        ("PA", (0, 255), (0, 0, 0)),
    ],
)
def test_other_modes(mode, color, expected):
    assert px(load_image(Image.new(mode, (2, 2), color)), 1, 1) == expected


def test_lab_is_refused_rather_than_misread():
    assert_image_error(Image.new("LAB", (2, 2), (50, 0, 0)), "Lab")


def test_cmyk_jpeg():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    image, notes = load_image_with_notes(encode(cmyk, "JPEG", quality=100))
    assert_rgb8(image)
    r, g, b = px(image, 8, 8)
    assert r > 240 and g < 15 and b < 15
    assert "converted from CMYK to RGB" in notes


def test_palette_with_transparency():
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))  # 0: red, 1: blue
    pal.putpixel((0, 0), 1)
    image, notes = load_image_with_notes(encode(pal, "PNG", transparency=0))  # red is transparent
    assert_rgb8(image)
    assert px(image, 0, 0) == (0, 0, 255)
    assert px(image, 2, 2) == (255, 255, 255)
    assert any("white" in note for note in notes)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animated_image_uses_first_frame(fmt):
    frames = [Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))]
    options = {"lossless": True} if fmt == "WEBP" else {}
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, **options)
    image, notes = load_image_with_notes(data)
    assert_rgb8(image)
    assert px(image, 4, 4) == (255, 0, 0)
    assert any("first frame of an animated image used" in note for note in notes)


def test_multipage_tiff_uses_first_page():
    pages = [Image.new("RGB", (8, 8), (0, 255, 0)), Image.new("RGB", (8, 8), (0, 0, 255))]
    image, notes = load_image_with_notes(encode(pages[0], "TIFF", save_all=True, append_images=pages[1:]))
    assert px(image, 0, 0) == (0, 255, 0)
    assert any("first page" in note for note in notes)


def test_exif_rotated_jpeg():
    # 40x24 black image with a white 8x8 block in the top-left corner,
    # stored with EXIF orientation 6 ("rotate 90° clockwise to display").
    stored = Image.new("RGB", (40, 24), (0, 0, 0))
    stored.paste((255, 255, 255), (0, 0, 8, 8))
    exif = Image.Exif()
    exif[0x0112] = 6
    image, notes = load_image_with_notes(encode(stored, "JPEG", quality=100, exif=exif))
    assert_rgb8(image)
    assert image.size == (24, 40)  # width and height swapped
    assert min(px(image, 20, 3)) > 230  # the block moved to the top-right corner
    assert max(px(image, 3, 3)) < 25
    assert "rotated according to EXIF orientation" in notes


@pytest.mark.parametrize(("mode", "value", "expected"), [("L", 77, 77), ("1", 1, 255), ("1", 0, 0)])
def test_grayscale(mode, value, expected):
    image = load_image(encode(Image.new(mode, (4, 4), value), "PNG"))
    assert_rgb8(image)
    assert px(image, 1, 1) == (expected,) * 3


@pytest.mark.parametrize(
    ("mode", "color", "expected"),
    [
        ("RGBA", (255, 0, 0, 0), (255, 255, 255)),  # fully transparent -> white
        ("RGBA", (0, 0, 0, 128), (127, 127, 127)),  # half black over white
        ("RGBA", (10, 20, 30, 255), (10, 20, 30)),  # opaque -> unchanged
        ("LA", (0, 0), (255, 255, 255)),
    ],
)
def test_alpha_composited_on_white(mode, color, expected):
    image = load_image(encode(Image.new(mode, (4, 4), color), "PNG"))
    assert_rgb8(image)
    assert px(image, 2, 2) == expected


@pytest.mark.parametrize(
    ("fmt", "options"),
    [("JPEG", {"quality": 95}), ("PNG", {}), ("WEBP", {"lossless": True}), ("BMP", {}), ("GIF", {}), ("TIFF", {})],
)
def test_formats(fmt, options):
    photo = noise_photo()
    image = load_image(encode(photo, fmt, **options))
    assert_rgb8(image)
    assert image.size == photo.size
    if fmt in ("PNG", "WEBP", "BMP", "TIFF"):  # lossless
        np.testing.assert_array_equal(np.asarray(image), np.asarray(photo))


def test_allowed_extensions():
    for ext in ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"):
        assert ext in ALLOWED_EXTENSIONS


# --------------------------------------------------------------------------
# the kinds of source
# --------------------------------------------------------------------------


def test_sources_path_bytes_filelike(tmp_path):
    photo = noise_photo()
    data = encode(photo, "PNG")
    path = tmp_path / "photo.png"
    path.write_bytes(data)
    expected = np.asarray(photo)

    with open(path, "rb") as fh:
        from_file = load_image(fh)
    buffer = io.BytesIO(data)
    buffer.seek(10)  # getvalue() is used, whatever the position
    for source in (str(path), path, data, bytearray(data), memoryview(data), buffer):
        np.testing.assert_array_equal(np.asarray(load_image(source)), expected)
    np.testing.assert_array_equal(np.asarray(from_file), expected)


def test_pil_input_is_not_modified():
    source = Image.new("RGBA", (3, 3), (1, 2, 3, 0))
    result = load_image(source)
    assert source.mode == "RGBA" and result is not source
    rgb = Image.new("RGB", (3, 3), (9, 8, 7))
    assert load_image(rgb) is not rgb


def test_arrays():
    gray = np.array([[0, 128], [255, 7]], dtype=np.uint8)
    assert px(load_image(gray), 1, 0) == (128, 128, 128)
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[1, 2] = (1, 2, 3)
    assert px(load_image(rgb), 2, 1) == (1, 2, 3)
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)  # transparent black
    assert px(load_image(rgba), 0, 0) == (255, 255, 255)
    floats = np.full((2, 2, 3), 0.5)
    assert px(load_image(floats), 0, 0) == (128, 128, 128)
    u16 = np.array([[0, 65535]], dtype=np.uint16)
    image, notes = load_image_with_notes(u16)
    assert px(image, 0, 0) == (0, 0, 0) and px(image, 1, 0) == (255, 255, 255)
    assert any("16-bit" in note for note in notes)
    assert px(load_image(np.array([[True, False]])), 0, 0) == (255, 255, 255)


# --------------------------------------------------------------------------
# utilities
# --------------------------------------------------------------------------


def test_image_hash():
    a = Image.new("RGB", (4, 3), (1, 2, 3))
    digest = image_hash(a)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert image_hash(a.copy()) == digest
    assert image_hash(Image.new("RGB", (3, 4), (1, 2, 3))) != digest  # same bytes, other size
    assert image_hash(a.convert("RGBA")) != digest
    b = a.copy()
    b.putpixel((0, 0), (1, 2, 4))
    assert image_hash(b) != digest


def test_to_tensor01():
    image = Image.new("RGB", (10, 6), (255, 0, 51))
    tensor = to_tensor01(image, (7, 5))
    assert tensor.shape == (3, 7, 5)
    assert tensor.dtype == torch.float32
    torch.testing.assert_close(tensor[:, 3, 2], torch.tensor([1.0, 0.0, 0.2]))
    noisy = to_tensor01(noise_photo(), (224, 224))
    assert 0.0 <= float(noisy.min()) and float(noisy.max()) <= 1.0
    assert to_tensor01(np.zeros((1, 1), dtype=np.uint8), (4, 4)).shape == (3, 4, 4)
    with pytest.raises(ValueError):
        to_tensor01(image, (0, 5))


def test_overlay_shape_dtype_and_alpha_zero():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    out = overlay(image, rng.random((5, 7)))
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(overlay(image, np.zeros((5, 7)), alpha=0.0), image)


def test_overlay_colors_are_rgb():
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    jet = {v: cv2.applyColorMap(np.array([[v]], dtype=np.uint8), cv2.COLORMAP_JET)[0, 0, ::-1] for v in (0, 255)}
    low = overlay(image, np.zeros((2, 2)), alpha=1.0)
    high = overlay(image, np.ones((2, 2)), alpha=1.0)
    np.testing.assert_array_equal(low[0, 0], jet[0])  # JET's low end is blue ...
    np.testing.assert_array_equal(high[0, 0], jet[255])  # ... its high end red
    assert low[0, 0, 2] > low[0, 0, 0] and high[0, 0, 0] > high[0, 0, 2]


def test_overlay_nan_and_inf_are_safe():
    image = np.full((8, 8, 3), 100, dtype=np.uint8)
    nan = overlay(image, np.full((4, 4), np.nan))
    np.testing.assert_array_equal(nan, overlay(image, np.zeros((4, 4))))
    mixed = overlay(image, np.array([[np.nan, np.inf], [-np.inf, 0.5]]))
    assert mixed.dtype == np.uint8 and mixed.shape == image.shape
    np.testing.assert_array_equal(overlay(image, np.full((4, 4), np.nan), alpha=0.0), image)


def test_overlay_rejects_bad_arguments():
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    with pytest.raises(ValueError):
        overlay(image.astype(np.float32), np.zeros((2, 2)))
    with pytest.raises(ValueError):
        overlay(image, np.zeros((2, 2, 2)))
    with pytest.raises(ValueError):
        overlay(image, np.zeros((2, 2)), alpha=1.5)


def test_to_png_bytes_round_trip():
    rgb = np.random.default_rng(3).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    decoded = Image.open(io.BytesIO(to_png_bytes(rgb)))
    assert decoded.format == "PNG" and decoded.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(decoded), rgb)
    gray = Image.open(io.BytesIO(to_png_bytes(rgb[..., 0])))
    assert gray.mode == "L"
    from_pil = Image.open(io.BytesIO(to_png_bytes(Image.fromarray(rgb))))
    np.testing.assert_array_equal(np.asarray(from_pil), rgb)
    assert Image.open(io.BytesIO(to_png_bytes(Image.new("CMYK", (2, 2))))).mode == "RGB"
    with pytest.raises(TypeError):
        to_png_bytes(b"not an image")
