"""Computation and pictures of the VQA page (``pages/3_VQA.py``, which holds layout only).

The page explains the Shapes-VQA model's answer to a question about a generated scene with every CAM
method, the question held fixed: the tail is F(A; q) = classifier(image_head(A) ∘ q) with the question
embedding q computed once (paper Sec. 4.4). A scene is a pure function of its seed, so the seed is the
scene's cache key (:func:`scene_key`). The model, the answer probabilities and the explanations come
from :mod:`appkit.compute`'s cached functions called with ``question=`` (one model per server process,
shared by every session; explanations cached by scene, question, method and target).
"""

from __future__ import annotations

import secrets

import numpy as np
import streamlit as st
import torch
from PIL import Image

import camlib
from camlib import metrics
from appkit.exports import activation_overlay, overlay_image
from appkit.format import finite
from camlib.vqa import scenes
from camlib.vqa.train import TEST_SEED_BASE

MODEL = "vqa_shapes"
#: Held-out scenes (never seen in training) that the model answers correctly, with 4-6 objects and
#: colour and relation questions: the page's examples.
EXAMPLE_SEEDS = (1_000_000_017, 1_000_000_024, 1_000_000_039, 1_000_000_130)
#: Generated questions offered per family (all of a family when it has fewer).
QUESTIONS_PER_FAMILY = 3
#: Every method camlib has (one that needs a linear tail says so in its cell: the VQA tail is nonlinear).
METHODS = tuple(camlib.list_methods())
#: Nearest-neighbour upscaling of the 128×128 scene for display.
DISPLAY_SCALE = 3
MAX_SEED = 2**32 - 1
#: Random scenes are drawn among the held-out seeds TEST_SEED_BASE + [0, RANDOM_RANGE).
RANDOM_RANGE = 10**8


def random_seed() -> int:
    """A fresh held-out scene seed, never a training scene's: TEST_SEED_BASE + U{0, ..., 10⁸ − 1}."""
    return TEST_SEED_BASE + secrets.randbelow(RANDOM_RANGE)


def scene_key(seed: int) -> str:
    """The image key of a scene in appkit's caches."""
    return f"vqa-scene:{int(seed)}"


@st.cache_data(show_spinner=False, max_entries=64)
def scene(seed: int) -> tuple[scenes.Scene, tuple[scenes.Question, ...]]:
    """The scene of ``seed`` and up to :data:`QUESTIONS_PER_FAMILY` generated questions per family
    (with answers and evidence masks). ValueError for a seed outside 0..MAX_SEED."""
    seed = int(seed)
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"the seed must be an integer in 0..{MAX_SEED}")
    generated = scenes.generate_scene(seed)
    return generated, tuple(scenes.generate_questions(generated, per_family=QUESTIONS_PER_FAMILY))


def scene_pil(scene_: scenes.Scene) -> Image.Image:
    """The 128×128 scene as the PIL image appkit's cached functions take (the model's input size,
    so it is not resized)."""
    return Image.fromarray(scene_.image)


def normalize_question(text: str) -> str:
    """The templates' words (``camlib.vqa.explainable.canonical_question``: lower case, single spaces,
    "color" -> "colour", ...) and one '?': the cache key of a question ('' if empty)."""
    from camlib.vqa.explainable import canonical_question

    words = canonical_question(text)
    return words + "?" if words else ""


def parse_question(model, text: str) -> tuple[str | None, str | None]:
    """``(normalised question, None)``, or ``(None, message)`` naming the unknown words and saying
    in words what is allowed (an empty question too); never raises."""
    try:
        model.question_tokens(str(text))
    except ValueError as exc:
        message = str(exc)
        return None, message[:1].upper() + message[1:]
    return normalize_question(text), None


def find_question(questions, text: str) -> scenes.Question | None:
    """The generated question with this text (its answer and evidence are known), else None."""
    key = normalize_question(text)
    return next((q for q in questions if q.text == key), None)


def upscale(image: np.ndarray, scale: int = DISPLAY_SCALE) -> np.ndarray:
    """Nearest-neighbour upscaling of an (H, W, 3) image, so the 128-pixel scene is visible."""
    return np.repeat(np.repeat(np.asarray(image), scale, axis=0), scale, axis=1)


def scene_view(image: np.ndarray, evidence: np.ndarray | None = None) -> np.ndarray:
    """The scene for display: upscaled, with the evidence mask's outline in white when given."""
    if evidence is not None:
        image = scenes.render_evidence(image, evidence)
    return upscale(image)


def heatmap_view(image: np.ndarray, saliency: np.ndarray, alpha: float,
                 evidence: np.ndarray | None = None) -> np.ndarray:
    """s(u(L)) blended over the scene (jet), the evidence outline on top, upscaled for display."""
    blended = overlay_image(Image.fromarray(image), saliency, alpha)
    return scene_view(blended, evidence)


def activation_view(image: np.ndarray, activation01: np.ndarray) -> np.ndarray:
    """One activation map (scaled to [0, 1]) over the scene (viridis), upscaled for display."""
    return upscale(activation_overlay(Image.fromarray(image), activation01))


def evidence_energy(saliency: np.ndarray, evidence: np.ndarray | None) -> float | None:
    """Share of the map's energy inside the evidence mask, Σ s·M / Σ s (Eq. 14 with the mask as the
    region); None without evidence (a "no" / "0" answer, or a typed question)."""
    if evidence is None or not np.any(evidence):
        return None
    sal = torch.from_numpy(np.clip(finite(saliency), 0, 1).astype(np.float32))[None]
    return float(metrics.energy_in_mask(sal, torch.from_numpy(np.asarray(evidence, dtype=bool))[None])[0])


def area_fraction(evidence: np.ndarray | None) -> float | None:
    """Share of the image inside the evidence mask: what a uniform map scores in :func:`evidence_energy`."""
    if evidence is None or not np.any(evidence):
        return None
    return float(np.mean(evidence))


def describe(scene_: scenes.Scene) -> str:
    """'red circle, blue square, ...' for the scene's caption."""
    return ", ".join(f"{o.colour} {o.shape}" for o in scene_.objects)
