"""The Hugging Face Docker Space: Dockerfile, README front matter and .streamlit/config.toml agree, and
the app starts from what the image would hold.

No Docker daemon is needed. The static tests parse the Dockerfile (continuation lines, exec-form JSON),
the YAML front matter of README.md and .streamlit/config.toml, and check them against each other and
against Streamlit's own option table. The start-up test builds the image's file set without Docker: the
repository's files (git's view: tracked, or untracked and not ignored) minus what .dockerignore
excludes, copied into a temporary WORKDIR; runs the Dockerfile's CMD there (``python`` becomes this
interpreter) with the Dockerfile's STREAMLIT_* environment; gets "ok" from ``/_stcore/health`` and 200
from ``/``; runs the HEALTHCHECK command; then opens the landing page in headless Chromium, waits for a
heatmap, checks the theme of config.toml, and uploads an image through the page from inside a
cross-site iframe, as on huggingface.co (screenshot: test-artifacts/space-iframe-upload.png; with
Streamlit's XSRF protection on, that upload fails with "AxiosError: 403"). After the server stops,
the HEALTHCHECK must fail.

The CMD's own port (the Space's app_port) is used when it is free; when it is busy (another server on
this machine) the test replaces that one ``--server.port=`` argument by a free port, and says so.
The browser part skips without Chromium, chromedriver or selenium, unless CAMLIB_REQUIRE_BROWSER=1;
its helpers (`missing`, `wait_healthy`, `rendered`, ...) are appkit.browser's.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import pathlib
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request

import pytest

from appkit import browser

ROOT = pathlib.Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CONFIG = ROOT / ".streamlit" / "config.toml"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
HF_COLOURS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
#: What the app reads at run time: every file of these must reach the image.
APP_PATHS = ("app.py", "pages", "appkit", "camlib", ".streamlit/config.toml", "requirements.txt")


# -- reading the files -----------------------------------------------------------------------------

@functools.cache
def instructions() -> tuple[tuple[str, str], ...]:
    """The Dockerfile's instructions in order: (INSTRUCTION, arguments), continuations joined."""
    out, buf = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not buf):
            continue  # Docker drops comment lines, also inside a continuation
        if line.endswith("\\"):
            buf += line[:-1].strip() + " "
            continue
        word, _, args = (buf + line).partition(" ")
        out.append((word.upper(), args.strip()))
        buf = ""
    assert not buf, "the Dockerfile ends inside a continuation line"
    return tuple(out)


def of(kind: str) -> list[str]:
    return [args for word, args in instructions() if word == kind]


def index_of(predicate) -> int:
    hits = [i for i, (word, args) in enumerate(instructions()) if predicate(word, args)]
    assert hits, "no such instruction in the Dockerfile"
    return hits[0]


def docker_env() -> dict[str, str]:
    """Every ENV of the Dockerfile (KEY=value form; later ones win)."""
    env = {}
    for args in of("ENV"):
        for token in shlex.split(args):
            key, eq, value = token.partition("=")
            assert eq, f"ENV {args!r}: use the KEY=value form"
            env[key] = value
    return env


def exec_form(args: str) -> list[str]:
    assert args.startswith("["), f"{args!r}: use the exec form (a JSON array), so no shell is involved"
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(a, str) for a in value)
    return value


def cmd() -> list[str]:
    cmds = of("CMD")
    assert len(cmds) == 1, f"exactly one CMD expected, found {len(cmds)}"
    assert not of("ENTRYPOINT"), "an ENTRYPOINT would change what CMD means"
    return exec_form(cmds[0])


def cmd_flags() -> dict[str, str]:
    """``--section.option=value`` (or ``--section.option value``) arguments of the CMD after app.py."""
    argv = cmd()
    rest, flags = argv[argv.index("app.py") + 1:], {}
    while rest:
        token = rest.pop(0)
        assert token.startswith("--"), f"unexpected CMD argument {token!r}"
        key, eq, value = token[2:].partition("=")
        flags[key] = value if eq else rest.pop(0)
    return flags


def healthcheck() -> list[str]:
    checks = of("HEALTHCHECK")
    assert len(checks) == 1, "one HEALTHCHECK expected"
    _, _, command = checks[0].partition("CMD ")
    return exec_form(command.strip())


@functools.cache
def front_matter() -> dict:
    import yaml

    text = (ROOT / "README.md").read_text()
    assert text.startswith("---\n"), "README.md must start with the Space's YAML front matter (---)"
    block, sep, _ = text[4:].partition("\n---\n")
    assert sep, "README.md: the front matter has no closing ---"
    return yaml.safe_load(block)


@functools.cache
def streamlit_config() -> dict:
    return tomllib.loads(CONFIG.read_text())


def streamlit_options() -> dict:
    """Streamlit's option table: key -> ConfigOption (default_val, env_var)."""
    from streamlit import config

    return dict(config._config_options_template)


def effective(option: str):
    """The option's value in the container, by Streamlit's precedence: CMD flag > environment
    variable > .streamlit/config.toml > Streamlit's default. Values as strings where they come from
    the command line or the environment."""
    spec = streamlit_options()[option]
    flags, env = cmd_flags(), docker_env()
    if option in flags:
        return flags[option]
    if spec.env_var in env:
        return env[spec.env_var]
    section, name = option.split(".", 1)
    return streamlit_config().get(section, {}).get(name, spec.default_val)


def truthy(value) -> bool:
    return value is True or str(value).lower() == "true"


def requirement_pins() -> dict[str, str]:
    """name -> specifier of requirements.txt's lines."""
    from packaging.requirements import Requirement

    lines = [ln.split("#")[0].strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    return {(r := Requirement(ln)).name.lower(): str(r.specifier) for ln in lines if ln}


# -- .dockerignore and the image's files -----------------------------------------------------------

def _glob_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern as Docker reads it (Go's filepath.Match plus ``**``)."""
    pattern = pattern.strip().lstrip("/").removeprefix("./").rstrip("/")
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


@functools.cache
def ignore_rules() -> tuple[tuple[bool, re.Pattern], ...]:
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((negated, _glob_regex(line.lstrip("!"))))
    return tuple(rules)


def excluded(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` (relative, posix) out of the build context: the last rule
    that matches the path or one of its parent folders decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    verdict = False
    for negated, regex in ignore_rules():
        if any(regex.match(p) for p in prefixes):
            verdict = not negated
    return verdict


def repository_files() -> list[str]:
    """The files a push of this checkout would carry: tracked, or untracked and not ignored."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        listed = [p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*") if ".git" not in p.parts]
    return sorted(p for p in set(listed) if p and (ROOT / p).is_file())


def image_files() -> list[str]:
    """What ``COPY . .`` puts into the image's WORKDIR."""
    return [p for p in repository_files() if not excluded(p)]


# -- static checks -----------------------------------------------------------------------------------

def test_front_matter_is_a_docker_space_on_the_cmd_port():
    meta = front_matter()
    assert meta["sdk"] == "docker"
    port = meta["app_port"]
    assert isinstance(port, int), f"app_port must be an integer, got {port!r}"
    assert cmd_flags()["server.port"] == str(port), "the CMD's --server.port differs from app_port"
    assert of("EXPOSE") == [str(port)], f"EXPOSE {of('EXPOSE')} differs from app_port {port}"
    # Streamlit-SDK keys: a Docker Space has no app_file or SDK version, its Python is the image's.
    assert not {"sdk_version", "app_file", "python_version"} & set(meta), sorted(meta)
    assert isinstance(meta["title"], str) and meta["title"]
    assert {meta["colorFrom"], meta["colorTo"]} <= HF_COLOURS
    assert isinstance(meta["pinned"], bool)
    assert meta["license"] == "apache-2.0"


def test_base_image_and_cpu_torch_with_the_pins_of_requirements():
    assert of("FROM") == ["python:3.11-slim"]
    pins = requirement_pins()
    runs = of("RUN")
    torch_run = next(r for r in runs if "torch==" in r)
    assert f"--index-url {CPU_INDEX}" in torch_run, "torch must come from PyTorch's CPU-only index"
    assert "--extra-index-url" not in torch_run, "an extra index lets pip pick PyPI's CUDA build"
    for name in ("torch", "torchvision"):
        found = re.search(rf"(?<![\w-]){name}(==[\w.+]+)", torch_run)
        assert found and found.group(1) == pins[name], f"{name}: Dockerfile {found and found.group(1)}, " \
                                                       f"requirements.txt {pins[name]}"
    # The CPU build is installed first, so that requirements.txt finds its pins satisfied.
    torch_step = index_of(lambda w, a: w == "RUN" and a == torch_run)
    requirements_step = index_of(lambda w, a: w == "RUN" and "-r /tmp/requirements.txt" in a)
    assert torch_step < requirements_step
    for run in runs:
        if "pip install" in run:  # no wheel cache in the image (also PIP_NO_CACHE_DIR=1)
            assert "--no-cache-dir" in run, run
    assert docker_env().get("PIP_NO_CACHE_DIR") == "1"


def test_requirements_are_installed_before_the_code_is_copied():
    copies = of("COPY")
    first_copy = index_of(lambda w, a: w == "COPY")
    code_copy = index_of(lambda w, a: w == "COPY" and a.split()[-2:] == [".", "."])
    install = index_of(lambda w, a: w == "RUN" and "pip install" in a and "requirements.txt" in a)
    assert instructions()[first_copy][1] == "requirements.txt /tmp/requirements.txt", \
        "only requirements.txt may be copied before the install (layer caching)"
    assert first_copy < install < code_copy
    for args in copies:  # every source named exists and reaches the build context
        sources = [s for s in args.split()[:-1] if not s.startswith("--")]
        for source in sources:
            if source != ".":
                assert (ROOT / source).exists(), f"COPY {source}: no such file"
                assert not excluded(source), f"COPY {source}: .dockerignore excludes it"


def test_runs_as_uid_1000_in_its_home():
    runs = of("RUN")
    assert any(re.search(r"useradd\b.*-u 1000 user\b", r) for r in runs), "no user with uid 1000"
    users = of("USER")
    assert users and users[-1] in ("user", "1000"), f"the container must end as uid 1000, not {users}"
    user_step = index_of(lambda w, a: w == "USER")
    code_copy = index_of(lambda w, a: w == "COPY" and a.split()[-2:] == [".", "."])
    assert user_step < code_copy and "--chown=user" in instructions()[code_copy][1], \
        "the app's files must belong to the user (numba writes its kernel cache next to camlib/)"
    assert docker_env()["HOME"] == "/home/user"
    assert of("WORKDIR") == ["$HOME/app"]


def test_cmd_runs_the_app_bound_to_all_interfaces_headless():
    argv = cmd()
    assert argv[:5] == ["python", "-m", "streamlit", "run", "app.py"], argv
    assert effective("server.address") == "0.0.0.0"
    assert truthy(effective("server.headless"))
    assert str(effective("server.port")) == str(front_matter()["app_port"])
    options = streamlit_options()
    for flag in cmd_flags():
        assert flag in options, f"--{flag} is not a Streamlit option"


def test_streamlit_settings_of_the_image():
    """The image's Streamlit environment names real options, and config.toml does not fight the CMD."""
    options = streamlit_options()
    by_env = {spec.env_var: key for key, spec in options.items()}
    for name in docker_env():
        if name.startswith("STREAMLIT_"):
            assert name in by_env, f"ENV {name} is not a Streamlit option"
    server = streamlit_config().get("server", {})
    assert "port" not in server and "address" not in server, "the CMD sets the port and address"
    assert server.get("fileWatcherType") == "none", "nothing edits the image's files: no watcher"
    assert streamlit_config()["browser"]["gatherUsageStats"] is False
    # Uploads work inside the Space's iframe: XSRF off in the image (the repository keeps it on for
    # local runs), while the WebSocket's origin check (enableCORS) stays on.
    assert truthy(server.get("enableXsrfProtection", True))
    assert not truthy(effective("server.enableXsrfProtection"))
    assert truthy(effective("server.enableCORS"))
    assert server["maxUploadSize"] <= 25  # camlib.images refuses more than 25 MiB anyway


def test_healthcheck_probes_the_health_endpoint_on_app_port():
    argv = healthcheck()
    assert argv[0] == "python"
    url = f"http://127.0.0.1:{front_matter()['app_port']}/_stcore/health"
    assert url in " ".join(argv), f"the HEALTHCHECK does not request {url}"


def test_dockerignore_keeps_what_the_app_needs_and_nothing_else():
    for kept in ("app.py", "pages/1_Explain.py", "appkit/__init__.py", "appkit/compute.py", "camlib/__init__.py",
                 "camlib/vqa/model.py", "camlib/assets/vqa/vqa_shapes.pt", ".streamlit/config.toml",
                 "requirements.txt"):
        assert not excluded(kept), f".dockerignore excludes {kept}"
    for dropped in (".git/HEAD", "tests/conftest.py", "docs/APP.md", "bench-out/faith/table.md",
                    "out/gradcam.png", "camlib/__pycache__/cam.cpython-311.pyc", "__pycache__/x.pyc",
                    "test-artifacts/app.png", ".streamlit/secrets.toml", ".ci/run", ".venv/bin/python"):
        assert excluded(dropped), f".dockerignore lets {dropped} into the image"
    files = image_files()
    needed = [p for p in repository_files()
              if any(p == a or p.startswith(a + "/") for a in APP_PATHS) and "__pycache__" not in p]
    missing = sorted(set(needed) - set(files))
    assert not missing, f"the image would lack {missing}"
    from camlib.vqa import ASSET_DIR

    weights = (ASSET_DIR / "vqa_shapes.pt").relative_to(ROOT).as_posix()
    assert "app.py" in files and weights in files, f"the image lacks app.py or {weights}"


# -- the app, started as the image starts it ---------------------------------------------------------

def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _get(url: str) -> tuple[int, bytes, list[str]]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read(), r.headers.get_all("Set-Cookie") or []


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _embedding_page(folder: pathlib.Path, app_url: str) -> http.server.ThreadingHTTPServer:
    """A page on another site (http://localhost:N, the app is on 127.0.0.1) that shows the app in an
    iframe, as huggingface.co shows a Space's *.hf.space app."""
    folder.mkdir()
    (folder / "index.html").write_text(
        f'<!doctype html><title>embedding</title><iframe id="space" src="{app_url}" '
        'style="width:1400px;height:3000px;border:0"></iframe>')
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", browser.free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _chromium(profile: pathlib.Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser.CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1500,3200"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(browser.CHROMEDRIVER), options=options)


def _wait(what: str, condition, timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _check_in_browser(tmp_path: pathlib.Path, port: int) -> None:
    from selenium.webdriver.common.by import By

    from camlib.samples import load_sample

    driver = _chromium(tmp_path / "chromium-profile")
    embedder = None
    try:
        # The landing page (one fast method, from the URL): its heatmap appears, no exception, and the
        # theme is config.toml's.
        driver.get(f"http://127.0.0.1:{port}/?methods=LIFT-CAM")
        _wait("the LIFT-CAM heatmap", lambda: all(browser.rendered(driver, ["cam_liftcam"]).values()), 180)
        assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
        assert "Explain an image" in driver.page_source
        background = driver.execute_script(
            "return getComputedStyle(document.querySelector('[data-testid=\"stApp\"]')).backgroundColor")
        hexa = streamlit_config()["theme"]["backgroundColor"].lstrip("#")
        assert background == "rgb({}, {}, {})".format(*(int(hexa[i:i + 2], 16) for i in (0, 2, 4))), background

        # An upload from inside a cross-site iframe, as in the Space's page on huggingface.co.
        image = tmp_path / "iframe-upload.png"
        load_sample("chelsea")[0].save(image)
        embedder = _embedding_page(tmp_path / "embedder", f"http://127.0.0.1:{port}/?methods=LIFT-CAM")
        driver.get(f"http://localhost:{embedder.server_address[1]}/")
        driver.switch_to.frame(driver.find_element(By.ID, "space"))
        field = _wait("the file uploader", lambda: driver.find_elements(By.CSS_SELECTOR, 'input[type="file"]'), 120)
        field[0].send_keys(str(image))

        def uploaded():
            shown = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMainBlockContainer"]')
            if shown and image.name in shown[0].text:  # the upload's name titles the image
                return "ok"
            if driver.find_elements(By.CSS_SELECTOR, '[data-testid="stFileChipIconError"]'):
                chips = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stFileChips"]')
                return "error: " + " ".join(c.get_attribute("textContent") for c in chips)
            return None

        outcome = _wait("the uploaded image in the page", uploaded, 120)
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "space-iframe-upload.png"))
        assert outcome == "ok", f"upload inside a cross-site iframe failed: {outcome}"
    finally:
        driver.quit()
        if embedder is not None:
            embedder.shutdown()


def test_app_starts_from_the_image_files_with_the_dockerfile_cmd(tmp_path):
    workdir = tmp_path / "app"  # the image's $HOME/app
    for path in image_files():
        (workdir / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, workdir / path)

    argv = cmd()
    argv[0] = sys.executable  # the image's `python`
    port = int(cmd_flags()["server.port"])
    if not _port_free(port):
        free = browser.free_port()
        argv[argv.index(f"--server.port={port}")] = f"--server.port={free}"
        print(f"port {port} is busy here: the app runs on {free} (only that argument of the CMD changed)")
        port = free
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    env |= {k: v for k, v in docker_env().items() if k.startswith(("STREAMLIT_", "PYTHON"))}
    log_path = tmp_path / "streamlit.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(argv, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    probe = healthcheck()
    probe[0] = sys.executable
    probe = [a.replace(f"127.0.0.1:{front_matter()['app_port']}", f"127.0.0.1:{port}") for a in probe]
    try:
        try:
            browser.wait_healthy(port, server, timeout=120)
        except (RuntimeError, TimeoutError) as exc:
            raise AssertionError(f"{exc}; streamlit's output:\n{log_path.read_text()[-3000:]}") from None
        status, body, cookies = _get(f"http://127.0.0.1:{port}/_stcore/health")
        assert (status, body) == (200, b"ok")
        # Streamlit sets its XSRF cookie on this response only when XSRF protection is on.
        assert not any(c.startswith("_streamlit_xsrf=") for c in cookies), cookies
        status, body, _ = _get(f"http://127.0.0.1:{port}/")
        assert status == 200 and b'<div id="root">' in body
        assert subprocess.run(probe, timeout=30).returncode == 0, "the HEALTHCHECK command failed"

        reason = browser.missing()
        if reason:
            if os.environ.get("CAMLIB_REQUIRE_BROWSER") == "1":
                pytest.fail(f"browser test required (CAMLIB_REQUIRE_BROWSER=1) but {reason}")
            pytest.skip(f"the server answered; the browser part needs Chromium: {reason}")
        _check_in_browser(tmp_path, port)
        log_text = log_path.read_text()
        assert "Traceback" not in log_text, log_text[-3000:]
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert subprocess.run(probe, timeout=30, capture_output=True).returncode != 0, \
        "the HEALTHCHECK passes with no server: it cannot detect a dead app"
