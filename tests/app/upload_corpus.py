"""A corpus of awkward uploads for the app's upload path (built in memory, nothing on disk)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def _encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def _photo(width: int = 96, height: int = 64) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], -1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", raw) + _png_chunk(b"IEND", b"")


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    return _encode(_photo(120, 60), "JPEG", exif=exif)


def _palette_transparent() -> bytes:
    image = _photo(40, 30).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return _encode(image, "PNG", transparency=0)


def _animated_gif() -> bytes:
    frames = [_photo(48, 32), _photo(48, 32).transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _sixteen_bit() -> bytes:
    values = (np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) * 20).astype(np.uint16)
    return _encode(Image.fromarray(values), "PNG")  # mode I;16


def upload_corpus() -> dict[str, tuple[bytes, str]]:
    """name -> (file bytes, expected outcome: "error" or "ok")."""
    good_jpeg = _encode(_photo(), "JPEG", quality=90)
    good_png = _encode(_photo(), "PNG")
    from camlib.images import MAX_BYTES

    return {
        "empty.jpg": (b"", "error"),
        "text.png": (b"this is not an image\n" * 10, "error"),
        "random.jpg": (np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "error"),
        "truncated.jpg": (good_jpeg[: len(good_jpeg) // 2], "error"),
        "truncated.png": (good_png[: len(good_png) // 2], "error"),
        "bomb.png": (_png_bomb(), "error"),
        "too_big.bmp": (b"BM" + b"\x00" * MAX_BYTES, "error"),
        "fake.svg.png": (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "error"),
        "doc.pdf.jpg": (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "error"),
        "ok.jpg": (good_jpeg, "ok"),
        "ok.webp": (_encode(_photo(), "WEBP"), "ok"),
        "ok.bmp": (_encode(_photo(), "BMP"), "ok"),
        "one_pixel.png": (_encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"), "ok"),
        "sixteen_bit.png": (_sixteen_bit(), "ok"),
        "cmyk.jpg": (_encode(_photo().convert("CMYK"), "JPEG"), "ok"),
        "palette_alpha.png": (_palette_transparent(), "ok"),
        "rgba.png": (_encode(_photo().convert("RGBA"), "PNG"), "ok"),
        "animated.gif": (_animated_gif(), "ok"),
        "exif_rotated.jpg": (_exif_rotated(), "ok"),
        "grayscale.jpg": (_encode(_photo().convert("L"), "JPEG"), "ok"),
        "huge_but_valid.png": (_encode(Image.new("RGB", (3000, 2000), (10, 120, 30)), "PNG"), "ok"),
    }
