"""Shared fixtures: small models built in the test (random weights, seeded) and the pretrained
offline default (loaded once per session)."""

from __future__ import annotations

import pathlib

import pytest
import torch
import torch.nn as nn

from camlib.zoo import CamModel

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


@pytest.fixture(scope="session")
def tiny():
    return tiny_model()


@pytest.fixture(scope="session")
def make_tiny():
    """``tiny_model`` itself, for tests that build a variant."""
    return tiny_model


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
