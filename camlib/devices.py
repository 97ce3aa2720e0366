"""Device selection: CUDA when there is one, else the CPU, or what the caller asks for."""

from __future__ import annotations

import torch


def resolve_device(device=None) -> torch.device:
    """``None``/"auto" -> CUDA if available else CPU; otherwise the given device, checked."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA was requested but no CUDA device is available; use device='cpu'")
    return device
