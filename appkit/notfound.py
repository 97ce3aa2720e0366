"""A clear "page not found" for paths the app does not have.

Streamlit answers every unknown path with its index.html (so that ``/Faithfulness`` reaches the
app's page router). For a path of two or more segments, such as ``/Faithfulness/extra/path``, the
page's relative script URLs (``./static/js/...``) then resolve under ``/Faithfulness/extra/`` and get
index.html again instead of JavaScript: the browser shows a blank page forever.

:func:`install` (called by ``app.py``; once per process) wraps the ``get_response`` of Streamlit's
static-file handler (Streamlit 1.67's ``_StreamlitStaticFiles``, the subclass of Starlette's
``StaticFiles`` that serves the app): where Streamlit would fall back to index.html for a path of
two or more segments, it answers ``404`` with a short page naming the path and linking to the app's
pages. Single-segment unknown paths (``/nope``) still reach the router, which shows the default page;
``app.py`` then says that the page was not found (:func:`unknown_page`). If Streamlit's handler is
not found (another Streamlit version) nothing is patched and :func:`install` returns False.
"""

from __future__ import annotations

import html
import threading
import urllib.parse
from typing import Sequence

_LOCK = threading.Lock()
_PAGES: list[tuple[str, str]] = []   # (title, url path) of the app's pages, for the 404 page's links


def page_html(path: str, root: str, pages: Sequence[tuple[str, str]]) -> str:
    """The 404 page: the path asked for, and a link to each page."""
    links = "".join(f'<li><a href="{html.escape(root)}/{html.escape(url)}">{html.escape(title)}</a></li>'
                    for title, url in pages)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Page not found · camlib</title>"
        "<style>body{font-family:sans-serif;background:#101318;color:#e8eaed;margin:3rem;max-width:40rem}"
        "a{color:#e8593c}code{background:#1b2027;padding:0 .3em}</style></head><body>"
        f"<h1>Page not found</h1><p>This app has no page <code>{html.escape(path)}</code>.</p>"
        f"<p>Its pages:</p><ul>{links}</ul></body></html>")


def _patch(cls) -> None:
    original = cls.get_response

    async def get_response(self, path, scope):
        from starlette.responses import HTMLResponse

        response = await original(self, path, scope)
        relative = path.replace("\\", "/").strip("/")
        served_index = getattr(response, "path", None) == getattr(self, "_index_path", object())
        if served_index and "/" in relative:
            root = scope.get("root_path", "").rstrip("/")
            asked = urllib.parse.unquote(scope.get("path", path))
            return HTMLResponse(page_html(asked, root, list(_PAGES)), status_code=404,
                                headers={"Cache-Control": "no-cache"})
        return response

    get_response._camlib_not_found = True
    cls.get_response = get_response


def install(pages: Sequence[tuple[str, str]]) -> bool:
    """Patch Streamlit's static-file handler (once); ``pages``: (title, url path) for the links.
    True when the handler is patched."""
    with _LOCK:
        _PAGES[:] = list(pages)
        try:
            from starlette.staticfiles import StaticFiles
        except ImportError:
            return False
        patched = False
        for cls in StaticFiles.__subclasses__():
            if cls.__name__ == "_StreamlitStaticFiles" and hasattr(cls, "get_response"):
                if not getattr(cls.get_response, "_camlib_not_found", False):
                    _patch(cls)
                patched = True
        return patched


def unknown_page(requested: str | None, known: Sequence[str]) -> str | None:
    """The last segment of the path the browser asked for (Streamlit routes a nested path by it)
    when it is none of the ``known`` url paths ('' is the landing page), else None."""
    if requested is None:
        return None
    path = urllib.parse.urlparse(requested).path.strip("/")
    first = urllib.parse.unquote(path.split("/")[-1] if path else "")
    return None if first in known else first
