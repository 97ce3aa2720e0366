"""Benchmark data: a folder of images with an ``index.csv`` in the imagenet-val-dev format.

``index.csv`` has one row per ground-truth box::

    file,class_index,class_name,xmin,ymin,xmax,ymax
    images/ILSVRC2012_val_00000347.JPEG,472,canoe,9.1,105.9,50.4,176.8

``file`` is relative to the folder; ``class_index`` is the 0-999 ImageNet index (torchvision's
order); boxes are inclusive pixel corners in the coordinates of the image *as stored* (x to the
right, y downwards). An image with several objects has several rows; rows of one file must agree
on the class. A row with empty box fields gives an image without boxes (pointing game = 0).

:func:`load_index` groups the rows into :class:`Record` s, :func:`select` picks the images a run
uses (first N, or a seeded random subset whose order is the draw order, so a run with a larger N
extends a smaller one), and :func:`load_batch` reads a batch at the model's input size with the
boxes mapped to it (plain resize, as :func:`camlib.metrics.scale_boxes`).
"""

from __future__ import annotations

import csv
import dataclasses
import pathlib
from typing import Sequence

import torch

INDEX_NAME = "index.csv"
REQUIRED_COLUMNS = ("file", "class_index", "class_name", "xmin", "ymin", "xmax", "ymax")


class DataError(ValueError):
    """The data folder or its index file is missing or malformed."""


@dataclasses.dataclass(frozen=True)
class Record:
    """One image: its path relative to the data folder (the benchmark's image key), its
    ground-truth class and its boxes (n, 4) in the stored image's pixel coordinates."""

    file: str
    class_index: int
    class_name: str
    boxes: tuple[tuple[float, float, float, float], ...]


def load_index(root: str | pathlib.Path) -> list[Record]:
    """The images of ``root/index.csv`` in order of first appearance."""
    root = pathlib.Path(root)
    index = root / INDEX_NAME
    if not index.is_file():
        raise DataError(f"{index} does not exist: --data must be a folder containing {INDEX_NAME}")
    records: dict[str, dict] = {}
    with open(index, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{index} lacks the columns {', '.join(missing)} "
                            f"(expected {','.join(REQUIRED_COLUMNS)})")
        for line, row in enumerate(reader, start=2):
            file = (row["file"] or "").strip()
            if not file:
                raise DataError(f"{index}:{line}: empty file name")
            try:
                cls = int(row["class_index"])
            except (TypeError, ValueError):
                raise DataError(f"{index}:{line}: class_index {row['class_index']!r} is not an integer") from None
            entry = records.setdefault(file, {"class_index": cls, "class_name": row["class_name"] or "",
                                              "boxes": []})
            if entry["class_index"] != cls:
                raise DataError(f"{index}:{line}: {file} has two classes ({entry['class_index']} and {cls})")
            coords = [row[c] for c in ("xmin", "ymin", "xmax", "ymax")]
            if all(c is None or c.strip() == "" for c in coords):
                continue
            try:
                box = tuple(float(c) for c in coords)
            except (TypeError, ValueError):
                raise DataError(f"{index}:{line}: box {coords} is not four numbers") from None
            if not (box[0] <= box[2] and box[1] <= box[3]):
                raise DataError(f"{index}:{line}: box {box} needs xmin <= xmax and ymin <= ymax")
            entry["boxes"].append(box)
    if not records:
        raise DataError(f"{index} lists no images")
    return [Record(file, e["class_index"], e["class_name"], tuple(e["boxes"])) for file, e in records.items()]


def select(records: Sequence[Record], n: int | None = None, seed: int | None = None) -> list[Record]:
    """The images of a run: the first ``n`` (``seed`` None) or the first ``n`` of a random
    permutation drawn with ``seed`` (so the subsets for growing ``n`` are nested)."""
    records = list(records)
    if seed is not None:
        order = torch.randperm(len(records), generator=torch.Generator().manual_seed(int(seed))).tolist()
        records = [records[i] for i in order]
    if n is not None:
        if n < 1:
            raise ValueError(f"--n-images must be at least 1, got {n}")
        records = records[:n]
    return records


def load_batch(root: str | pathlib.Path, records: Sequence[Record], input_size: tuple[int, int]):
    """``(images (B, 3, H, W) in [0, 1], boxes)`` at ``input_size`` = (H, W); ``boxes[i]`` is a
    (n_i, 4) long tensor of inclusive pixel boxes in the resized image."""
    from camlib.images import load_image, to_tensor01
    from camlib.metrics import scale_boxes

    root = pathlib.Path(root)
    images, boxes = [], []
    for record in records:
        path = root / record.file
        if not path.is_file():
            raise DataError(f"{path} (listed in {root / INDEX_NAME}) does not exist")
        image = load_image(path)
        images.append(to_tensor01(image, input_size))
        hw = (image.height, image.width)
        if record.boxes:
            boxes.append(scale_boxes(torch.tensor(record.boxes, dtype=torch.float64), hw, input_size))
        else:
            boxes.append(torch.zeros(0, 4, dtype=torch.long))
    return torch.stack(images), boxes
