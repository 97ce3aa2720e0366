"""The run's results as Markdown (the main table, agreement, batches, SHAP-CAM, targets) and as JSON."""

from __future__ import annotations

import torch

from camlib.bench.speed.agreement import AGREEMENT_TOL
from camlib.bench.speed.peers import PEER_TITLES
from camlib.bench.speed.targets import evaluate_targets

LIBRARY_TITLES = {"torch": "plain forward (no grad)", "camlib": "camlib", **PEER_TITLES}


def _fmt_s(t: float | None) -> str:
    if t is None:
        return "–"
    if t >= 10:
        return f"{t:.1f}"
    if t >= 1:
        return f"{t:.2f}"
    if t >= 0.01:
        return f"{t:.3f}"
    return f"{t:.2g}"


def _fmt_mib(b) -> str:
    return "–" if b is None else f"{b / 2**20:.0f}"


def render(results: dict) -> str:
    m = results["machine"]
    lines = ["## Speed benchmark", "",
             f"Command: `{results['command']}`", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['threads']} threads), "
             f"Python {m['python']}, device {m['device']}" + (f" ({m['gpu']})" if m.get("gpu") else "") + ". "
             + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()) + ". "
             + (f"Load average at start {m['load'][0]:.2f}, at end {results['load_end'][0]:.2f}."
                if m.get("load") and results.get("load_end") else ""), "",
             "Medians of the runs column (after one warm-up run, except the slow cases); × forward: "
             "median / median of a plain no-grad forward pass timed in the same interleaved loop; "
             "peer / camlib: the peer's median over camlib's; peak MiB: extra resident memory "
             "(CUDA: allocated) of one run in a fresh process, above the resident set of the loaded model "
             "after a warm-up run (not for slow cases) and malloc_trim.", "",
             "| model | layer | method | library | median s | × forward | peer / camlib | peak MiB | runs | note |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---|"]
    for model in results["models"]:
        sec, runs, mem = model["seconds"], model["runs"], model.get("memory", {})
        fwd = sec.get(("torch", "forward"))
        for key in model["order"]:
            library, method = key
            t = sec.get(key)
            ours = sec.get(("camlib", method))
            vs = f"{t / ours:.2f}" if library not in ("camlib", "torch") and t and ours else ""
            lines.append(f"| {model['name']} | {model['layer']} | {method} | {LIBRARY_TITLES[library]} | "
                         f"{_fmt_s(t)} | {t / fwd:.2f} | {vs} | {_fmt_mib(mem.get(key))} | {runs.get(key, 0)} | "
                         f"{model['notes'].get(key, '')} |" if t and fwd else
                         f"| {model['name']} | {model['layer']} | {method} | {LIBRARY_TITLES[library]} | – | – | | "
                         f"{_fmt_mib(mem.get(key))} | 0 | {model['notes'].get(key, '')} |")
    agreement = [r for model in results["models"] for r in model.get("agreement", [])]
    if agreement:
        lines += ["", "### Coefficient agreement (camlib vs peer, same image, layer and target)", "",
                  f"rel = max |Δα| / max |α_camlib|; ok: rel ≤ {AGREEMENT_TOL:g} where the definitions coincide.", "",
                  "| model | layer | method | peer | max abs Δ | rel | definitions | ok |",
                  "|---|---|---|---|---:|---:|---|---|"]
        for r in agreement:
            ok = "–" if r["ok"] is None else ("yes" if r["ok"] else "**NO**")
            lines.append(f"| {r['model']} | {r['layer']} | {r['method']} | {r['peer']} | {r['max_abs']:.3g} | "
                         f"{r['max_rel']:.3g} | {'coincide' if r['coincide'] else 'differ: ' + r['note']} | {ok} |")
    batches = [r for model in results["models"] for r in model.get("batches", [])]
    if batches:
        lines += ["", "### Batches: camlib, one call for N images vs N calls of one image", "",
                  "| model | layer | method | N | one at a time s/img | batch s/img | batch / single | runs |",
                  "|---|---|---|---:|---:|---:|---:|---:|"]
        for r in batches:
            lines.append(f"| {r['model']} | {r['layer']} | {r['method']} | {r['images']} | {_fmt_s(r['single'])} | "
                         f"{_fmt_s(r['batch'])} | {r['ratio']:.2f} | {r['runs']} |")
    shap = [r for model in results["models"] for r in model.get("shap", [])]
    if shap:
        counts = sorted({c for r in shap for c in r["shapcam"]})
        lines += ["", "### SHAP-CAM: prefix evaluation per ordering (K + 1 coalitions), naive vs camlib fast", "",
                  "Fast s/ordering: as SHAP-CAM runs it, a group of orderings at a time (time / group size); "
                  "alone: one ordering by itself. Speed-up: naive / fast. Kernel: the fused clamp-readout "
                  "kernel (`camlib.engine.kernels.clampsum`) applies.", "",
                  "| model | layer | K | tail | naive s/ordering | fast s/ordering (group) | fast alone | speed-up | "
                  "kernel | fast build s (once) | "
                  + " | ".join(f"SHAP-CAM_{c} s (× vs naive)" for c in counts) + " | max |Δ| | runs |",
                  "|---|---|---:|---|---:|---:|---:|---:|---|---:|" + "---:|" * len(counts) + "---:|---:|"]
        for r in shap:
            cells = " | ".join(f"{_fmt_s(r['shapcam'][c])} ({r[f'speedup_{c}']:.0f}×)" if c in r["shapcam"] else "–"
                               for c in counts)
            lines.append(f"| {r['model']} | {r['layer']} | {r['maps']} | {'linear' if r['linear'] else 'nonlinear'} | "
                         f"{_fmt_s(r['naive'])} | {_fmt_s(r['fast'])} ({r.get('group', 1)}) | "
                         f"{_fmt_s(r.get('fast_single', r['fast']))} | {r['speedup']:.1f}× | "
                         f"{'yes' if r.get('kernel') else 'no'} | {_fmt_s(r['build'])} | "
                         f"{cells} | {r['max_diff']:.2g} | {r['runs']} |")
    targets = evaluate_targets(results)
    if targets:
        lines += ["", "### Targets", "", "| target | measured | met |", "|---|---|---|"]
        for r in targets:
            lines.append(f"| {r['target']} | {r['measured']} | {'yes' if r['met'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def jsonable(obj):
    """``results`` with tuple keys joined by "/" and tensors as lists, for ``json.dumps``."""
    if isinstance(obj, dict):
        return {("/".join(k) if isinstance(k, tuple) else str(k)): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return obj
