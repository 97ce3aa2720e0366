"""``python -m camlib.bench speed``: the options, and a run over the models (time, agree, batches,
SHAP-CAM, memory), written as Markdown and JSON."""

from __future__ import annotations

import argparse
import gc
import json
import os
import pathlib
import statistics
import sys

import torch

from camlib.bench.speed import shap_prefixes
from camlib.bench.speed.agreement import agreement_rows
from camlib.bench.speed.batches import time_batches
from camlib.bench.speed.cases import DEFAULT_METHODS, build_cases
from camlib.bench.speed.machine import machine_info
from camlib.bench.speed.memory import measure_memory, probe_memory
from camlib.bench.speed.peers import LIBRARIES
from camlib.bench.speed.report import jsonable, render
from camlib.bench.speed.subject import load_subject
from camlib.bench.speed.timing import time_cases
from camlib.methods import METHODS, get_method

DEFAULT_MODELS = ("efficientnet_lite0", "vgg16", "resnet50")


def _parser() -> argparse.ArgumentParser:
    from camlib.bench import speed  # the package docstring describes the benchmark

    p = argparse.ArgumentParser(prog="python -m camlib.bench speed", description=speed.__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                   help=f"camlib methods to time, each against the peers that implement it (any of "
                        f"{', '.join(METHODS)}; default: {' '.join(DEFAULT_METHODS)})")
    p.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    p.add_argument("--layers", nargs="*", default=[], metavar="MODEL=LAYER",
                   help="CAM layer per model (default: the model's default layer)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each fast case (after one warm-up)")
    p.add_argument("--slow-repeats", type=int, default=1,
                   help="timed runs of the slow cases (Score-CAM, pgc Ablation-CAM), no warm-up")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--permutations", type=int, default=10,
                   help="|Π| of SHAP-CAM (any method's 'permutations' option) in the main table")
    p.add_argument("--batch-size", type=int, default=64, help="camlib's explain(batch_size=...)")
    p.add_argument("--peer-batch", type=int, default=None,
                   help="chunk size of the peers' Score-CAM/Ablation-CAM (default: theirs: pgc 16/32, torchcam 32)")
    p.add_argument("--batch", type=int, default=16, help="images for the batch comparison (0: skip it)")
    p.add_argument("--batch-repeats", type=int, default=3)
    p.add_argument("--batch-budget", type=float, default=120.0,
                   help="seconds per method for the batch comparison; slower methods use fewer images, once")
    p.add_argument("--shap-repeats", type=int, default=3, help="orderings timed per layer (0: skip SHAP section)")
    p.add_argument("--shap-permutations", type=int, nargs="*", default=[10, 100],
                   help="|Π| of the end-to-end SHAP-CAM timings in the SHAP section")
    p.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    p.add_argument("--memory-libraries", nargs="+", default=None, choices=LIBRARIES,
                   help="measure memory only for these libraries (and the plain forward)")
    p.add_argument("--no-check", action="store_true", help="skip the coefficient agreement table")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.add_argument("--out", default=None, help="Markdown file to write (also printed)")
    p.add_argument("--json", default=None, help="raw results as JSON")
    p.add_argument("--layer", default=None, help=argparse.SUPPRESS)  # memory probes
    p.add_argument("--probe", default=None, help=argparse.SUPPRESS)  # MODEL:LIBRARY:METHOD, internal
    return p


def measure_model(name: str, layer: str | None, device: torch.device, args, log) -> dict:
    """One model's figures: the interleaved timings, then agreement, batches, SHAP-CAM and memory
    as ``args`` asks."""
    s = load_subject(name, layer, device, args.seed)
    log(f"{name}: layer {s.layer}, target {s.target}")
    cases = build_cases(s, args.methods, args.libraries, args.permutations, args.batch_size, args.peer_batch)
    times, outputs = time_cases(cases, device, args.repeats, args.slow_repeats, log)
    model = {"name": name, "layer": s.layer, "order": [c.key for c in cases],
             "seconds": {k: statistics.median(v) for k, v in times.items() if v},
             "runs": {k: len(v) for k, v in times.items()},
             "notes": {c.key: c.note for c in cases}}
    fwd = model["seconds"][("torch", "forward")]
    for key in model["order"]:
        if key in model["seconds"]:
            log(f"  {key[0]:8s} {key[1]:12s} {model['seconds'][key]:.4f} s  {model['seconds'][key] / fwd:.2f}x")
    if not args.no_check:
        model["agreement"] = agreement_rows(s, outputs, cases)
        for r in model["agreement"]:
            log(f"  agree {r['method']:12s} {r['peer']:8s} abs {r['max_abs']:.3g} rel {r['max_rel']:.3g} "
                f"{'coincide' if r['coincide'] else 'differ'} {r['note']}")
    if args.batch > 1:
        # the methods camlib timed (one that does not apply at this layer failed above, with its note)
        single = {m: model["seconds"][("camlib", m)] for m in args.methods if ("camlib", m) in model["seconds"]}
        model["batches"] = time_batches(s, list(single), args.batch, args.batch_repeats, single, args.batch_budget,
                                        args.permutations, args.batch_size, log)
    if args.shap_repeats > 0 and shap_prefixes.METHOD in args.methods:
        model["shap"] = [shap_prefixes.time_shap(s, layer, args.shap_repeats, args.shap_permutations,
                                                 args.batch_size, log)
                         for layer in shap_prefixes.SHAP_LAYERS.get(name, (s.layer,))]
    if not args.no_memory:
        model["memory"] = measure_memory(name, s.layer, model["order"], args, log, args.memory_libraries)
    return model


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        args.methods = [get_method(m).key for m in args.methods]
    except ValueError as exc:
        parser.error(str(exc))
    if args.threads:
        torch.set_num_threads(args.threads)
    from camlib.devices import resolve_device

    device = resolve_device(args.device)
    if args.probe:
        name, library, method = args.probe.split(":")
        print(json.dumps(probe_memory(name, args.layer, library, method, device, args)))
        return 0

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    layers = dict(item.split("=", 1) for item in args.layers)
    command = "python -m camlib.bench speed " + " ".join(argv if argv is not None else sys.argv[1:])
    results = {"command": command.strip(), "machine": machine_info(device), "models": []}
    log(f"machine: {results['machine']}")
    for name in args.models:
        results["models"].append(measure_model(name, layers.get(name), device, args, log))
        gc.collect()
    try:
        results["load_end"] = os.getloadavg()
    except OSError:
        pass
    text = render(results)
    print(text)
    if args.out:
        pathlib.Path(args.out).write_text(text)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(jsonable(results), indent=1))
    return 0
