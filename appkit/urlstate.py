"""The shared pages' state in the URL, so a teacher can hand out a link to a prepared view.

``?sample=coffee&model=efficientnet_lite0&layer=blocks.6&target=967&methods=gradcam,liftcam``

* **Read once, when a browser session starts** (:func:`read`): each parameter is checked against
  what exists (samples, models, the model's layers, its classes, camlib's methods) and a value that
  does not exist is named in a message (:func:`messages`), the rest still applies.
* **Methods** are given by key or title or camlib's common spellings, separated by commas or
  repeated (``methods=Grad-CAM&methods=LIFT-CAM``); a ``+`` that the URL turned into a space is put
  back ("Grad-CAM++").
* **Target**: a class index or a class name (case-insensitive); absent: the predicted class.
* **Written back on every run** (:func:`write`) when the choice changed: keys, not titles, so the
  link stays short and unambiguous.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import streamlit as st

import camlib

#: Session-state keys: the parameters of the session's first URL (parsed once) and its messages.
_READ, _MESSAGES = "_url_read", "_url_messages"
PARAMS = ("sample", "model", "layer", "target", "methods", "compare")


def _values(name: str) -> list[str]:
    """Every value of a query parameter, repeated or comma-separated, stripped, non-empty."""
    out = []
    for raw in st.query_params.get_all(name):
        out += [v.strip() for v in str(raw).split(",") if v.strip()]
    return out


def parse_methods(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """(method keys in the order given, without repeats; names that are no method)."""
    keys, unknown = [], []
    for name in names:
        key = None
        candidates = [name.replace(" ", "+"), name] if " " in name else [name]
        for candidate in candidates:
            try:
                key = camlib.get_method(candidate).key
                break
            except ValueError:
                continue
        if key is None:
            unknown.append(name)
        elif key not in keys:
            keys.append(key)
    return keys, unknown


def methods_message(unknown: Sequence[str]) -> str:
    listed = ", ".join(f"{m.title} ({k})" for k, m in camlib.methods.METHODS.items())
    names = ", ".join(f"'{u}'" for u in unknown)
    return f"The link names no method {names}. The methods are: {listed}."


def parse_target(value: str, class_names: Sequence[str]) -> tuple[int | None, str | None]:
    """(class index, None) or (None, message) for a ``target`` value: an index or a class name."""
    text = value.strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if 0 <= index < len(class_names):
            return index, None
        return None, f"The link's target {index} is not a class index: they go from 0 to {len(class_names) - 1}."
    matches = [i for i, n in enumerate(class_names) if n.lower() == text.lower()]
    if len(matches) == 1:
        return matches[0], None
    if len(matches) > 1:
        return None, (f"The link's target '{text}' names {len(matches)} classes "
                      f"(indices {', '.join(map(str, matches))}): give the index instead.")
    return None, f"The link's target '{text}' is no class of this model: give a class name or index."


def read() -> dict:
    """The URL's parameters of this session, parsed on its first run: {name: [values]}; later runs
    return the same (the URL the session started with)."""
    state = st.session_state
    if _READ not in state:
        state[_READ] = {name: _values(name) for name in PARAMS if st.query_params.get_all(name)}
        state[_MESSAGES] = []
    return state[_READ]


def take(name: str) -> list[str] | None:
    """The values of parameter ``name`` the first time it is asked for in this session, else None
    (each URL value applies once: afterwards the widgets own the state)."""
    params = read()
    used = st.session_state.setdefault("_url_used", set())
    if name in used or name not in params:
        return None
    used.add(name)
    return params[name]


def complain(message: str) -> None:
    messages = st.session_state.setdefault(_MESSAGES, [])
    if message not in messages:
        messages.append(message)


def messages() -> list[str]:
    """The messages about the URL's values that did not apply (shown on the page until dismissed)."""
    return list(st.session_state.get(_MESSAGES, []))


def dismiss() -> None:
    st.session_state[_MESSAGES] = []


def write(values: dict) -> None:
    """Put ``values`` ({parameter: str, or None to drop it}) in the URL when they differ from it."""
    current = {k: st.query_params.get(k) for k in PARAMS if k in st.query_params}
    wanted = {k: v for k, v in values.items() if v is not None}
    merged = {k: v for k, v in current.items() if k not in values} | wanted
    if merged != current:
        # from_dict replaces the whole query string in one update (one URL change in the browser)
        st.query_params.from_dict({**{k: v for k, v in st.query_params.to_dict().items() if k not in PARAMS},
                                   **merged})
