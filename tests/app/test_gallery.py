"""The gallery's notes say what the default model really predicts.

Each note quotes class names as 'name'. Every quoted name that is an ImageNet class must be in the
default model's top 5 on the image the app shows (the working image), the first one quoted must be
its top 1, and the quoted classes must come in the model's order. Names that are no ImageNet class
('person', 'rocket') are what ImageNet lacks. The boxed object's classes must be real class names.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import appkit
from camlib.samples import list_samples

QUOTED = re.compile(r"(?<![A-Za-z])'([^']+)'(?![A-Za-z])")


@pytest.fixture(scope="module")
def model():
    return appkit.get_model(appkit.DEFAULT_MODEL)


@pytest.mark.parametrize("sample", list_samples(), ids=lambda s: s.key)
def test_note_names_the_models_top_classes(model, sample):
    current = appkit.sample_image(sample.key)
    probabilities = appkit.predictions(appkit.DEFAULT_MODEL, current.key, current.image)
    top5 = [model.class_names[i] for i in np.argsort(-probabilities)[:5]]
    assert sample.note, f"{sample.key} has no note"
    assert model.title.split(" ")[0] in sample.note  # it names the model it describes
    quoted = [q for q in QUOTED.findall(sample.note) if q in model.class_names]
    assert quoted, f"the note of {sample.key} quotes no class of the model"
    assert quoted[0] == top5[0], (sample.key, quoted, top5)
    assert all(q in top5 for q in quoted), (sample.key, quoted, top5)
    ranks = [top5.index(q) for q in quoted]
    assert ranks == sorted(ranks), (sample.key, quoted, top5)
    for name in QUOTED.findall(sample.note):
        if name not in model.class_names:
            assert name.lower() not in {c.lower() for c in model.class_names}, name


def test_box_classes_are_classes(model):
    for sample in list_samples():
        assert all(0 <= c < len(model.class_names) for c in sample.classes)


def test_fairest_sample_has_a_small_box_and_its_class_predicted(model):
    """The Faithfulness page's suggestion: the prediction is the boxed object, the box is small."""
    best = appkit.fairest_sample(appkit.DEFAULT_MODEL)
    assert best is not None and best.key != "chelsea"
    current = appkit.sample_image(best.key)
    share = appkit.box_area_share(current.boxes_at(*model.input_size), *model.input_size)
    chelsea = appkit.sample_image("chelsea")
    assert share < 0.5 < appkit.box_area_share(chelsea.boxes_at(*model.input_size), *model.input_size)
    probabilities = appkit.predictions(appkit.DEFAULT_MODEL, current.key, current.image)
    assert int(np.argmax(probabilities)) in best.classes
