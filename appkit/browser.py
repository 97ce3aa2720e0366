"""The app in a real browser: a ``streamlit run app.py`` server and headless Chromium sessions.

Used by the browser tests (tests/app/test_browser.py), the timing benchmark (``python -m
appkit.bench``) and the screenshots (``python -m appkit.screenshots``). Needs selenium, Chromium and
chromedriver (Debian: ``apt-get install chromium chromium-driver``); :func:`missing` says what is not
there. Chromium runs with ``--headless=new --no-sandbox --disable-gpu --disable-background-networking``.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CAMLIB_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CAMLIB_CHROMEDRIVER", "/usr/bin/chromedriver")
#: The laptop screen the landing page is designed for.
LAPTOP = (1366, 768)


def missing() -> str | None:
    """Why a browser session cannot start here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    for path, what in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromedriver")):
        if not (pathlib.Path(path).exists() or shutil.which(path)):
            return f"{what} not found at {path} (apt-get install chromium chromium-driver)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port: int, process: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until the server on ``port`` answers "ok" on /_stcore/health (RuntimeError if it exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"streamlit did not answer on port {port} within {timeout} s")


class Server:
    """``streamlit run app.py`` on a free port (``with Server() as server: server.url("/", methods=...)``).

    ``env``: extra environment variables (e.g. ``CAMLIB_SERVICE_TRACE``). ``log``: where its output
    goes. ``started`` is the time.monotonic() of the launch, ``healthy`` of the first "ok".
    """

    def __init__(self, env: dict | None = None, log: pathlib.Path | None = None, cwd: pathlib.Path = ROOT):
        self.port = free_port()
        self.env = {**os.environ, **(env or {})}
        self.log_path = log
        self.cwd = cwd
        self.process = None
        self.started = self.healthy = None

    def __enter__(self) -> "Server":
        out = open(self.log_path, "w") if self.log_path else subprocess.DEVNULL
        self._log = out
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port",
             str(self.port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
            cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 120) -> None:
        wait_healthy(self.port, self.process, timeout)
        self.healthy = time.monotonic()

    def url(self, path: str = "/", **query) -> str:
        pairs = [(k, v) for k, values in query.items() for v in (values if isinstance(values, list) else [values])]
        return f"http://127.0.0.1:{self.port}{path}" + (f"?{urllib.parse.urlencode(pairs)}" if pairs else "")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self._log is not subprocess.DEVNULL:
            self._log.close()


def chrome(width: int = LAPTOP[0], height: int = LAPTOP[1]):
    """A headless Chromium whose *viewport* is width × height CSS pixels."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-dev-shm-usage", "--hide-scrollbars", f"--window-size={width},{height}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    if inner != [width, height]:  # make the viewport, not the window, the asked size
        driver.set_window_size(2 * width - inner[0], 2 * height - inner[1])
    return driver


def descendants(pid: int) -> list[int]:
    """The process ``pid``'s children, grandchildren, ... (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def renice(driver, niceness: int) -> int:
    """Give a Chromium (its driver, browser, zygote and renderer processes) the CPU priority
    ``niceness`` (0 to 19; renderers started later inherit it from the zygote). Returns how many
    processes were changed."""
    pid = driver.service.process.pid
    changed = 0
    for p in [pid, *descendants(pid)]:
        try:
            os.setpriority(os.PRIO_PROCESS, p, int(niceness))
            changed += 1
        except OSError:
            pass
    return changed


RENDERED = """
    const out = {}, old = window.__camlibOldImages;
    for (const key of arguments[0]) {
        const imgs = document.querySelectorAll(`.st-key-${key} img`);
        out[key] = Array.from(imgs).some(i => i.complete && i.naturalWidth > 0 && !(old && old.has(i.src)));
    }
    return out;"""


def rendered(driver, keys) -> dict[str, bool]:
    """Per element key: does its container hold a loaded image (not one set aside by
    :func:`forget_images`)?"""
    return driver.execute_script(RENDERED, list(keys))


def forget_images(driver) -> int:
    """Set aside the images the page shows now: until the next page load, :func:`rendered` counts
    only images drawn after this call (to time a rerun of the same page, e.g. another sample
    picked). Returns how many images were set aside."""
    return driver.execute_script("""
        window.__camlibOldImages = new Set(Array.from(document.querySelectorAll('img')).map(i => i.src));
        return window.__camlibOldImages.size;""")


def click_pill(driver, title: str) -> None:
    """Click the sidebar pill (sample, method) whose text is ``title``."""
    for button in driver.find_elements("css selector", '[data-testid="stSidebar"] [data-testid="stButtonGroup"] button'):
        if button.text.strip() == title:
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
            button.click()
            return
    raise LookupError(f"no sidebar pill {title!r}")


def wait_rendered(driver, keys, timeout: float, start: float | None = None, poll: float = 0.05) -> dict[str, float]:
    """Seconds from ``start`` (default now) until each key's image had loaded (missing: not in time)."""
    start = time.monotonic() if start is None else start
    seen: dict[str, float] = {}
    while time.monotonic() - start < timeout and len(seen) < len(keys):
        for key, ok in rendered(driver, keys).items():
            if ok and key not in seen:
                seen[key] = time.monotonic() - start
        time.sleep(poll)
    return seen


def exceptions(driver) -> list[str]:
    return [e.text for e in driver.find_elements("css selector", '[data-testid="stException"]')]


def texts(driver, selector: str) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.textContent)", selector)


DONE = """
    const done = document.querySelector('.st-key-run_done');
    return !!done && !done.closest('[data-stale="true"]') && !done.querySelector('[data-stale="true"]')
        && !document.querySelector('[data-testid="stMain"] [data-stale="true"]');"""


def idle(driver, timeout: float = 60) -> bool:
    """Wait until the script run is over: the app's footer (key ``run_done``, drawn last by every run)
    is on the page and nothing is stale (left from a previous run), for half a second."""
    deadline, quiet = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        if driver.execute_script(DONE):
            quiet += 1
            if quiet >= 5:
                return True
        else:
            quiet = 0
        time.sleep(0.1)
    return False


def wait_for(predicate, timeout: float = 60, poll: float = 0.2) -> bool:
    """Poll ``predicate()`` until it is true (True) or ``timeout`` seconds passed (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except Exception:  # an element replaced while reading it: look again
            pass
        time.sleep(poll)
    return False


def in_view(driver, selector: str) -> list[dict]:
    """Elements matching ``selector`` with their box, and whether they lie wholly in the viewport."""
    return driver.execute_script("""
        const h = window.innerHeight, w = window.innerWidth;
        return Array.from(document.querySelectorAll(arguments[0])).map(e => {
            const r = e.getBoundingClientRect();
            return {top: r.top, bottom: r.bottom, left: r.left, right: r.right, width: r.width, height: r.height,
                    visible: r.width > 0 && r.height > 0 && r.top >= 0 && r.left >= 0 && r.bottom <= h && r.right <= w,
                    text: e.textContent};
        });""", selector)
