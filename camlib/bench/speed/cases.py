"""What a run times: the plain forward pass, camlib's explain for each method, and the peers' cases.

Every fact about a camlib method comes from its metadata (:data:`camlib.methods.METHODS`), so that a
new method is timed by ``--methods KEY`` without a change here:

* :data:`DEFAULT_METHODS`, the methods timed when ``--methods`` is not given: the paper's methods
  (``Method.paper``), every method a peer implements (:data:`~camlib.bench.speed.peers.PEER_METHODS`)
  and SHAP-CAM (the SHAP section's subject), cheapest cost class first (``Method.cost``), in
  :data:`~camlib.methods.METHODS` order within a class;
* :func:`method_options`: the benchmark's settings that a method declares as options
  (``Method.options``; SHAP-CAM's ``permutations``); every other option keeps its default;
* :func:`camlib_slow`: camlib cases that make one whole-network pass per map
  (``Method.network_passes`` and not ``Cost.ONE_PASS``: Score-CAM) run ``--slow-repeats`` times.

camlib's case note names the backend the engine chose for each quantity
(``Explanation.info["backends"]``) and the options given.
"""

from __future__ import annotations

import torch

import camlib
from camlib.bench.speed import shap_prefixes
from camlib.bench.speed.peers import LIBRARIES, PEER_METHODS, peer_case
from camlib.bench.speed.subject import Subject
from camlib.bench.speed.timing import Case
from camlib.methods import METHODS, Cost, get_method


def _default_methods() -> tuple[str, ...]:
    chosen = {k for k, m in METHODS.items() if m.paper}
    chosen |= {k for methods in PEER_METHODS.values() for k in methods}
    chosen.add(shap_prefixes.METHOD)
    classes = list(Cost)
    return tuple(sorted((k for k in METHODS if k in chosen), key=lambda k: classes.index(METHODS[k].cost)))


DEFAULT_METHODS = _default_methods()


def method_options(method: str, **candidates) -> dict:
    """The candidates that ``method`` declares as options (e.g. SHAP-CAM's ``permutations``)."""
    names = {o.name for o in get_method(method).options}
    return {k: v for k, v in candidates.items() if k in names}


def camlib_slow(method: str) -> bool:
    """camlib's method makes one whole-network pass per map (Score-CAM: K forward passes)."""
    m = get_method(method)
    return m.network_passes and m.cost is not Cost.ONE_PASS


def forward_case(s: Subject) -> Case:
    """The yardstick: a plain no-grad forward pass of the model on the image."""
    def open_():
        x = s.image

        def run():
            with torch.no_grad():
                return s.module(s.model.normalize(x))

        return run, lambda: None

    return Case("torch", "forward", open_)


def camlib_case(s: Subject, method: str, permutations: int, batch_size: int) -> Case:
    """camlib's explain; its note names the backends the engine chose (``Explanation.info``) and
    the options, read after each run."""
    options = method_options(method, permutations=permutations)
    case = Case("camlib", method, None, slow=camlib_slow(method))

    def open_():
        def run():
            exp = camlib.explain(s.model, s.image[0], method, s.layer, s.target, batch_size=batch_size, **options)
            case.note = "; ".join([f"{need}: {backend}" for need, backend in exp.info["backends"].items()]
                                  + [f"{name} = {value}" for name, value in options.items()])
            return exp.coefficients[None]

        return run, lambda: None

    case.open = open_
    return case


def build_cases(s: Subject, methods, libraries, permutations: int = 10, batch_size: int = 64,
                peer_batch: int | None = None) -> list[Case]:
    """The forward pass, then per method (a key, title or common spelling) camlib's case and each
    requested peer's that implements it, in :data:`LIBRARIES` order."""
    cases = [forward_case(s)]
    for method in (get_method(m).key for m in methods):
        for library in LIBRARIES:
            if library not in libraries:
                continue
            if library == "camlib":
                cases.append(camlib_case(s, method, permutations, batch_size))
            elif (case := peer_case(library, s, method, peer_batch)) is not None:
                cases.append(case)
    return cases
