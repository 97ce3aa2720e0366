"""Helpers of the benchmark tests: a tiny seeded CNN served through ``--model bench_tiny:build``
and a data folder in the imagenet-val-dev format with random images."""

from __future__ import annotations

import csv
import pathlib

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from camlib.model import CamModel

CLASSES = 5


class BenchNet(nn.Module):
    """16x16 input; ``features`` (8 maps of 8x8) has a nonlinear tail (1x1 conv, ReLU, max pool, MLP)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU())
        self.mix = nn.Conv2d(8, 6, 1)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(6 * 4 * 4, 10)
        self.act2 = nn.ReLU()
        self.fc2 = nn.Linear(10, CLASSES)

    def forward(self, x):
        x = self.pool(self.act(self.mix(self.features(x))))
        return self.fc2(self.act2(self.fc1(torch.flatten(x, 1))))


def build(device=None, weights=None) -> CamModel:
    generator = torch.Generator().manual_seed(0)
    net = BenchNet()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
        net.fc2.weight.mul_(0.1)  # moderate logits: target probabilities far from 0
    return CamModel("bench_tiny", net, torch.device(device or "cpu"), [f"class {i}" for i in range(CLASSES)],
                    default_layer="features", input_size=(16, 16))


class SignedNet(nn.Module):
    """16x16 input; ``features`` (4 ReLU maps of 8x8, so A_k >= 0) then a linear tail: global average
    pooling and ``fc`` without bias, class 0's weights all negative, the other classes' all positive.

    On this tail Grad-CAM's α_k = w_ck / 64 (LIFT-CAM's, XGrad-CAM's and Ablation-CAM's α_k have the
    sign of w_ck too), so for class 0 every α_k < 0 and Σ α_k A_k <= 0: the map ReLU(Σ α_k A_k) is
    zero everywhere, constant by construction; for class 1 every α_k > 0 and the map varies wherever
    an A_k does. Score-CAM's α = softmax(...) > 0 is never constant on these images."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2, bias=False)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def build_signed(device=None, weights=None) -> CamModel:
    generator = torch.Generator().manual_seed(0)
    net = SignedNet()
    with torch.no_grad():
        for p in net.features.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
        magnitude = 0.5 + torch.rand(2, 4, generator=generator)
        net.fc.weight.copy_(magnitude * torch.tensor([[-1.0], [1.0]]))
    return CamModel("bench_signed", net, torch.device(device or "cpu"), ["negative", "positive"],
                    default_layer="features", input_size=(16, 16))


def make_data(root: pathlib.Path, n: int = 4, classes: int = CLASSES, seed: int = 0,
              labels=None) -> pathlib.Path:
    """``n`` random RGB images of 20x24 under root/images and root/index.csv (one or two boxes each);
    ``labels``: their classes (default: random among ``classes``)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        name = f"images/img_{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / name)
        cls = int(rng.integers(0, classes)) if labels is None else int(labels[i])
        rows.append([name, cls, f"class {cls}", 1.5, 2.0, 12.0, 15.5])
        if i % 2:
            rows.append([name, cls, f"class {cls}", 10.0, 4.0, 23.0, 19.0])
    with open(root / "index.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "class_index", "class_name", "xmin", "ymin", "xmax", "ymax"])
        writer.writerows(rows)
    return root


def read_csv(path: pathlib.Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def table_lines(md: str, index: int) -> list[str]:
    """The lines of the ``index``-th Markdown table of ``md`` (header and separator included)."""
    return [b for b in md.split("\n\n") if b.startswith("|")][index].splitlines()


def cells(line: str) -> list[str]:
    """The cells of a Markdown table line, bold marks removed (escaped pipes, as in SHAP-CAM
    (\\|Π\\|=5), stay inside)."""
    return [c.strip().strip("*") for c in line.strip().strip("|").split(" | ")]
