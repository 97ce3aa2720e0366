"""Shapes-VQA: a small VQA world with exact evidence masks, and a VQANet trained on it.

* :mod:`camlib.vqa.scenes` -- seeded scene / question generator, vocabulary, tokenizer.
* :mod:`camlib.vqa.model`  -- ``VQANet`` (Antol et al. style); CAM layer ``encoder``.
* :mod:`camlib.vqa.train`  -- ``python -m camlib.vqa.train`` writes ``camlib/assets/vqa/``.

Typical use::

    model, meta = load_vqa()
    scene = scenes.generate_scene(1_000_000_123)
    logits = model(scenes.to_tensor(scene.image), encode_question("what colour is the circle?", meta))
    answer = answer_names(meta)[int(logits.argmax())]

See docs/VQA.md.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from . import scenes
from .model import CAM_LAYER, CODE_VERSION, VQANet, build_model

ASSET_DIR = Path(__file__).resolve().parents[1] / "assets" / "vqa"
"""Directory of the committed weights (``vqa_shapes.pt``) and metadata (``vqa_shapes.json``)."""

__all__ = ["load_vqa", "encode_question", "answer_names", "VQANet", "VQAWeightsError", "build_model",
           "CAM_LAYER", "CODE_VERSION", "ASSET_DIR", "scenes"]


class VQAWeightsError(RuntimeError):
    """The stored weights / metadata do not match the current code."""


def load_vqa(device: str | torch.device | None = None,
             directory: str | Path | None = None) -> tuple[VQANet, dict]:
    """Load the trained Shapes-VQA model and its metadata.

    Reads ``vqa_shapes.json`` and ``vqa_shapes.pt`` from ``directory`` (default
    :data:`ASSET_DIR`), checks the code version, vocabulary, answers and every tensor
    shape against the current code, and returns ``(model, meta)`` with the model in
    eval mode on ``device`` (default CPU) and all parameters ``requires_grad_(False)``.

    Raises ``FileNotFoundError`` if the files are missing and :class:`VQAWeightsError`
    if they do not match the code (retrain with ``python -m camlib.vqa.train``).
    """
    directory = Path(directory) if directory is not None else ASSET_DIR
    meta_path, weights_path = directory / "vqa_shapes.json", directory / "vqa_shapes.pt"
    for path in (meta_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; train it with "
                                    f"`python -m camlib.vqa.train --out {directory}`")
    meta = json.loads(meta_path.read_text())
    retrain = "; retrain with `python -m camlib.vqa.train`"
    if meta.get("code_version") != CODE_VERSION:
        raise VQAWeightsError(f"{weights_path} was trained with code version "
                              f"{meta.get('code_version')!r}, this code is {CODE_VERSION!r}{retrain}")
    if tuple(meta.get("vocab", ())) != scenes.VOCAB:
        raise VQAWeightsError(f"vocabulary in {meta_path} differs from scenes.VOCAB{retrain}")
    if tuple(meta.get("answers", ())) != scenes.ANSWERS:
        raise VQAWeightsError(f"answer list in {meta_path} differs from scenes.ANSWERS{retrain}")
    try:
        model = build_model(meta["hparams"])
    except (KeyError, TypeError, ValueError) as exc:
        raise VQAWeightsError(f"bad hyper-parameters in {meta_path}: {exc}{retrain}") from exc
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    expected = model.state_dict()
    problems = sorted(set(expected) ^ set(state))
    problems += [f"{k}: stored {tuple(v.shape)} vs code {tuple(expected[k].shape)}"
                 for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    if problems:
        raise VQAWeightsError(f"{weights_path} does not match VQANet: {problems[:10]}{retrain}")
    model.load_state_dict(state)
    model.eval().requires_grad_(False)
    return model.to(device if device is not None else "cpu"), meta


def encode_question(text: str, meta: dict | None = None) -> torch.Tensor:
    """Question text -> (1, T) LongTensor of vocabulary ids (``meta['vocab']`` if given).

    Raises ``ValueError`` for an empty question or unknown words (see
    :func:`scenes.tokenize`).
    """
    vocab = tuple(meta["vocab"]) if meta is not None else scenes.VOCAB
    return scenes.tokenize(text, vocab)[None]


def answer_names(meta: dict | None = None) -> list[str]:
    """Answer strings in classifier-output order."""
    return list(meta["answers"]) if meta is not None else list(scenes.ANSWERS)
