"""Fixtures of the app tests: a corpus of awkward uploads, and an AppTest factory.

The AppTests share one process, so st.cache_resource / st.cache_data (the loaded model, computed
explanations) carry over from test to test, as they do between a real server's sessions.
"""

from __future__ import annotations

import pathlib

import pytest
from upload_corpus import upload_corpus

ROOT = pathlib.Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
#: The fast methods (one backward pass each): keeps every page test within seconds.
FAST = ["Grad-CAM", "XGrad-CAM", "LIFT-CAM"]


@pytest.fixture(autouse=True)
def _entrypoint_runs_every_time(monkeypatch):
    """Make AppTest run app.py on every rerun, as a real server does.

    A folder named ``pages/`` next to the entry point switches Streamlit to its legacy multipage mode
    until the first ``st.navigation`` call turns it off for the rest of the server's life. AppTest resets
    that switch before every run, so on reruns it would execute the page file alone and skip app.py
    (the shared sidebar). Running the entry point directly restores the server's behaviour.
    """
    import runpy

    from streamlit.runtime.scriptrunner import script_runner

    monkeypatch.setattr(script_runner, "_mpa_v1", lambda main: runpy.run_path(main, run_name="__main__"))


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """The compute service's workers set torch's (process-wide) thread count per job; give the tests
    after an app test the count they would have had (numerics tests compare float32 results whose
    rounding depends on it)."""
    import torch

    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def corpus():
    return upload_corpus()


@pytest.fixture
def app():
    """An AppTest of app.py on the landing page with the fast methods (from the URL)."""
    from streamlit.testing.v1 import AppTest

    def make(methods=FAST, **state):
        at = AppTest.from_file(APP, default_timeout=240)
        at.query_params["methods"] = list(methods)
        for key, value in state.items():
            at.session_state[key] = value
        return at

    return make
