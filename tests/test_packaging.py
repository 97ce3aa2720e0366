"""Packaging: pyproject.toml declares what camlib imports, with the specifiers of requirements.txt, and
its wheel carries the package, the console script ``camlib`` and the package's data.

A clean install (`pip install .` in a new venv, then the console script) is run by CI's
.ci/fresh-machine; here the wheel is built from a copy of the checkout and read.
"""

from __future__ import annotations

import ast
import importlib.metadata
import pathlib
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _requirements(lines) -> dict[str, str]:
    """canonical name -> specifier, of requirement lines (comments and -r lines skipped)."""
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            out[canonicalize_name(req.name)] = str(req.specifier)
    return out


def _file(name: str) -> dict[str, str]:
    return _requirements((ROOT / name).read_text().splitlines())


BASE = _requirements(PROJECT["dependencies"])
EXTRAS = {name: _requirements(reqs) for name, reqs in PROJECT["optional-dependencies"].items()}


def test_requirements_txt_is_the_base_plus_the_app_and_fast_extras():
    assert set(EXTRAS) == {"app", "fast"}
    parts = [BASE, EXTRAS["app"], EXTRAS["fast"]]
    names = [n for part in parts for n in part]
    assert len(names) == len(set(names)), "a package is declared twice"
    assert {k: v for part in parts for k, v in part.items()} == _file("requirements.txt")
    assert set(EXTRAS["app"]) == {"streamlit", "plotly", "pandas"}
    assert set(EXTRAS["fast"]) == {"numba"}


# Peers the benchmarks compare with only when a user installed them by hand (requirements-dev.txt says
# how and why they are not in it); camlib imports them inside the function that uses them.
OPTIONAL_PEERS = {"quantus"}


def test_every_import_in_camlib_is_declared():
    """Each third-party module camlib imports comes from a distribution that pyproject.toml declares
    (base or extra), or, for the benchmarks' peer libraries, requirements-dev.txt; an optional peer
    (OPTIONAL_PEERS) is imported inside a function only, so that importing camlib never needs it."""
    provides = importlib.metadata.packages_distributions()
    declared = set(BASE) | {n for extra in EXTRAS.values() for n in extra} | set(_file("requirements-dev.txt"))
    dev_text = (ROOT / "requirements-dev.txt").read_text()
    for peer in OPTIONAL_PEERS:
        assert f"pip install --no-deps {peer}" in dev_text, f"requirements-dev.txt must say how to install {peer}"
    undeclared = {}
    for path in sorted((ROOT / "camlib").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                tops = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops = [node.module.split(".")[0]]
            else:
                continue
            for top in tops:
                if top in sys.stdlib_module_names or top in ("camlib", "__future__"):
                    continue
                if top in OPTIONAL_PEERS:
                    assert id(node) not in top_level, f"{path.relative_to(ROOT)}:{node.lineno} imports {top} at module level"
                    continue
                dists = {canonicalize_name(d) for d in provides.get(top, [top])}
                if not dists & declared:
                    undeclared.setdefault(top, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_console_script_is_the_cli_main():
    assert PROJECT["scripts"] == {"camlib": "camlib.cli:main"}
    from camlib.cli import main

    assert main(["methods"]) == 0  # returns the exit status the console script passes to sys.exit


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    import setuptools

    required = Version(tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"][0]
                       .removeprefix("setuptools>="))
    if Version(setuptools.__version__) < required:
        pytest.skip(f"setuptools {setuptools.__version__} here; pyproject.toml needs >= {required} "
                    "(pip's isolated build fetches it; CI's .ci/fresh-machine runs that)")
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            str(source), "-w", str(out)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    (path,) = out.glob("camlib-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_carries_the_package_script_and_metadata(wheel):
    names = set(wheel.namelist())
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "camlib").rglob("*.py") if "__pycache__" not in p.parts}
    assert sources <= names, f"missing from the wheel: {sorted(sources - names)}"
    assert not any(n.startswith(("tests/", "pages/")) or n == "app.py" for n in names)
    info = next(n.rsplit("/", 1)[0] for n in names if n.endswith(".dist-info/METADATA"))
    assert "camlib = camlib.cli:main" in wheel.read(f"{info}/entry_points.txt").decode().splitlines()
    metadata = wheel.read(f"{info}/METADATA").decode().splitlines()
    requires = [line.removeprefix("Requires-Dist: ") for line in metadata if line.startswith("Requires-Dist: ")]
    assert _requirements(r for r in requires if "extra ==" not in r) == BASE


def test_wheel_carries_the_vqa_weights_where_camlib_looks_for_them(wheel):
    from camlib.vqa import ASSET_DIR

    folder = ASSET_DIR.resolve().relative_to(ROOT).as_posix()
    names = set(wheel.namelist())
    assert {f"{folder}/vqa_shapes.pt", f"{folder}/vqa_shapes.json"} <= names, \
        f"ASSET_DIR is {folder}/; the wheel has no such files"
