"""The one path shared by every CAM method: from coefficients to a saliency map.

Eq. (1):  L^c = ReLU(Σ_k α_k A_k);  then u(·) upsamples bilinearly to the image size and s(·)
min-max normalises to [0, 1], giving the saliency s(u(L^c)) that the paper's metrics use (Eq. 10, 14).

A constant map (e.g. every α_k negative, so L^c = 0 everywhere) has no defined min-max
normalisation: it becomes all zeros and is flagged, never NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Range below which an upsampled map counts as constant.
CONSTANT_TOL = 1e-12


def linear_combination(coefficients: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """L = ReLU(Σ_k α_k A_k) for a batch: (B, K) x (B, K, h, w) -> (B, h, w)  (Eq. 1)."""
    return torch.relu(torch.einsum("bk,bkhw->bhw", coefficients.to(activations.dtype), activations))


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """u(·): bilinear upsampling of (B, h, w) maps to (B, H, W) (align_corners=False)."""
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def minmax(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """s(·): per-map min-max normalisation to [0, 1]; returns (maps, constant flags)."""
    flat = maps.flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    span = high - low
    constant = ~(span > CONSTANT_TOL) | ~torch.isfinite(span)
    safe = torch.where(constant, torch.ones_like(span), span)
    out = (maps - low[:, None, None]) / safe[:, None, None]
    out = torch.where(constant[:, None, None], torch.zeros_like(out), out)
    return out.clamp_(0, 1), constant


def saliency_maps(coefficients: torch.Tensor, activations: torch.Tensor, size: tuple[int, int]):
    """(L, s(u(L)), constant flags) for a batch of coefficients and activations."""
    cam = linear_combination(coefficients, activations)
    saliency, constant = minmax(upsample(cam, size))
    return cam, saliency, constant
