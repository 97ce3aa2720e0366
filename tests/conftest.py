"""Shared fixtures: small models built in the test (random weights, seeded) and the pretrained
offline default (loaded once per session)."""

from __future__ import annotations

import pathlib

import pytest
import torch
import torch.nn as nn

from camlib.model import CamModel

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-val-dev"


class TinyNet(nn.Module):
    """A 16x16 CNN with a nonlinear tail after ``features`` (6 maps of 8x8): 1x1 conv, ReLU,
    max pooling, a two-layer MLP — small enough for exhaustive Shapley values."""

    def __init__(self, maps: int = 6, classes: int = 3):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv2d(4, maps, 3, stride=2, padding=1), nn.ReLU(inplace=True))
        self.mix = nn.Conv2d(maps, 5, 1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(5 * 4 * 4, 8)
        self.fc2 = nn.Linear(8, classes)

    def forward(self, x):
        x = self.features(x)
        x = self.pool(self.relu(self.mix(x)))
        x = torch.flatten(x, 1)
        return self.fc2(self.relu(self.fc1(x)))  # the ReLU module is reused (two calls)


def tiny_model(seed: int = 0, **kw) -> CamModel:
    torch.manual_seed(seed)
    net = TinyNet(**kw)
    for p in net.parameters():  # spread weights so that ReLUs are active and inactive
        nn.init.normal_(p, std=0.6)
    return CamModel("tiny", net, torch.device("cpu"), [f"class {i}" for i in range(net.fc2.out_features)],
                    default_layer="features", input_size=(16, 16))


class TinyVGG(nn.Module):
    """16x16 input, 6 maps of 8x8 at ``features`` (after its ReLU; ``features.2`` before it), then
    VGG's head in small: [batch norm], max pooling, adaptive average pooling, flatten, three FC layers."""

    def __init__(self, norm: bool):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU())
        self.norm = nn.BatchNorm2d(6) if norm else nn.Identity()
        self.pool = nn.MaxPool2d(2)
        self.avgpool = nn.AdaptiveAvgPool2d(4)
        self.classifier = nn.Sequential(nn.Linear(6 * 16, 10), nn.ReLU(), nn.Linear(10, 8), nn.ReLU(),
                                        nn.Linear(8, 3))

    def forward(self, x):
        x = self.avgpool(self.pool(self.norm(self.features(x))))
        return self.classifier(torch.flatten(x, 1))


def tiny_vgg_model(norm: bool) -> CamModel:
    torch.manual_seed(0)
    net = TinyVGG(norm)
    for p in net.parameters():
        nn.init.normal_(p, std=0.6)
    if norm:  # a shift and scale of either sign: φ(0) ≠ 0 and φ not positively homogeneous
        net.norm.running_mean.normal_(0, 0.5)
        net.norm.running_var.uniform_(0.5, 2.0)
    return CamModel("tinyvgg", net.eval(), torch.device("cpu"), ["a", "b", "c"], default_layer="features",
                    input_size=(16, 16))


class SmallVGG(nn.Module):
    """A VGG-like 64×64 network: two blocks down to 16×16 (1/4 of the side), two 3×3 convolutions
    there (the CAM layer ``features``), then a 3×3 convolution and an FC layer in the tail."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(12, 16, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(inplace=True))
        self.more = nn.Sequential(nn.Conv2d(16, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Linear(8 * 8 * 8, 5)

    def forward(self, x):
        return self.fc(torch.flatten(self.more(self.features(x)), 1))


def small_vgg_model(seed: int = 0, mixed: bool = False) -> CamModel:
    torch.manual_seed(seed)
    net = SmallVGG()
    if mixed:  # a 1×1 convolution in the middle: then nothing runs through NNPACK
        net.features[8] = nn.Conv2d(16, 16, 1)
    return CamModel("smallvgg", net.eval(), torch.device("cpu"), [f"c{i}" for i in range(5)],
                    default_layer="features", input_size=(64, 64))


@pytest.fixture(scope="session")
def tiny():
    return tiny_model()


@pytest.fixture(scope="session")
def make_tiny():
    """``tiny_model`` itself, for tests that build a variant."""
    return tiny_model


@pytest.fixture(scope="session")
def make_tiny_vgg():
    """``tiny_vgg_model(norm)``: VGG's head in small, for the block-linear backend."""
    return tiny_vgg_model


@pytest.fixture(scope="session")
def make_small_vgg():
    """``small_vgg_model(seed, mixed)``: a VGG-like 64×64 network, for the NNPACK backend."""
    return small_vgg_model


@pytest.fixture(scope="session")
def lite0():
    import camlib
    return camlib.load_model("efficientnet_lite0", device="cpu")


@pytest.fixture(scope="session")
def vgg16():
    import camlib
    torch.manual_seed(0)
    return camlib.load_model("vgg16", device="cpu", weights=None)


@pytest.fixture(scope="session")
def resnet50():
    import camlib
    torch.manual_seed(0)
    return camlib.load_model("resnet50", device="cpu", weights=None)


@pytest.fixture(scope="session")
def resnet18():
    import camlib
    torch.manual_seed(0)
    return camlib.load_model("resnet18", device="cpu", weights=None)


@pytest.fixture(scope="session")
def chelsea():
    from camlib.samples import load_sample
    return load_sample("chelsea")[0]


@pytest.fixture
def images():
    torch.manual_seed(1)
    return torch.rand(2, 3, 224, 224)
