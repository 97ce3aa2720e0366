"""Expected compute times, from each method's own count of evaluations and this machine's speed.

A method declares how its work grows (``Method.cost``) and how many evaluations of the tail, or of
the whole network (``Method.network_passes``), it makes for K maps (``Method.evaluations(K, **options)``).
The expected time of a method that is not single-pass is

    evaluations × seconds per evaluation,

where the seconds per evaluation come from

1. what this server measured for the same method at the same model and layer (every finished
   explanation teaches it: seconds / evaluations), else
2. a calibration of the model and layer, made once per server process: the tail on 16 copies of
   the activation maps, and the network on 4 images, timed after one warm-up call. It runs as a job
   of the compute service, so it shares the CPU budget like everything else.

The first estimate can be pessimistic where a backend skips evaluations (Ablation-CAM in closed
form on a linear tail, Score-CAM sharing one pass among constant maps); the second is measured.
"""

from __future__ import annotations

import threading
import time

import torch

import camlib
from camlib.methods import Cost

_LOCK = threading.Lock()
#: (model name, layer, method key) -> seconds per evaluation, measured from finished explanations.
_LEARNED: dict[tuple, float] = {}
#: The calibration's batches: activation sets through the tail, images through the network.
TAIL_BATCH, NETWORK_BATCH = 16, 4


def evaluations(model, layer: str, method: str, options: dict) -> int:
    """``method.evaluations(K, **options)`` with K the layer's number of maps."""
    m = camlib.get_method(method)
    return int(m.evaluations(int(model.layer_info(layer).shape[0]), **options))


def cost_words(model, layer: str, method: str, options: dict) -> str:
    """The method's work in words: 'one pass', '1,280 network passes', '12,810 tail evaluations'."""
    m = camlib.get_method(method)
    if m.cost is Cost.ONE_PASS:
        return "one pass"
    n = evaluations(model, layer, method, options)
    return f"{n:,} network passes" if m.network_passes else f"{n:,} tail evaluations"


def learn(model_name: str, model, layer: str, method: str, options: dict, seconds: float) -> None:
    """Record a finished explanation's time (the next estimate of the same method uses it)."""
    m = camlib.get_method(method)
    if m.cost is Cost.ONE_PASS or not seconds > 0:
        return
    n = max(1, evaluations(model, layer, method, options))
    with _LOCK:
        _LEARNED[(model_name, layer, m.key)] = seconds / n


def learned(model_name: str, layer: str, method: str) -> float | None:
    with _LOCK:
        return _LEARNED.get((model_name, layer, camlib.get_method(method).key))


def calibrate(model, layer: str, question: str | None = None) -> dict:
    """Seconds per evaluation of the tail after ``layer`` and of the whole network (see the module
    docstring). ``question``: the VQA model's held-fixed input (any valid question)."""
    split = model.split(layer)
    extra, _ = model.extra_inputs(1, **({} if question is None else {"question": question}))
    x = torch.zeros(1, 3, *model.input_size, device=model.device)
    with torch.inference_mode():
        a, *fixed = split.head(model.normalize(x), *extra)

        def repeat(t, n):
            return t.expand(n, *t.shape[1:]).contiguous() if isinstance(t, torch.Tensor) else t

        def tail(n):
            return split.tail(repeat(a, n), *(repeat(f, n) for f in fixed))

        def network(n):
            return model.module(model.normalize(repeat(x, n)), *(repeat(e, n) for e in extra))

        rates = {}
        for name, run, n in (("tail", tail, TAIL_BATCH), ("network", network, NETWORK_BATCH)):
            run(1)
            start = time.perf_counter()
            run(n)
            rates[name] = (time.perf_counter() - start) / n
    return rates


def submit_calibration(model_name: str, model, layer: str, question: str | None = None):
    from appkit.service import service

    return service().submit(("calibrate", model_name, layer), lambda progress: calibrate(model, layer, question),
                            label=f"timing {model_name} · {layer}")


def expected_seconds(model_name: str, model, layer: str, method: str, options: dict,
                     question: str | None = None, wait: bool = False) -> float | None:
    """Expected compute time of a method that is not single-pass (None for single-pass ones, and
    while the calibration has not finished unless ``wait``)."""
    m = camlib.get_method(method)
    if m.cost is Cost.ONE_PASS:
        return None
    n = evaluations(model, layer, method, options)
    rate = learned(model_name, layer, m.key)
    if rate is None:
        rates = _rates(model_name, model, layer, question, wait)
        if rates is None:
            return None
        rate = rates["network" if m.network_passes else "tail"]
    return n * rate


def expected_network_seconds(model_name: str, model, layer: str, passes: int) -> float | None:
    """Expected time of ``passes`` network evaluations (the faithfulness metrics), if calibrated."""
    rates = _rates(model_name, model, layer, None, False)
    return None if rates is None else passes * rates["network"]


def _rates(model_name, model, layer, question, wait) -> dict | None:
    job = submit_calibration(model_name, model, layer, question)
    if not job.done.is_set() and not wait:
        return None
    job.done.wait()
    return job.result if job.finished_ok else None


def estimate_known(model_name: str, layer: str, method: str) -> bool:
    """Whether the estimate comes from a measured run of this method (not the calibration)."""
    return learned(model_name, layer, method) is not None
