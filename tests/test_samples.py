"""Tests of camlib.samples: every sample loads offline and its metadata is sane."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from torchvision.models import ResNet50_Weights

from camlib.samples import Sample, list_samples, load_sample

SAMPLES = list_samples()

# The class names the sample metadata is meant to point at (torchvision order).
EXPECTED_CLASS_NAMES = {
    "chelsea": {"tabby", "tiger cat", "Egyptian cat"},
    "coffee": {"espresso", "cup", "coffee mug"},
    "rocket": {"space shuttle", "missile", "projectile"},
    "astronaut": {"space shuttle"},
    "camera": {"tripod"},
}


def test_gallery_metadata():
    keys = [s.key for s in SAMPLES]
    assert len(keys) >= 4
    assert len(set(keys)) == len(keys)
    assert {"chelsea", "coffee", "rocket", "astronaut"} <= set(keys)
    for sample in SAMPLES:
        assert isinstance(sample, Sample)
        assert sample.title and sample.source
        assert "scikit-image" in sample.source
        assert sample.classes and all(isinstance(c, int) and 0 <= c < 1000 for c in sample.classes)
        assert sample.boxes


def test_samples_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SAMPLES[0].key = "other"  # type: ignore[misc]


def test_class_indices_match_imagenet_names():
    categories = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    for sample in SAMPLES:
        names = {categories[c] for c in sample.classes}
        assert names == EXPECTED_CLASS_NAMES[sample.key], sample.key


@pytest.mark.parametrize("key", [s.key for s in SAMPLES])
def test_sample_loads_offline_with_boxes_inside(key):
    image, sample = load_sample(key)
    assert sample.key == key
    assert image.mode == "RGB"
    assert np.asarray(image).dtype == np.uint8
    width, height = image.size
    for xmin, ymin, xmax, ymax in sample.boxes:
        assert 0 <= xmin < xmax <= width - 1, (key, sample.boxes)
        assert 0 <= ymin < ymax <= height - 1, (key, sample.boxes)


def test_unknown_sample():
    with pytest.raises(KeyError, match="chelsea"):
        load_sample("no-such-sample")
