"""python -m camlib: explain a sample end to end, clear errors."""

import subprocess
import sys


def _run(*args):
    return subprocess.run([sys.executable, "-m", "camlib", *args], capture_output=True, text=True, timeout=300)


def test_explain_sample_writes_overlays_and_coefficients(tmp_path):
    out = tmp_path / "out"
    result = _run("explain", "sample:chelsea", "--method", "gradcam", "liftcam", "ablationcam", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "Egyptian cat" in result.stdout and "F^c(A) - F^c(0)" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["ablationcam.png", "coefficients.csv", "gradcam.png", "liftcam.png"]
    lines = (out / "coefficients.csv").read_text().splitlines()
    assert lines[0] == "method,map,coefficient" and len(lines) == 1 + 3 * 1280


def test_bad_image_is_a_clear_error(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    result = _run("explain", str(bad), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and result.stderr.startswith("error:") and "Traceback" not in result.stderr


def test_lists():
    assert "liftcam" in _run("methods").stdout
    assert "efficientnet_lite0" in _run("models").stdout
