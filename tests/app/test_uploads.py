"""The upload path: every awkward file ends in a clear message or a correct image, never an exception."""

from __future__ import annotations

import pytest

import appkit

from upload_corpus import upload_corpus

CORPUS = upload_corpus()


@pytest.mark.parametrize("name", list(CORPUS))
def test_read_upload_never_raises(name):
    data, expected = CORPUS[name]
    result = appkit.read_upload(data, name)
    assert (result.image is None) == (result.error is not None)
    if expected == "error":
        assert result.error, f"{name} should be refused"
        assert name in result.error and "Traceback" not in result.error
        assert len(result.error) < 400
    else:
        assert result.error is None, result.error
        assert result.image.mode == "RGB" and min(result.image.size) >= 1
        current, _ = appkit.upload_to_current(data, name)
        assert current is not None and max(current.image.size) <= appkit.WORK_SIDE
        assert current.size == result.image.size and len(current.key) == 64


def test_notes_describe_conversions():
    notes = {name: appkit.read_upload(CORPUS[name][0], name).notes for name in CORPUS if CORPUS[name][1] == "ok"}
    assert any("EXIF" in n for n in notes["exif_rotated.jpg"])
    assert any("frame" in n for n in notes["animated.gif"])
    assert any("8-bit" in n for n in notes["sixteen_bit.png"])
    assert any("transparent" in n for n in notes["palette_alpha.png"])
    assert any("small" in n for n in notes["one_pixel.png"])


def test_exif_rotation_is_applied():
    image = appkit.read_upload(CORPUS["exif_rotated.jpg"][0]).image
    assert image.size == (60, 120)


def test_specific_messages():
    assert "empty" in appkit.read_upload(b"", "a.png").error
    assert "large" in appkit.read_upload(CORPUS["bomb.png"][0]).error
    assert "large" in appkit.read_upload(CORPUS["too_big.bmp"][0]).error
    assert "truncated" in appkit.read_upload(CORPUS["truncated.jpg"][0]).error.lower()
    assert appkit.read_upload(None).error


def test_unexpected_decoder_errors_become_messages(monkeypatch):
    def boom(data):
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(appkit.inputs, "load_image_with_notes", boom)
    result = appkit.read_upload(b"whatever", "x.png")
    assert result.image is None and "could not be decoded" in result.error


def test_streamlit_upload_limit_matches_camlib():
    import tomllib

    from camlib.images import MAX_BYTES

    config = tomllib.loads((appkit_root() / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] * 1024 * 1024 == MAX_BYTES
    assert config["browser"]["gatherUsageStats"] is False


def appkit_root():
    import pathlib

    return pathlib.Path(__file__).resolve().parents[2]
