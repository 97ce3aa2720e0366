"""Agreement of the coefficients α: camlib's ``Explanation.coefficients`` against each peer's, taken from
the same timed runs (same image, layer and target): max |Δ| and max |Δ| / max |α_camlib|, judged
against :data:`AGREEMENT_TOL` where the definitions coincide (:func:`~camlib.bench.speed.peers.definition`)."""

from __future__ import annotations

import torch

from camlib.bench.speed.cases import build_cases
from camlib.bench.speed.peers import definition
from camlib.bench.speed.subject import Subject, load_subject, subject_of
from camlib.bench.speed.timing import Case, run_case

AGREEMENT_TOL = 1e-3  # max |Δ| / max |α| for pairs whose definitions coincide


def compare(ours: torch.Tensor, theirs) -> tuple[float, float]:
    """(max |Δ|, max |Δ| / max |ours|) of two coefficient arrays of the same shape."""
    a = torch.as_tensor(ours).detach().double().cpu().reshape(-1)
    b = torch.as_tensor(theirs).detach().double().cpu().reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"coefficient shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    diff = (a - b).abs().max().item()
    scale = a.abs().max().item()
    return diff, diff / scale if scale > 0 else float("inf") if diff > 0 else 0.0


def agreement_rows(s: Subject, outputs: dict, cases: list[Case] | None = None) -> list[dict]:
    """Compare camlib's coefficients with each peer's, from the outputs of :func:`time_cases`."""
    notes = {c.key: c.note for c in cases or []}
    forward = outputs.get(("torch", "forward"))
    target_logit = forward[0, s.target].item() if forward is not None else None
    rows = []
    for (library, method), theirs in sorted(outputs.items()):
        if library in ("torch", "camlib") or ("camlib", method) not in outputs:
            continue
        coincide, note = definition(library, method, target_logit, notes.get((library, method), ""))
        row = {"model": s.name, "layer": s.layer, "method": method, "peer": library,
               "coincide": coincide, "note": note}
        row["max_abs"], row["max_rel"] = compare(outputs[("camlib", method)], theirs)
        row["ok"] = row["max_rel"] <= AGREEMENT_TOL if row["coincide"] else None
        rows.append(row)
    return rows


def check_agreement(model_or_subject, methods=("gradcam",), libraries=("pgc",), layer: str | None = None,
                    image: torch.Tensor | None = None, target: int | None = None) -> list[dict]:
    """Run camlib and the peers once on one image and compare their coefficients.

    ``model_or_subject``: a :class:`Subject`, a loaded CamModel or a zoo model name. Returns rows
    with ``max_abs``, ``max_rel`` (max |Δ| / max |α_camlib|), ``coincide`` and ``ok``.
    """
    if isinstance(model_or_subject, Subject):
        s = model_or_subject
    elif isinstance(model_or_subject, str):
        s = load_subject(model_or_subject, layer)
    else:
        s = subject_of(model_or_subject, layer, image, target)
    cases = build_cases(s, methods, ("camlib", *libraries))
    outputs = {case.key: run_case(case, s.device)[1] for case in cases}
    return agreement_rows(s, outputs, cases)
