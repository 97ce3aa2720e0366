"""Shapes-VQA: a tiny, fully known visual-question-answering world.

Every scene is a pure function of an integer seed: a 128x128 RGB image on a black
background with 2-6 non-overlapping flat-coloured objects (circle, square, triangle in
one of six colours).  Because the scene graph is known exactly, so is the evidence for
every templated question: each :class:`Question` carries the union of the masks of the
objects that hold its answer.

Question families (all text is lower-case, words separated by single spaces, ending
with ``?``):

``colour``   "what colour is the circle?" -- asked only when exactly one object has
             that shape.  Evidence: that object.
``shape``    "what shape is the red object?" -- asked only when exactly one object has
             that colour.  Evidence: that object.
``exist``    "is there a red circle?" -- yes/no, balanced 50/50.  Evidence: every object
             with that colour and shape; for a "no" answer the mask is empty and
             ``has_evidence`` is False.
``count``    "how many circles are there?" / "how many red objects are there?" --
             answers "0".."6".  Evidence: every counted object; for "0" the mask is
             empty and ``has_evidence`` is False.
``relation`` "what colour is the object left of the blue square?" (or "right of").
             The reference must be the only object with that colour and shape.  "The
             object left of R" is the *nearest object in x among those whose centre is
             at least* ``RELATION_MARGIN`` *pixels left of R's centre*.  The question is
             asked only when the answer is unambiguous: at least one object lies left
             of R, no other object's centre is within ``RELATION_MARGIN`` px of R's in x,
             and the runner-up is at least ``RELATION_MARGIN`` px further left than the
             answer object.  Mirror image for "right of".  Evidence: the reference and
             the answer object.

Everything in this module is immutable (tuples, frozen dataclasses); randomness comes
only from ``numpy.random.Generator`` objects seeded by the caller.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

# --------------------------------------------------------------------------- world
IMAGE_SIZE = 128
BACKGROUND = (0, 0, 0)
SHAPES = ("circle", "square", "triangle")
SHAPE_PLURALS = ("circles", "squares", "triangles")
COLOURS = ("red", "green", "blue", "yellow", "magenta", "cyan")
COLOUR_RGB = (
    (230, 40, 40),    # red
    (40, 190, 60),    # green
    (50, 90, 240),    # blue
    (240, 220, 40),   # yellow
    (215, 50, 215),   # magenta
    (40, 215, 225),   # cyan
)
MIN_OBJECTS, MAX_OBJECTS = 2, 6
MIN_RADIUS, MAX_RADIUS = 7, 14   # half-extent of an object's bounding box, pixels
OBJECT_GAP = 3                   # min. free pixels between two objects' bounding boxes
BORDER = 2                       # min. free pixels between a bounding box and the edge
RELATION_MARGIN = 8              # pixels, see module docstring
FAMILIES = ("colour", "shape", "exist", "count", "relation")

# --------------------------------------------------------------------------- language
PAD = "<pad>"
VOCAB = (PAD, "what", "colour", "shape", "is", "the", "object", "there", "a", "how",
         "many", "are", "left", "right", "of") + SHAPES + SHAPE_PLURALS + ("objects",) + COLOURS
"""Fixed vocabulary: every word of every template; index 0 is the padding token."""
ANSWERS = COLOURS + SHAPES + ("yes", "no") + tuple(str(i) for i in range(MAX_OBJECTS + 1))
"""Fixed answer list (the classifier's output order)."""
MAX_QUESTION_LEN = 10   # longest template: "what colour is the object left of the red circle"


@dataclass(frozen=True, eq=False)
class SceneObject:
    """One object of a scene graph.

    ``centre`` is (x, y) in pixels (x = column, y = row), ``size`` the half-extent of the
    (2*size+1)-pixel square bounding box, ``mask`` a (H, W) bool array.
    """

    shape: str
    colour: str
    centre: tuple[int, int]
    size: int
    mask: np.ndarray


@dataclass(frozen=True, eq=False)
class Scene:
    """A rendered scene: seed, (H, W, 3) uint8 image and its scene graph."""

    seed: int
    image: np.ndarray
    objects: tuple[SceneObject, ...]


@dataclass(frozen=True, eq=False)
class Question:
    """A templated question about a scene.

    ``tokens`` are the unpadded vocabulary ids of ``text``; ``evidence_objects`` the
    indices (into ``scene.objects``) whose masks form ``evidence_mask``;
    ``has_evidence`` is False exactly when that mask is empty ("no" / "0" answers).
    """

    text: str
    tokens: tuple[int, ...]
    answer: str
    family: str
    evidence_mask: np.ndarray
    evidence_objects: tuple[int, ...]
    has_evidence: bool

    @property
    def answer_id(self) -> int:
        """Index of the answer in :data:`ANSWERS`."""
        return ANSWERS.index(self.answer)


# --------------------------------------------------------------------------- scenes
def object_mask(shape: str, cx: int, cy: int, r: int, size: int = IMAGE_SIZE) -> np.ndarray:
    """Boolean (size, size) mask of a shape centred at pixel (cx, cy) with half-extent r.

    circle: distance to the centre <= r; square: side 2r+1; triangle: pointing up, apex at
    (cx, cy-r), base from (cx-r, cy+r) to (cx+r, cy+r).
    """
    yy, xx = np.mgrid[0:size, 0:size]
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (np.abs(dx) <= r) & (np.abs(dy) <= r)
    if shape == "triangle":
        return (np.abs(dy) <= r) & (2 * np.abs(dx) <= dy + r)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _boxes_clear(cx: int, cy: int, r: int, placed: Sequence[tuple[int, int, int]]) -> bool:
    """True when the box of (cx, cy, r) keeps OBJECT_GAP free pixels to every placed box."""
    for px, py, pr in placed:
        reach = r + pr + OBJECT_GAP
        if abs(cx - px) <= reach and abs(cy - py) <= reach:
            return False
    return True


def make_scene(objects: Iterable[tuple[str, str, tuple[int, int], int]], seed: int = -1) -> Scene:
    """Build and render a scene from explicit (shape, colour, (cx, cy), size) tuples.

    Raises ``ValueError`` if objects overlap or leave the image.
    """
    built = []
    occupied = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    for shape, colour, (cx, cy), r in objects:
        if colour not in COLOURS:
            raise ValueError(f"unknown colour {colour!r}; expected one of {COLOURS}")
        if not (0 <= cx - r and cx + r < IMAGE_SIZE and 0 <= cy - r and cy + r < IMAGE_SIZE):
            raise ValueError(f"object {shape} at {(cx, cy)} size {r} leaves the image")
        mask = object_mask(shape, int(cx), int(cy), int(r))
        if (mask & occupied).any():
            raise ValueError(f"object {shape} at {(cx, cy)} overlaps another object")
        occupied |= mask
        built.append(SceneObject(shape, colour, (int(cx), int(cy)), int(r), mask))
    return Scene(seed=seed, image=render(built), objects=tuple(built))


def generate_scene(seed: int) -> Scene:
    """Random scene, a pure function of ``seed`` (a non-negative int).

    2-6 objects, shape and colour uniform, size uniform in [MIN_RADIUS, MAX_RADIUS],
    positions uniform subject to OBJECT_GAP between bounding boxes (rejection sampling;
    a failed layout is redrawn from the same generator, so the result stays deterministic).
    """
    rng = np.random.default_rng(seed)
    while True:
        n = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
        placed: list[tuple[int, int, int]] = []
        specs = []
        for _ in range(n):
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            colour = COLOURS[int(rng.integers(len(COLOURS)))]
            for _attempt in range(100):
                r = int(rng.integers(MIN_RADIUS, MAX_RADIUS + 1))
                lo, hi = r + BORDER, IMAGE_SIZE - 1 - r - BORDER
                cx, cy = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
                if _boxes_clear(cx, cy, r, placed):
                    placed.append((cx, cy, r))
                    specs.append((shape, colour, (cx, cy), r))
                    break
            else:
                break  # could not place this object: redraw the whole layout
        if len(specs) == n:
            return make_scene(specs, seed=seed)


def render(objects: Iterable[SceneObject], size: int = IMAGE_SIZE) -> np.ndarray:
    """Paint objects onto the plain background; returns (size, size, 3) uint8."""
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    for obj in objects:
        image[obj.mask] = COLOUR_RGB[COLOURS.index(obj.colour)]
    return image


def render_evidence(image: np.ndarray, mask: np.ndarray, colour=(255, 255, 255)) -> np.ndarray:
    """Copy of ``image`` with the outline of the evidence ``mask`` drawn in ``colour``."""
    m = mask.astype(bool)
    interior = m.copy()
    interior[1:, :] &= m[:-1, :]
    interior[:-1, :] &= m[1:, :]
    interior[:, 1:] &= m[:, :-1]
    interior[:, :-1] &= m[:, 1:]
    out = image.copy()
    out[m & ~interior] = colour
    return out


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(H, W, 3) or (B, H, W, 3) uint8 -> (B, 3, H, W) float32 in [0, 1]."""
    arr = images[None] if images.ndim == 3 else images
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float().div_(255.0)


# --------------------------------------------------------------------------- language
def tokenize(text: str, vocab: Sequence[str] = VOCAB) -> torch.Tensor:
    """Question text -> 1-D LongTensor of vocabulary ids (no padding).

    Case-insensitive; one trailing "?" is optional.  Raises ``ValueError`` for an empty
    question or a word outside ``vocab`` (the message lists the vocabulary).
    """
    words = text.strip().lower().removesuffix("?").split()
    if not words:
        raise ValueError("empty question: expected words from the vocabulary "
                         f"{list(vocab[1:])}")
    index = {w: i for i, w in enumerate(vocab)}
    unknown = [w for w in words if w not in index or index[w] == 0]
    if unknown:
        raise ValueError(f"unknown word(s) {unknown} in question {text!r}; "
                         f"the vocabulary is {list(vocab[1:])}")
    return torch.tensor([index[w] for w in words], dtype=torch.long)


def pad_tokens(token_lists: Sequence[Sequence[int]], length: int = MAX_QUESTION_LEN) -> np.ndarray:
    """Right-pad id sequences with 0 to (N, length) int64; raises if one is too long."""
    out = np.zeros((len(token_lists), length), dtype=np.int64)
    for i, toks in enumerate(token_lists):
        if len(toks) > length:
            raise ValueError(f"question of {len(toks)} tokens exceeds length {length}")
        out[i, :len(toks)] = toks
    return out


# --------------------------------------------------------------------------- questions
def _question(scene: Scene, text: str, answer: str, family: str,
              evidence: Sequence[int]) -> Question:
    mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    for i in evidence:
        mask |= scene.objects[i].mask
    return Question(text=text, tokens=tuple(tokenize(text).tolist()), answer=answer,
                    family=family, evidence_mask=mask, evidence_objects=tuple(sorted(evidence)),
                    has_evidence=bool(evidence))


def _indices(scene: Scene, shape: str | None = None, colour: str | None = None) -> list[int]:
    return [i for i, o in enumerate(scene.objects)
            if (shape is None or o.shape == shape) and (colour is None or o.colour == colour)]


def relation_target(scene: Scene, ref: int, direction: str) -> int | None:
    """Index of "the object <direction> of" object ``ref``, or None when ambiguous/absent.

    See the module docstring for the exact definition (nearest in x beyond
    RELATION_MARGIN, unique by a RELATION_MARGIN gap, nothing within the margin band).
    """
    sign = -1 if direction == "left" else 1
    rx = scene.objects[ref].centre[0]
    offsets = [(sign * (o.centre[0] - rx), i) for i, o in enumerate(scene.objects) if i != ref]
    if any(d < RELATION_MARGIN for d, _ in offsets if d > -RELATION_MARGIN):
        return None   # an object sits in the ambiguous band around the reference
    ahead = sorted((d, i) for d, i in offsets if d >= RELATION_MARGIN)
    if not ahead:
        return None
    if len(ahead) > 1 and ahead[1][0] - ahead[0][0] < RELATION_MARGIN:
        return None
    return ahead[0][1]


def candidate_questions(scene: Scene, family: str, rng: np.random.Generator) -> list[Question]:
    """All askable questions of one family, in a random but seeded order.

    ``exist`` and ``count`` return answer-balanced candidates first (see
    :func:`generate_questions`).
    """
    objs = scene.objects
    out: list[Question] = []
    if family == "colour":
        for s in SHAPES:
            idx = _indices(scene, shape=s)
            if len(idx) == 1:
                out.append(_question(scene, f"what colour is the {s}?", objs[idx[0]].colour,
                                     family, idx))
    elif family == "shape":
        for c in COLOURS:
            idx = _indices(scene, colour=c)
            if len(idx) == 1:
                out.append(_question(scene, f"what shape is the {c} object?", objs[idx[0]].shape,
                                     family, idx))
    elif family == "exist":
        present = sorted({(o.colour, o.shape) for o in objs})
        absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
        pool = present if rng.random() < 0.5 else absent
        for c, s in pool:
            idx = _indices(scene, shape=s, colour=c)
            out.append(_question(scene, f"is there a {c} {s}?", "yes" if idx else "no",
                                 family, idx))
    elif family == "count":
        if rng.random() < 0.5:
            for s, plural in zip(SHAPES, SHAPE_PLURALS):
                idx = _indices(scene, shape=s)
                out.append(_question(scene, f"how many {plural} are there?", str(len(idx)),
                                     family, idx))
        else:
            present = sorted({o.colour for o in objs})
            # colours present in the scene 3 times out of 4, so that "0" does not dominate
            absent = [c for c in COLOURS if c not in present]
            pool = present if rng.random() < 0.75 or not absent else absent
            for c in pool:
                idx = _indices(scene, colour=c)
                out.append(_question(scene, f"how many {c} objects are there?", str(len(idx)),
                                     family, idx))
    elif family == "relation":
        for ref, o in enumerate(objs):
            if len(_indices(scene, shape=o.shape, colour=o.colour)) != 1:
                continue
            for direction in ("left", "right"):
                tgt = relation_target(scene, ref, direction)
                if tgt is not None:
                    out.append(_question(
                        scene, f"what colour is the object {direction} of the {o.colour} {o.shape}?",
                        objs[tgt].colour, family, [ref, tgt]))
    else:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def generate_questions(scene: Scene, rng: np.random.Generator | int | None = None,
                       per_family: int = 1,
                       families: Sequence[str] = FAMILIES) -> list[Question]:
    """Up to ``per_family`` distinct questions of each family about ``scene``.

    ``rng``: a numpy Generator, an int seed, or None (derived from ``scene.seed``).
    Families that cannot be asked about this scene (e.g. no uniquely-shaped object for
    ``colour``) are skipped.  ``exist`` draws yes/no with probability 1/2 each; ``count``
    asks about a shape or a colour with probability 1/2 each.  Each family draws its
    balancing coin once per call, so with ``per_family`` > 1 the questions of one
    family share the same coin.
    """
    if rng is None:
        rng = np.random.default_rng((max(scene.seed, 0), 7919))
    elif not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    out: list[Question] = []
    for family in families:
        out.extend(candidate_questions(scene, family, rng)[:per_family])
    return out


# --------------------------------------------------------------------------- datasets
@dataclass(frozen=True, eq=False)
class VQAArrays:
    """A generated data set as arrays.

    images (S, H, W, 3) uint8; questions (N, MAX_QUESTION_LEN) int64, 0-padded;
    answers (N,) int64 into ANSWERS; families (N,) int64 into FAMILIES; scene_index (N,)
    int64 into images; scene_seeds (S,) int64; evidence (N, H, W) bool or None;
    objects (S, MAX_OBJECTS, 5) int64 rows (shape id, colour id, cx, cy, size) of each
    scene graph, padded with rows of -1.
    """

    images: np.ndarray
    questions: np.ndarray
    answers: np.ndarray
    families: np.ndarray
    scene_index: np.ndarray
    scene_seeds: np.ndarray
    evidence: np.ndarray | None
    objects: np.ndarray


def build_dataset(scene_seeds: Iterable[int], question_seed: int = 0, per_family: int = 1,
                  with_evidence: bool = False) -> VQAArrays:
    """Generate scenes for ``scene_seeds`` and questions for each (seeded by
    ``(question_seed, scene_seed)``), returned as arrays (see :class:`VQAArrays`)."""
    seeds = [int(s) for s in scene_seeds]
    images = np.empty((len(seeds), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    objects = np.full((len(seeds), MAX_OBJECTS, 5), -1, dtype=np.int64)
    tokens, answers, families, scene_index, evidence = [], [], [], [], []
    for k, seed in enumerate(seeds):
        scene = generate_scene(seed)
        images[k] = scene.image
        for j, o in enumerate(scene.objects):
            objects[k, j] = (SHAPES.index(o.shape), COLOURS.index(o.colour), *o.centre, o.size)
        for q in generate_questions(scene, np.random.default_rng((question_seed, seed)),
                                    per_family=per_family):
            tokens.append(q.tokens)
            answers.append(q.answer_id)
            families.append(FAMILIES.index(q.family))
            scene_index.append(k)
            if with_evidence:
                evidence.append(q.evidence_mask)
    return VQAArrays(
        images=images,
        questions=pad_tokens(tokens),
        answers=np.asarray(answers, dtype=np.int64),
        families=np.asarray(families, dtype=np.int64),
        scene_index=np.asarray(scene_index, dtype=np.int64),
        scene_seeds=np.asarray(seeds, dtype=np.int64),
        evidence=np.stack(evidence) if with_evidence and evidence else None,
        objects=objects,
    )
