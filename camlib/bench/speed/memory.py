"""Peak memory of one run of a case, each measured in a fresh subprocess.

CPU: the resident-set high-water mark (``VmHWM`` of /proc/self/status, reset through
/proc/self/clear_refs just before the run; ``ru_maxrss`` differences where that is not available)
minus the resident set before the run: the extra memory the method needs on top of the loaded
model. CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation before the run.

:func:`measure_memory` starts ``python -m camlib.bench.speed --probe MODEL:LIBRARY:METHOD ...`` per
case; that process runs :func:`probe_memory` and prints one JSON line.
"""

from __future__ import annotations

import gc
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

import torch

from camlib.bench.speed.cases import build_cases, forward_case
from camlib.bench.speed.machine import sync
from camlib.bench.speed.subject import load_subject
from camlib.bench.speed.timing import run_case


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _malloc_trim() -> None:
    """Give freed heap memory back to the OS (glibc), so that a measured run's allocations raise the
    resident set instead of reusing pages freed by earlier runs."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Extra peak memory of a region: CUDA allocator peak, or the CPU resident-set high-water mark."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        gc.collect()
        _malloc_trim()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
            return self
        self.reset = False
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            self.reset = True
        except OSError:
            pass
        self.before = (_status_kb("VmRSS") or 0) * 1024
        self.hwm_before = self._hwm()
        return self

    def _hwm(self) -> int:
        hwm = _status_kb("VmHWM")
        if hwm is not None:
            return hwm * 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kB

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.before
        elif self.reset:
            self.peak = self._hwm() - self.before
        else:  # high-water mark only grows: what the region added above the earlier peak (a lower bound)
            self.peak = max(self._hwm() - self.hwm_before, 0)
        return False


def probe_memory(name: str, layer: str | None, library: str, method: str, device, args) -> dict:
    """In this process: the extra peak memory of one run of a case (after a warm-up run unless slow)."""
    s = load_subject(name, layer, device, args.seed)
    cases = [c for c in build_cases(s, [method] if method != "forward" else [], (library,) if library != "torch" else (),
                                    args.permutations, args.batch_size, args.peer_batch) if c.key == (library, method)]
    if not cases:
        return {"error": "no such case"}
    case = cases[0]
    run_case(forward_case(s), s.device)  # the model's own working set is resident before measuring
    if not case.slow:
        run_case(case, s.device)
    run, close = case.open()
    try:
        with PeakMemory(s.device) as peak:
            start = time.perf_counter()
            run()
            sync(s.device)
            seconds = time.perf_counter() - start
    finally:
        close()
    return {"peak_bytes": peak.peak, "seconds": seconds}


def measure_memory(name: str, layer: str, keys, args, log=print, libraries=None) -> dict:
    """{(library, method): peak bytes} from one subprocess per case."""
    import camlib

    root = str(pathlib.Path(camlib.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    out = {}
    for library, method in keys:
        if libraries is not None and library not in libraries and library != "torch":
            continue
        cmd = [sys.executable, "-m", "camlib.bench.speed", "--probe", f"{name}:{library}:{method}", "--layer", layer,
               "--seed", str(args.seed), "--permutations", str(args.permutations),
               "--batch-size", str(args.batch_size)]
        if args.device:
            cmd += ["--device", args.device]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if args.peer_batch:
            cmd += ["--peer-batch", str(args.peer_batch)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            log(f"  memory probe {library}/{method} failed: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        result = json.loads(lines[-1])
        if "peak_bytes" in result:
            out[(library, method)] = result["peak_bytes"]
            log(f"  memory {library:8s} {method:12s} {result['peak_bytes'] / 2**20:8.1f} MiB "
                f"({result['seconds']:.2f} s)")
    return out
