"""``CamModel``: one network ready to be explained, shared by every caller.

A ``CamModel`` holds one network in evaluation mode with frozen parameters (explanations never need
gradients of the weights), its preprocessing, class names and the list of layers a user may explain.
It is immutable after loading except for a cache of per-layer splits guarded by a lock (each split
caches what backends derive from it under its own lock), so one loaded model can be shared by
several threads (the app shares one between all browser sessions). Models come from the zoo
(:func:`camlib.load_model`) or are built around any traceable ``nn.Module``.
"""

from __future__ import annotations

import threading
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from camlib.graph.split import LayerInfo, Split, SplittableModel


class CamModel:
    """A network ready to be explained: eval mode, frozen weights, traced once for splitting.

    Inputs of every method are images in pixel space, (B, 3, H, W) in [0, 1] at ``input_size``;
    ``normalize`` maps them to the network's input. ``extra_inputs`` (VQA: the question) are passed to
    the network after the image and held fixed while explaining.
    """

    def __init__(self, name: str, module: nn.Module, device: torch.device, class_names: Sequence[str],
                 default_layer: str, preset_layers: Sequence[str] = (), input_size=(224, 224),
                 mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), title: str | None = None,
                 example_extra: Sequence[torch.Tensor] = (), note: str = ""):
        self.name = name
        self.title = title or name
        self.note = note
        self.device = device
        self.module = module.eval().requires_grad_(False).to(device)
        self.class_names = list(class_names)
        self.input_size = tuple(input_size)
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)
        example = [torch.zeros(1, 3, *self.input_size, device=device), *[e.to(device) for e in example_extra]]
        self._splittable = SplittableModel(self.module, example)
        self.layers: list[LayerInfo] = self._splittable.layers
        self.default_layer = self._splittable.layer_info(default_layer).name
        self.preset_layers = [n for n in preset_layers if self._has_layer(n)] or [self.default_layer]
        self._lock = threading.Lock()
        self._splits: dict[str, Split] = {}

    def __repr__(self) -> str:
        return f"CamModel({self.name!r}, device={self.device}, default_layer={self.default_layer!r})"

    def _has_layer(self, name: str) -> bool:
        try:
            self._splittable.layer_info(name)
            return True
        except ValueError:
            return False

    def layer_info(self, name: str | None = None) -> LayerInfo:
        return self._splittable.layer_info(name or self.default_layer)

    def split(self, layer: str | None = None) -> Split:
        """The head/tail split at ``layer`` (default: the last convolutional activation); cached,
        with the per-layer objects backends derive from it (:meth:`Split.memo`)."""
        name = self.layer_info(layer).name
        with self._lock:
            if name not in self._splits:
                self._splits[name] = self._splittable.split(name)
            return self._splits[name]

    def segment(self, start: str, end: str):
        """The network from layer ``start``'s output to layer ``end``'s (``SplittableModel.segment``)."""
        return self._splittable.segment(start, end)

    # -- inputs ------------------------------------------------------------------------------------

    def normalize(self, images01: torch.Tensor) -> torch.Tensor:
        return (images01 - self.mean) / self.std

    def to_batch(self, image) -> tuple[torch.Tensor, bool]:
        """(B, 3, H, W) pixel-space batch on the device, and whether the input was already a batch.

        ``image``: a PIL image, a path, a list of those, or a tensor (3, H, W) / (B, 3, H, W) in [0, 1]
        (resized to ``input_size`` when its size differs).
        """
        if isinstance(image, torch.Tensor):
            batched = image.dim() == 4
            x = image if batched else image.unsqueeze(0)
            if x.dim() != 4 or x.shape[1] != 3:
                raise ValueError(f"expected an image tensor (3, H, W) or (B, 3, H, W), got {tuple(image.shape)}")
            x = x.to(self.device, torch.float32)
            if tuple(x.shape[-2:]) != self.input_size:
                x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
            return x, batched
        from camlib.images import load_image, to_tensor01

        if isinstance(image, (list, tuple)):
            return torch.stack([to_tensor01(load_image(i), self.input_size) for i in image]).to(self.device), True
        return to_tensor01(load_image(image), self.input_size).unsqueeze(0).to(self.device), False

    def extra_inputs(self, batch: int, **options) -> tuple[tuple[torch.Tensor, ...], dict]:
        """Extra network inputs for a batch (none for classifiers) and the options left over."""
        return (), options

    @torch.inference_mode()
    def predict(self, images01: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        """Logits of a pixel-space batch (no gradients)."""
        return self.module(self.normalize(images01), *extra)

    def logits_fn(self, *extra: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """images01 -> logits with the extra inputs (first row) held fixed, for the metrics."""
        def fn(images01: torch.Tensor) -> torch.Tensor:
            held = [e[:1].expand(images01.shape[0], *e.shape[1:]) for e in extra]
            return self.predict(images01, *held)
        return fn
