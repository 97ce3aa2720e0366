"""The machine a benchmark ran on (CPU, cores, versions, load) and the device barrier around a timed region."""

from __future__ import annotations

import os
import platform
import subprocess

import torch

# Name shown -> distribution name, for the versions of the libraries compared.
_DISTRIBUTIONS = {"torchvision": "torchvision", "timm": "timm", "pytorch-grad-cam": "grad-cam",
                  "torchcam": "torchcam", "captum": "captum"}


def machine_info(device: torch.device) -> dict:
    """CPU model, cores, torch version and threads (and the GPU when timing on CUDA)."""
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
            "device": str(device)}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        info["cpu"] = fields.get("Model name", info["cpu"])
        info["cores"] = int(fields.get("CPU(s)", info["cores"]))
    except (OSError, ValueError, subprocess.SubprocessError):
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    versions = {}
    for name, distribution in _DISTRIBUTIONS.items():
        try:
            from importlib.metadata import version
            versions[name] = version(distribution)
        except Exception:  # not installed
            pass
    info["versions"] = versions
    try:
        info["load"] = os.getloadavg()
    except OSError:
        pass
    return info


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so that a wall-clock interval covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
