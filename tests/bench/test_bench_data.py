"""The benchmark on the real imagenet-val-dev images (2 images, pretrained EfficientNet-Lite0);
skipped when ../shared/data/imagenet-val-dev is absent."""

from __future__ import annotations

import pathlib

import pytest

from bench_tiny import read_csv
from camlib.bench import faithfulness
from camlib.bench.data import load_batch, load_index

DATA = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "imagenet-val-dev"

pytestmark = pytest.mark.skipif(not (DATA / "index.csv").is_file(), reason="imagenet-val-dev is not present")


def test_index_of_imagenet_val_dev():
    records = load_index(DATA)
    assert len(records) == 300
    assert all(0 <= r.class_index < 1000 and r.boxes for r in records)
    images, boxes = load_batch(DATA, records[:2], (224, 224))
    assert images.shape == (2, 3, 224, 224)
    for b in boxes:
        assert int(b.min()) >= 0 and int(b.max()) <= 223


def test_faithfulness_on_two_real_images(tmp_path):
    out = tmp_path / "out"
    result = faithfulness.run(["--data", str(DATA), "--out", str(out), "--n-images", "2", "--device", "cpu",
                               "--methods", "liftcam", "--steps", "3", "--no-progress"])
    assert result["computed"] == 2
    rows = read_csv(out / "faithfulness.csv")
    index = {r.file: r.class_index for r in load_index(DATA)}
    for row in rows:
        assert int(row["target"]) == index[row["image"]]
        assert 0.0 < float(row["pointing"]) <= 1.0
    # the pretrained model recognises at least one of the two
    assert max(float(r["Y"]) for r in rows) > 0.3
