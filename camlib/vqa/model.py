"""VQANet: a small Antol et al. (2015)-style VQA model for the Shapes-VQA world.

Image path (``self.encoder`` then ``self.image_head``) and question path
(``self.embedding`` / ``self.lstm`` / ``self.question_fc``) run in parallel, are fused by
an element-wise product and classified by an MLP::

    image (B,3,128,128) in [0,1]
      -> encoder: PixelNorm, AddCoords (+2 channels), 4 x [conv3x3 s2, BN, ReLU],
                  conv3x3 s1, BN, ReLU                    -> CAM layer "encoder", (B,64,8,8)
      -> image_head: Flatten, Linear(64*8*8, D), BatchNorm1d, ReLU -> v (B,D)
    question (B,T) long, 0 = pad
      -> embedding, LSTM, output at the last non-pad token (torch.gather)
      -> question_fc: Linear(H, D), tanh                  -> q (B,D)
    v * q -> classifier: Linear(D, D), ReLU, Linear(D, n_answers) -> logits

The CAM layer is the output of ``model.encoder`` (its last module, ``encoder.16``, is an
``nn.ReLU``; in a ``torch.fx`` graph the node is ``encoder_16``).
Everything after it depends only on that output and on the question path, and the
forward pass is ``torch.fx.symbolic_trace``-able (no data-dependent Python control flow).
"""
from __future__ import annotations

from types import MappingProxyType

import torch
from torch import nn

from . import scenes

CODE_VERSION = "shapes-vqa-net-1"
"""Bumped whenever a change to this file or to the Shapes-VQA world invalidates weights."""

CAM_LAYER = "encoder"
"""Qualified module name of the CAM layer (output shape (B, channels[-1], 8, 8))."""

DEFAULT_HPARAMS = MappingProxyType({
    "image_size": scenes.IMAGE_SIZE,
    "channels": (16, 32, 64, 64),   # one stride-2 stage each; the last is repeated once at s1
    "embed_dim": 64,
    "lstm_hidden": 128,
    "fused_dim": 256,
    "classifier_hidden": 256,
    "coord_channels": True,
})
"""Read-only default hyper-parameters of :func:`build_model`."""


class PixelNorm(nn.Module):
    """(x - mean) / std per channel with constant (non-persistent) buffers."""

    def __init__(self, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class AddCoords(nn.Module):
    """Concatenate two constant channels holding x and y in [-1, 1] (CoordConv)."""

    def __init__(self, size: int):
        super().__init__()
        lin = torch.linspace(-1.0, 1.0, size)
        yy, xx = torch.meshgrid(lin, lin, indexing="ij")
        self.register_buffer("coords", torch.stack([xx, yy])[None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        coords = torch.zeros_like(x[:, :2]) + self.coords   # broadcast to (B, 2, H, W)
        return torch.cat([x, coords], dim=1)


def _conv_block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out), nn.ReLU()]


class VQANet(nn.Module):
    """Antol-style VQA net; ``forward(image, question) -> logits (B, n_answers)``.

    Args:
        n_words: vocabulary size (id 0 is padding).
        n_answers: number of answer classes.
        image_size, channels, embed_dim, lstm_hidden, fused_dim, classifier_hidden,
        coord_channels: see :data:`DEFAULT_HPARAMS`.
    """

    def __init__(self, n_words: int = len(scenes.VOCAB), n_answers: int = len(scenes.ANSWERS),
                 image_size: int = scenes.IMAGE_SIZE, channels=(16, 32, 64, 64),
                 embed_dim: int = 64, lstm_hidden: int = 128, fused_dim: int = 256,
                 classifier_hidden: int = 256, coord_channels: bool = True):
        super().__init__()
        layers: list[nn.Module] = [PixelNorm()]
        c_in = 3
        if coord_channels:
            layers.append(AddCoords(image_size))
            c_in += 2
        for c_out in channels:
            layers += _conv_block(c_in, c_out, stride=2)
            c_in = c_out
        layers += _conv_block(c_in, c_in, stride=1)
        self.encoder = nn.Sequential(*layers)
        cam_size = image_size // 2 ** len(channels)
        self.cam_shape = (c_in, cam_size, cam_size)

        self.image_head = nn.Sequential(
            nn.Flatten(), nn.Linear(c_in * cam_size * cam_size, fused_dim),
            nn.BatchNorm1d(fused_dim), nn.ReLU())
        self.embedding = nn.Embedding(n_words, embed_dim, padding_idx=0)
        self.lstm = nn.LSTM(embed_dim, lstm_hidden, batch_first=True)
        self.question_fc = nn.Sequential(nn.Linear(lstm_hidden, fused_dim), nn.Tanh())
        self.classifier = nn.Sequential(
            nn.Linear(fused_dim, classifier_hidden), nn.ReLU(),
            nn.Linear(classifier_hidden, n_answers))

    def encode_question(self, question: torch.Tensor) -> torch.Tensor:
        """(B, T) long, right-padded with 0 -> (B, fused_dim) question embedding.

        Takes the LSTM output at the last non-pad token (index ``length - 1``, found with
        ``torch.gather``; no packing), so it is independent of padding and of the image.
        """
        out, _ = self.lstm(self.embedding(question))              # (B, T, H)
        last = ((question != 0).sum(dim=1) - 1).clamp(min=0)      # (B,)
        index = last.view(-1, 1, 1).expand(-1, 1, out.shape[2])   # (B, 1, H)
        return self.question_fc(out.gather(1, index).squeeze(1))

    def answer(self, cam: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Tail of the network: CAM-layer activations (B, C, 8, 8) and question
        embedding (B, D) -> logits (B, n_answers)."""
        return self.classifier(self.image_head(cam) * q)

    def forward(self, image: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        """image (B, 3, H, W) float in [0, 1]; question (B, T) long -> logits (B, n_answers)."""
        return self.answer(self.encoder(image), self.encode_question(question))


def build_model(hparams: dict | None = None) -> VQANet:
    """VQANet from a hyper-parameter dict (as stored in ``vqa_shapes.json``); missing
    keys take :data:`DEFAULT_HPARAMS`, unknown keys raise ``ValueError``."""
    unknown = set(hparams or {}) - set(DEFAULT_HPARAMS)
    if unknown:
        raise ValueError(f"unknown VQANet hyper-parameters {sorted(unknown)}; "
                         f"expected keys of {sorted(DEFAULT_HPARAMS)}")
    hp = {**DEFAULT_HPARAMS, **(hparams or {})}
    return VQANet(n_words=len(scenes.VOCAB), n_answers=len(scenes.ANSWERS),
                  image_size=hp["image_size"], channels=tuple(hp["channels"]),
                  embed_dim=hp["embed_dim"], lstm_hidden=hp["lstm_hidden"],
                  fused_dim=hp["fused_dim"], classifier_hidden=hp["classifier_hidden"],
                  coord_channels=hp["coord_channels"])
