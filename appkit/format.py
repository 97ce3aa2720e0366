"""Numbers for the screen: never NaN or inf."""

from __future__ import annotations

import math

import numpy as np



def fmt(value, digits: int = 4) -> str:
    """A number for the screen: never 'nan' or 'inf' (shown as '—')."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "—"
    if not math.isfinite(value):
        return "—"
    return f"{value:.{digits}g}"


def fmt_fixed(value, decimals: int = 4) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "—"
    return f"{value:.{decimals}f}" if math.isfinite(value) else "—"


def fmt_percent(value, digits: int = 1) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "—"
    return f"{100 * value:.{digits}f}%" if math.isfinite(value) else "—"


def finite(array) -> np.ndarray:
    """A float array with NaN/inf replaced by 0 (a last guard before anything is drawn)."""
    return np.nan_to_num(np.asarray(array, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
