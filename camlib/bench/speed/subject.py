"""The benchmark subject: one model, CAM layer, image and target class, given alike to every library."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclasses.dataclass
class Subject:
    name: str
    model: object  # camlib CamModel
    layer: str
    image: torch.Tensor  # (1, 3, H, W) pixel space on the device
    target: int
    device: torch.device

    @property
    def module(self) -> nn.Module:
        return self.model.module

    @property
    def layer_module(self) -> nn.Module:
        return self.module.get_submodule(self.layer)


def default_weights(name: str):
    """EfficientNet-Lite0's pretrained weights (bundled, offline); random weights for the others
    (fine for timing)."""
    return "default" if name == "efficientnet_lite0" else None


def load_subject(name: str, layer: str | None = None, device=None, seed: int = 0) -> Subject:
    """The model (Lite0 pretrained, others random with ``seed``), the chelsea sample, its predicted class."""
    import camlib

    torch.manual_seed(seed)
    model = camlib.load_model(name, device=device, weights=default_weights(name))
    image = sample_images(model, 1)
    layer = layer or model.default_layer
    model.layer_info(layer)  # raises LayerError early
    with torch.no_grad():
        target = int(model.module(model.normalize(image)).argmax(1)[0])
    return Subject(name, model, layer, image, target, model.device)


def subject_of(model, layer: str | None = None, image: torch.Tensor | None = None,
               target: int | None = None) -> Subject:
    """A subject from a loaded CamModel: ``image`` (default: the first sample) and ``target``
    (default: the predicted class)."""
    x = image if image is not None else sample_images(model, 1)
    x = x if x.dim() == 4 else x[None]
    if target is None:
        with torch.no_grad():
            target = int(model.module(model.normalize(x)).argmax(1)[0])
    return Subject(model.name, model, layer or model.default_layer, x.to(model.device), target, model.device)


def sample_images(model, count: int) -> torch.Tensor:
    """``count`` pixel-space images (B, 3, H, W): the bundled samples, then their mirror images and
    crops; random images if the samples cannot be loaded."""
    try:
        from camlib.samples import list_samples, load_sample

        base = [model.to_batch(load_sample(s.key)[0])[0] for s in list_samples()]
    except Exception:  # samples unavailable: deterministic noise
        generator = torch.Generator().manual_seed(0)
        return torch.rand(count, 3, *model.input_size, generator=generator).to(model.device)
    out, variant = [], 0
    while len(out) < count:
        for img in base:
            x = img
            if variant % 2 == 1:
                x = x.flip(-1)
            if variant >= 2:  # a centre crop, resized back
                h, w = x.shape[-2:]
                d = min(h, w) // (4 + variant)
                x = F.interpolate(x[..., d:h - d, d:w - d], size=(h, w), mode="bilinear", align_corners=False)
            out.append(x)
            if len(out) == count:
                break
        variant += 1
    return torch.cat(out)
