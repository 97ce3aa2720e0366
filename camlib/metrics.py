"""Faithfulness and localisation metrics of LIFT-CAM (Jung & Oh, ICCV 2021).

Every metric of the paper's evaluation, written against plain tensors so that it
never imports the CAM engine:

* Sec. 4.1 / 4.3.2 -- explanation images (Eq. 10), Increase in Confidence
  (IC, Eq. 11), Average Drop (AD, Eq. 12), Average Drop in Deletion (ADD, Eq. 13):
  :func:`explanation_images`, :func:`confidence_scores`, :func:`aggregate_confidence`.
* Sec. 4.3.2 -- insertion / deletion probability curves and their AUC:
  :func:`insertion_deletion`, :func:`top_fraction_mask`, :func:`auc`.
* Both at once for many maps (several methods' maps of the same images), each
  derived image through the network once: :func:`score_maps` (what the
  benchmarks use).
* Sec. 4.3.3 -- energy-based pointing game (Eq. 14):
  :func:`energy_pointing_game`, :func:`boxes_to_mask`, :func:`scale_boxes`, and
  :func:`energy_in_mask` for pixel masks (Shapes-VQA's exact evidence).
* Sec. 4.2 -- cosine similarity of coefficient vectors (Table 2):
  :func:`cosine_similarity`.
* Aggregation with a 95 % confidence interval (quantiles from scipy.stats):
  :func:`summarize`.

Conventions shared by all functions
-----------------------------------
``images``    (B, 3, H, W) float, pixel space in [0, 1] -- *before* the model's
              mean/std normalisation.
``saliency``  (B, H, W) (or (B, 1, H, W)) float in [0, 1]: the paper's
              ``s(u(L))``, i.e. the CAM already upsampled to the image size and
              min-max normalised.  Non-finite values raise ``ValueError``; values
              outside [0, 1] by more than 1e-4 raise, smaller excursions (rounding)
              are clamped.
``target``    (B,) integer class index (a Python int is broadcast to all images).
``logits_fn`` callable mapping a batch of pixel-space images (N, 3, H, W) in
              [0, 1] to logits (N, n_classes).  It must act *row-wise and
              identically on every row* (row i of the output depends only on row
              i of the input), because the metrics evaluate many derived images
              of different source images in one call.  For VQA this means the
              question is fixed inside ``logits_fn``; with a different question
              per image, call the metric once per (image, question) with B = 1.
              Probabilities are ``softmax(logits.float())`` (float32).

All work happens on the device of ``images`` inside ``torch.inference_mode()``;
model evaluations are chunked into calls of at most ``batch_size`` images, and an
optional ``progress(fraction_done)`` callback is invoked after every chunk.
Results are float32 and never NaN (see each function for the guarded cases).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence, Union

import torch
from torch import Tensor

from camlib.devices import network_batch, network_input

__all__ = [
    "ConfidenceScores",
    "InsertionDeletion",
    "MapScores",
    "Summary",
    "explanation_images",
    "confidence_scores",
    "aggregate_confidence",
    "top_fraction_mask",
    "insertion_deletion",
    "auc",
    "score_maps",
    "boxes_to_mask",
    "scale_boxes",
    "energy_pointing_game",
    "energy_in_mask",
    "cosine_similarity",
    "summarize",
]

LogitsFn = Callable[[Tensor], Tensor]
ProgressFn = Callable[[float], None]
BoxesLike = Union[Tensor, Sequence]

#: Lower clamp of the denominator Y in Eqs. 12-13 (guards Y == 0).
Y_MIN = 1e-12
#: Tolerance for saliency values slightly outside [0, 1] before clamping.
_SALIENCY_TOL = 1e-4


# --------------------------------------------------------------------------- #
# input checking / shared machinery
# --------------------------------------------------------------------------- #
def _check_images(images: Tensor) -> Tensor:
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a (B, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    if images.shape[0] == 0:
        raise ValueError("empty batch: images has B = 0")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1], got dtype {images.dtype}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images contain NaN or Inf")
    return images


def _check_saliency(saliency: Tensor, like: Tensor | None = None) -> Tensor:
    """Return ``saliency`` as (B, H, W) float clamped to [0, 1]; validate it."""
    if not isinstance(saliency, Tensor):
        raise ValueError("saliency must be a tensor")
    if saliency.dim() == 4 and saliency.shape[1] == 1:
        saliency = saliency[:, 0]
    if saliency.dim() != 3:
        raise ValueError(f"saliency must be (B, H, W) or (B, 1, H, W), got {tuple(saliency.shape)}")
    if saliency.shape[0] == 0:
        raise ValueError("empty batch: saliency has B = 0")
    if like is not None:
        expected = (like.shape[0], like.shape[2], like.shape[3])
        if tuple(saliency.shape) != expected:
            raise ValueError(f"saliency shape {tuple(saliency.shape)} does not match images (B, H, W) = {expected}")
        saliency = saliency.to(device=like.device, dtype=like.dtype)
    elif not saliency.is_floating_point():
        saliency = saliency.float()
    if not bool(torch.isfinite(saliency).all()):
        raise ValueError("saliency contains NaN or Inf (is the min-max normalisation guarded for constant maps?)")
    lo, hi = float(saliency.min()), float(saliency.max())
    if lo < -_SALIENCY_TOL or hi > 1.0 + _SALIENCY_TOL:
        raise ValueError(f"saliency must be min-max normalised to [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    return saliency.clamp(0.0, 1.0)


def _check_target(target: Union[Tensor, int], batch: int, device: torch.device) -> Tensor:
    target = torch.as_tensor(target, device=device)
    if target.is_floating_point() or target.is_complex():
        raise ValueError(f"target must hold integer class indices, got dtype {target.dtype}")
    target = target.to(torch.long).reshape(-1)
    if target.numel() == 1 and batch > 1:
        target = target.expand(batch)
    if target.numel() != batch:
        raise ValueError(f"target has {target.numel()} entries for a batch of {batch} images")
    return target


def _check_batch_size(batch_size: int | None, device: torch.device) -> int:
    """``None``: the device's fastest batch per image (:func:`camlib.devices.network_batch`)."""
    if batch_size is None:
        return network_batch(device)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return int(batch_size)


def _class_probs(logits_fn: LogitsFn, chunk: Tensor, device: torch.device) -> Tensor:
    """``softmax(logits_fn(chunk).float())`` (N, n_classes) on ``device``, the logits checked."""
    logits = logits_fn(network_input(chunk))
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != chunk.shape[0]:
        raise ValueError(
            f"logits_fn must return (N, n_classes) logits for N = {chunk.shape[0]} images, "
            f"got {getattr(logits, 'shape', type(logits))}"
        )
    logits = logits.to(device=device, dtype=torch.float32)
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("logits_fn returned NaN or Inf logits")
    return torch.softmax(logits, dim=1)


def _check_target_range(target: Tensor, n_classes: int) -> None:
    if int(target.min()) < 0 or int(target.max()) >= n_classes:
        raise ValueError(f"target index out of range for {n_classes} classes")


def _target_probs(
    logits_fn: LogitsFn,
    make_chunk: Callable[[Tensor], tuple[Tensor, Tensor]],
    n_items: int,
    device: torch.device,
    batch_size: int,
    progress: ProgressFn | None,
) -> Tensor:
    """Softmax probability of the target for ``n_items`` lazily built images.

    ``make_chunk(idx)`` returns ``(images, target)`` for the flat item indices
    ``idx`` (a 1-D long tensor); at most ``batch_size`` images exist at a time.
    """
    out = torch.empty(n_items, dtype=torch.float32, device=device)
    for start in range(0, n_items, batch_size):
        end = min(start + batch_size, n_items)
        idx = torch.arange(start, end, device=device)
        chunk, tgt = make_chunk(idx)
        probs = _class_probs(logits_fn, chunk, device)
        _check_target_range(tgt, probs.shape[1])
        out[idx] = probs.gather(1, tgt[:, None])[:, 0]
        if progress is not None:
            progress(end / n_items)
    return out


# --------------------------------------------------------------------------- #
# Sec. 4.1: explanation images, IC / AD / ADD
# --------------------------------------------------------------------------- #
@torch.inference_mode()
def explanation_images(images: Tensor, saliency: Tensor) -> tuple[Tensor, Tensor]:
    """Explanation image and its complement (Eq. 10).

    .. math::
        e = s(u(L)) \\circ x \\qquad (10), \\qquad
        e_{inv} = (1 - s(u(L))) \\circ x

    The Hadamard product is taken in *pixel space* ``[0, 1]``, before the
    model's mean/std normalisation (which ``logits_fn`` applies).  Hence a
    removed pixel (saliency 0 in ``e``, saliency 1 in ``e_inv``) becomes black
    (0), not the dataset mean.  The paper does not say which space it uses; this
    is the reading of the Grad-CAM++ / Score-CAM evaluation code it follows.
    The same (B, H, W) map multiplies all colour channels.

    Args:
        images: (B, 3, H, W) in [0, 1].
        saliency: (B, H, W) ``s(u(L))`` in [0, 1].

    Returns:
        ``(e, e_inv)``, both (B, 3, H, W) with the dtype/device of ``images``.
    """
    images = _check_images(images)
    sal = _check_saliency(saliency, like=images)[:, None]
    return sal * images, (1.0 - sal) * images


@dataclass(frozen=True)
class ConfidenceScores:
    """Per-image softmax probabilities and per-image terms of Eqs. 11-13.

    All fields are float32 tensors of shape (B,).  ``Y``, ``O``, ``D`` are the
    target softmax probabilities on ``x``, ``e`` and ``e_inv``; ``ic``, ``ad``,
    ``add`` are the per-image summands of IC, AD, ADD as *fractions* (the paper's
    means multiply them by 100; see :func:`aggregate_confidence`).
    """

    Y: Tensor
    O: Tensor  # noqa: E741 - the paper's symbol
    D: Tensor
    ic: Tensor
    ad: Tensor
    add: Tensor

    def __len__(self) -> int:
        return int(self.Y.shape[0])

    @classmethod
    def cat(cls, parts: Sequence["ConfidenceScores"]) -> "ConfidenceScores":
        """Concatenate the scores of several batches (e.g. over a dataset)."""
        if len(parts) == 0:
            raise ValueError("nothing to concatenate")
        fields = ("Y", "O", "D", "ic", "ad", "add")
        device = parts[0].Y.device
        return cls(**{f: torch.cat([getattr(p, f).to(device) for p in parts]) for f in fields})


@torch.inference_mode()
def confidence_scores(
    logits_fn: LogitsFn,
    images: Tensor,
    saliency: Tensor,
    target: Union[Tensor, int],
    batch_size: int | None = None,
    progress: ProgressFn | None = None,
) -> ConfidenceScores:
    """Per-image IC, AD and ADD terms (Eqs. 11-13).

    With ``Y = p_c(x)``, ``O = p_c(e)``, ``D = p_c(e_inv)`` the target (``c``)
    softmax probabilities on the image, the explanation image and its
    complement (Eq. 10, see :func:`explanation_images`):

    .. math::
        ic  = \\mathbf{1}[Y < O]                  \\qquad (11)\\\\
        ad  = \\max(0, Y - O) / Y                 \\qquad (12)\\\\
        add = (Y - D) / Y                         \\qquad (13)

    Choices the paper leaves open:

    * ``1[Y < O]`` is a strict inequality (a tie counts as no increase).
    * ``add`` is *not* clipped: ``D > Y`` gives a negative term, as Eq. 13 says.
    * ``Y = 0`` (target probability underflowing float32) would divide by zero;
      the denominator is clamped to ``Y_MIN = 1e-12``.  Then ``ad = 0`` and
      ``add = -D / 1e-12`` (finite, possibly huge): such an image says the target
      is not predicted at all, which the paper's protocol (target = predicted
      class, so ``Y >= 1 / n_classes``) never produces.
    * ``target`` is whatever the caller passes (the paper uses the predicted
      class); ``x``, ``e`` and ``e_inv`` are all scored for that same class.

    Args:
        logits_fn: pixel-space images (N, 3, H, W) -> logits (N, n_classes).
        images: (B, 3, H, W) in [0, 1].
        saliency: (B, H, W) ``s(u(L))`` in [0, 1].
        target: (B,) class indices (or one int for all images).
        batch_size: maximum number of images per ``logits_fn`` call
            (3B images are evaluated in total); default: the device's fastest
            (:func:`camlib.devices.network_batch`).
        progress: optional callback receiving the fraction done in (0, 1].

    Returns:
        :class:`ConfidenceScores` with (B,) float32 tensors.
    """
    images = _check_images(images)
    sal = _check_saliency(saliency, like=images)
    batch = images.shape[0]
    tgt = _check_target(target, batch, images.device)
    batch_size = _check_batch_size(batch_size, images.device)

    # flat item j -> image j // 3, variant j % 3 (0: x, 1: e, 2: e_inv)
    def make_chunk(idx: Tensor) -> tuple[Tensor, Tensor]:
        b, variant = idx // 3, idx % 3
        s = sal[b]
        one = torch.ones_like(s)
        factor = torch.where((variant == 0)[:, None, None], one, torch.where((variant == 1)[:, None, None], s, one - s))
        return factor[:, None] * images[b], tgt[b]

    probs = _target_probs(logits_fn, make_chunk, 3 * batch, images.device, batch_size, progress).view(batch, 3)
    return _confidence_terms(*probs.unbind(1))


def _confidence_terms(y: Tensor, o: Tensor, d: Tensor) -> ConfidenceScores:
    """Eqs. 11-13 from the target probabilities on x, e and e_inv (see :func:`confidence_scores`)."""
    denom = y.clamp_min(Y_MIN)
    return ConfidenceScores(
        Y=y.clone(),
        O=o.clone(),
        D=d.clone(),
        ic=(y < o).float(),
        ad=(y - o).clamp_min(0.0) / denom,
        add=(y - d) / denom,
    )


# --------------------------------------------------------------------------- #
# aggregation
# --------------------------------------------------------------------------- #
class Summary(NamedTuple):
    """Mean and two-sided confidence interval, already multiplied by ``scale``."""

    mean: float
    ci_low: float
    ci_high: float


def summarize(
    values: Union[Tensor, Sequence[float]],
    scale: float = 100.0,
    method: str = "t",
    confidence: float = 0.95,
) -> Summary:
    """Mean and a two-sided ``confidence`` (default 95 %) interval, times ``scale``.

    Methods:

    * ``"t"`` (default): Student-t interval ``m +- t_{(1+conf)/2, n-1} * sd / sqrt(n)``
      with the unbiased sample standard deviation (``ddof = 1``) and the quantile
      ``scipy.stats.t.ppf``.  For ``n = 1`` the spread is undefined and the
      interval degenerates to ``(m, m)`` (never NaN).
    * ``"normal"``: the same with the normal quantile ``z = scipy.stats.norm.ppf``
      (1.95996 at 95 %).
    * ``"wilson"``: Wilson score interval for a proportion; ``values`` must be
      0/1 (e.g. the per-image IC indicators):
      ``(p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)``.

    ``scale = 100`` reports percentages as the paper prints IC, AD, ADD
    (Tables 1, 3, 6) and the pointing-game proportion (Table 5); use
    ``scale = 1`` for insertion/deletion AUCs (Table 4 prints fractions).

    Raises ``ValueError`` for an empty input or non-finite values.
    """
    from scipy import stats  # imported here: ~1 s, and only the aggregation needs it

    x = torch.as_tensor(values, dtype=torch.float64).detach().reshape(-1).cpu()
    n = x.numel()
    if n == 0:
        raise ValueError("summarize() needs at least one value")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("summarize() got NaN or Inf values")
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be in (0, 1)")
    p_upper = 0.5 + confidence / 2.0
    mean = float(x.mean())

    if method == "wilson":
        if not bool(((x == 0) | (x == 1)).all()):
            raise ValueError("the Wilson interval needs 0/1 values")
        z = float(stats.norm.ppf(p_upper))
        denom = 1.0 + z * z / n
        centre = (mean + z * z / (2 * n)) / denom
        half = z / denom * math.sqrt(mean * (1.0 - mean) / n + z * z / (4 * n * n))
        low, high = max(0.0, centre - half), min(1.0, centre + half)
    elif method in ("t", "normal"):
        if n == 1:
            low = high = mean
        else:
            sem = float(x.std(correction=1)) / math.sqrt(n)
            q = float(stats.t.ppf(p_upper, n - 1) if method == "t" else stats.norm.ppf(p_upper))
            low, high = mean - q * sem, mean + q * sem
    else:
        raise ValueError(f"unknown method {method!r}; use 't', 'normal' or 'wilson'")
    return Summary(mean * scale, low * scale, high * scale)


def aggregate_confidence(
    scores: Union[ConfidenceScores, Sequence[ConfidenceScores]],
    confidence: float = 0.95,
) -> dict[str, Summary]:
    """The paper's IC, AD and ADD in percent (Eqs. 11-13), with CIs.

    ``IC = 100/N sum 1[Y < O]`` with a Wilson interval (binary terms);
    ``AD = 100/N sum max(0, Y - O)/Y`` and ``ADD = 100/N sum (Y - D)/Y`` with
    Student-t intervals.  ``scores`` may be a list of per-batch results.

    Returns ``{"IC": Summary, "AD": Summary, "ADD": Summary}``.
    """
    if not isinstance(scores, ConfidenceScores):
        scores = ConfidenceScores.cat(list(scores))
    return {
        "IC": summarize(scores.ic, 100.0, method="wilson", confidence=confidence),
        "AD": summarize(scores.ad, 100.0, method="t", confidence=confidence),
        "ADD": summarize(scores.add, 100.0, method="t", confidence=confidence),
    }


# --------------------------------------------------------------------------- #
# Sec. 4.3.2: insertion / deletion
# --------------------------------------------------------------------------- #
def _num_kept(delta: float, n_pixels: int) -> int:
    """``round(delta * n_pixels)`` with halves rounded up, clipped to [0, n]."""
    # +1e-9 absorbs the representation error of grid values such as 0.025 * k,
    # so an exact half (e.g. 0.025 * 20 = 0.5) rounds up deterministically.
    return min(n_pixels, max(0, math.floor(delta * n_pixels + 0.5 + 1e-9)))


def _step_grid(steps: int, n_pixels: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """``(deltas (S,) float32, counts (S,) long)``: δ_i = i / (S - 1) and the pixels kept at δ_i."""
    counts = torch.tensor([_num_kept(i / (steps - 1), n_pixels) for i in range(steps)], dtype=torch.long, device=device)
    deltas = torch.arange(steps, dtype=torch.float64, device=device).div(steps - 1).float()
    return deltas, counts


def _pixel_ranks(saliency: Tensor) -> Tensor:
    """Rank of every pixel, 0 = most salient; (B, H*W) long.

    Sorted by value descending with a *stable* sort: among equal values the
    pixel earlier in row-major order (smaller ``y * W + x``) ranks first.
    """
    flat = saliency.reshape(saliency.shape[0], -1)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    return ranks.scatter_(1, order, positions)


@torch.inference_mode()
def top_fraction_mask(saliency: Tensor, delta: float) -> Tensor:
    """Binarised saliency of Sec. 4.3.2: 1 on the top ``100 * delta`` % pixels.

    Exactly ``k = round(delta * H * W)`` pixels (halves rounded up) are set to 1
    per image: pixels are ranked by saliency, descending, with ties broken by
    row-major position (top-left first) via a stable sort, so ties never make
    the count differ from ``k``.

    Args:
        saliency: (B, H, W) in [0, 1].
        delta: fraction in [0, 1].

    Returns:
        (B, H, W) mask with the saliency's dtype, values in {0, 1}.
    """
    sal = _check_saliency(saliency)
    if not 0.0 <= float(delta) <= 1.0:
        raise ValueError(f"delta must be in [0, 1], got {delta}")
    _, height, width = sal.shape
    k = _num_kept(float(delta), height * width)
    return (_pixel_ranks(sal) < k).to(sal.dtype).view_as(sal)


class InsertionDeletion(NamedTuple):
    """Result of :func:`insertion_deletion` (unpacks as a 5-tuple)."""

    deltas: Tensor  # (S,)
    ins_curve: Tensor  # (B, S)
    del_curve: Tensor  # (B, S)
    ins_auc: Tensor  # (B,)
    del_auc: Tensor  # (B,)


@torch.inference_mode()
def insertion_deletion(
    logits_fn: LogitsFn,
    images: Tensor,
    saliency: Tensor,
    target: Union[Tensor, int],
    steps: int = 41,
    batch_size: int | None = None,
    progress: ProgressFn | None = None,
) -> InsertionDeletion:
    """Insertion and deletion probability curves and their AUC (Sec. 4.3.2).

    For ``delta`` in ``[0 : 1/(steps-1) : 1]`` (``steps = 41`` gives the paper's
    ``[0 : 0.025 : 1]``, both ends included) the saliency is binarised,
    ``m_delta = 1`` on the top ``100 * delta`` % pixels (see
    :func:`top_fraction_mask`: exactly ``round(delta * H * W)`` pixels, halves
    up, ties broken top-left first), and

    .. math::
        ins(\\delta) = p_c(m_\\delta \\circ x), \\qquad
        del(\\delta) = p_c((1 - m_\\delta) \\circ x), \\qquad
        AUC = \\int_0^1 curve(\\delta)\\, d\\delta \\ \\text{(trapezoidal rule)}.

    Choices the paper leaves open: removed pixels are black (0) in pixel space
    (same reading as Eq. 10), so insertion starts from a black image
    (``ins(0) = p_c(0)``) and ends at ``ins(1) = Y``, deletion goes the other
    way; ``p_c`` is the target softmax probability; the AUC uses the trapezoidal
    rule over the ``delta`` grid (x-axis is the fraction, so AUC is in [0, 1]).

    ``steps * B * 2`` images are evaluated, built lazily ``batch_size`` at a time.

    Returns:
        :class:`InsertionDeletion` ``(deltas (S,), ins_curve (B, S),
        del_curve (B, S), ins_auc (B,), del_auc (B,))``, float32.
    """
    images = _check_images(images)
    sal = _check_saliency(saliency, like=images)
    batch, _, height, width = images.shape
    tgt = _check_target(target, batch, images.device)
    batch_size = _check_batch_size(batch_size, images.device)
    if int(steps) < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    steps = int(steps)
    device = images.device

    deltas, counts = _step_grid(steps, height * width, device)
    ranks = _pixel_ranks(sal)  # (B, H*W)

    # flat item j -> image b = j // (2S), step s = (j // 2) % S, kind = j % 2 (0 ins, 1 del)
    def make_chunk(idx: Tensor) -> tuple[Tensor, Tensor]:
        b, s, kind = idx // (2 * steps), (idx // 2) % steps, idx % 2
        kept = ranks[b] < counts[s][:, None]  # (n, H*W) bool
        keep = torch.where(kind[:, None] == 0, kept, ~kept).to(images.dtype)
        return keep.view(-1, 1, height, width) * images[b], tgt[b]

    probs = _target_probs(logits_fn, make_chunk, 2 * steps * batch, device, batch_size, progress)
    probs = probs.view(batch, steps, 2)
    ins_curve, del_curve = probs[..., 0].contiguous(), probs[..., 1].contiguous()
    return InsertionDeletion(deltas, ins_curve, del_curve, auc(deltas, ins_curve), auc(deltas, del_curve))


@torch.inference_mode()
def auc(deltas: Tensor, curve: Tensor) -> Tensor:
    """Area under ``curve`` over ``deltas`` by the trapezoidal rule.

    .. math:: AUC = \\sum_{i} (\\delta_{i+1} - \\delta_i)\\,(c_i + c_{i+1}) / 2

    Args:
        deltas: (S,) strictly increasing abscissae (e.g. ``[0 : 0.025 : 1]``).
        curve: (..., S) values.

    Returns:
        (...) float32 (or the curve's wider float dtype).
    """
    deltas = torch.as_tensor(deltas)
    curve = torch.as_tensor(curve)
    if deltas.dim() != 1 or deltas.numel() < 2 or curve.shape[-1] != deltas.numel():
        raise ValueError(f"need deltas (S,) with S >= 2 and curve (..., S); got {tuple(deltas.shape)}, {tuple(curve.shape)}")
    dtype = torch.promote_types(torch.promote_types(deltas.dtype, curve.dtype), torch.float32)
    deltas = deltas.to(device=curve.device, dtype=dtype)
    if not bool((deltas[1:] > deltas[:-1]).all()):
        raise ValueError("deltas must be strictly increasing")
    return torch.trapezoid(curve.to(dtype), deltas, dim=-1)


# --------------------------------------------------------------------------- #
# Secs. 4.1 + 4.3.2 together: many maps, each derived image evaluated once
# --------------------------------------------------------------------------- #
class MapScores(NamedTuple):
    """Result of :func:`score_maps`: row ``i`` of every field belongs to map ``i``."""

    confidence: ConfidenceScores  # (N,) fields
    curves: InsertionDeletion | None  # (N, S) curves; None when steps = 0


@torch.inference_mode()
def score_maps(
    logits_fn: LogitsFn,
    images: Tensor,
    saliency: Tensor,
    target: Union[Tensor, int],
    image_index: Union[Tensor, Sequence[int], None] = None,
    steps: int = 41,
    batch_size: int | None = None,
    progress: ProgressFn | None = None,
) -> MapScores:
    """IC / AD / ADD terms (Eqs. 10-13) and insertion / deletion curves (Sec. 4.3.2) of N maps.

    Map ``i`` is ``saliency[i]`` of the image ``images[image_index[i]]`` scored for the class
    ``target[i]``; several maps (e.g. of several methods) may share an image. Every value is
    defined exactly as by :func:`confidence_scores` and :func:`insertion_deletion` (same ``δ``
    grid, pixel counts, tie order, black removed pixels), but each distinct derived image goes
    through the network once:

    * ``x``: once per image, however many maps it has; it gives ``Y`` and the curve points
      where all pixels are kept (``ins(1) = del(0) = p_c(1 ∘ x) = p_c(x)``);
    * the black image ``0``: once for all images (``0 ∘ x = 0``); it gives the points where no
      pixel is kept (``ins(0) = del(1) = p_c(0)``);
    * per map: ``e``, ``e_inv`` and one insertion and one deletion image per distinct pixel
      count strictly between 0 and H·W: ``2 + 2 (S - 2)`` images for the paper's grid on
      224 × 224 (S = 41: 80), against ``3 + 2 S = 85`` for the two functions above.

    The images are built chunk by chunk (``batch_size``, default the device's fastest), in
    tensor operations only. Values differ from the per-map functions only by float rounding,
    because an image may share its network call with other images than there (see
    ``tests/test_metrics.py`` for the bound).

    Args:
        logits_fn: pixel-space images (n, 3, H, W) -> logits (n, n_classes), row-wise.
        images: (B, 3, H, W) in [0, 1].
        saliency: (N, H, W) (or (N, 1, H, W)) ``s(u(L))`` in [0, 1].
        target: (N,) class indices (or one int for all maps).
        image_index: (N,) index into ``images`` per map; default ``arange(B)`` (needs N = B).
        steps: thresholds of the insertion / deletion grid (>= 2), or 0 for no curves.
        batch_size: most images per ``logits_fn`` call.
        progress: optional callback receiving the fraction done in (0, 1].

    Returns:
        :class:`MapScores` ``(confidence, curves)`` with float32 (N,) and (N, S) tensors.
    """
    images = _check_images(images)
    n_images, _, height, width = images.shape
    device = images.device
    sal = _check_saliency(saliency)
    if tuple(sal.shape[1:]) != (height, width):
        raise ValueError(f"saliency maps are {tuple(sal.shape[1:])}, the images {(height, width)}")
    sal = sal.to(device=device, dtype=images.dtype)
    n_maps = sal.shape[0]
    index = torch.arange(n_images) if image_index is None else torch.as_tensor(image_index)
    index = index.to(device=device, dtype=torch.long).reshape(-1)
    if index.numel() != n_maps:
        raise ValueError(f"image_index has {index.numel()} entries for {n_maps} maps")
    if int(index.min()) < 0 or int(index.max()) >= n_images:
        raise ValueError(f"image_index must lie in 0..{n_images - 1}")
    tgt = _check_target(target, n_maps, device)
    batch_size = _check_batch_size(batch_size, device)
    steps = int(steps)
    if steps == 1 or steps < 0:
        raise ValueError(f"steps must be 0 (no curves) or >= 2, got {steps}")

    n_pixels = height * width
    if steps:
        deltas, counts = _step_grid(steps, n_pixels, device)
        distinct, position = torch.unique(counts, return_inverse=True)  # ascending; distinct[0] = 0
        interior = distinct[(distinct > 0) & (distinct < n_pixels)]
        ranks = _pixel_ranks(sal)  # (N, H*W)
    else:
        interior = torch.zeros(0, dtype=torch.long, device=device)
    per_map = 2 + 2 * interior.numel()  # e, e_inv, then (ins, del) per interior count
    n_shared = n_images + 1
    total = n_shared + per_map * n_maps

    def report(done: float) -> None:
        if progress is not None:
            progress(done / total)

    # x of every image, then the black image: all classes' probabilities, (B + 1, n_classes)
    shared = torch.cat([images, torch.zeros_like(images[:1])])
    shared_probs = []
    for start in range(0, n_shared, batch_size):
        shared_probs.append(_class_probs(logits_fn, shared[start:start + batch_size], device))
        report(min(start + batch_size, n_shared))
    shared_probs = torch.cat(shared_probs)
    _check_target_range(tgt, shared_probs.shape[1])

    # flat item j -> map m = j // per_map, slot r = j % per_map:
    # r = 0: e, r = 1: e_inv, r = 2 + 2u: insertion at interior[u], r = 3 + 2u: deletion there
    def make_chunk(idx: Tensor) -> tuple[Tensor, Tensor]:
        m, r = idx // per_map, idx % per_map
        s = sal[m]
        factor = torch.where((r == 0)[:, None, None], s, 1.0 - s)
        if interior.numel():
            u = (r - 2).clamp_min(0) // 2
            kept = (ranks[m] < interior[u][:, None]).view(-1, height, width)
            keep = torch.where((r % 2 == 0)[:, None, None], kept, ~kept).to(images.dtype)
            factor = torch.where((r >= 2)[:, None, None], keep, factor)
        return factor[:, None] * images[index[m]], tgt[m]

    probs = _target_probs(logits_fn, make_chunk, per_map * n_maps, device, batch_size,
                          lambda f: report(n_shared + f * per_map * n_maps)).view(n_maps, per_map)
    y = shared_probs[index, tgt]
    black = shared_probs[n_images].gather(0, tgt)
    confidence = _confidence_terms(y, probs[:, 0].contiguous(), probs[:, 1].contiguous())
    if not steps:
        return MapScores(confidence, None)

    # curve value at each δ: column 0 (no pixel kept), 1 (all kept) or 2 + u (interior count u)
    # (distinct[0] = 0, so interior[u] = distinct[u + 1] sits in column 2 + u)
    column = torch.where(counts == 0, 0, torch.where(counts == n_pixels, 1, position + 1))
    ins_table = torch.cat([black[:, None], y[:, None], probs[:, 2::2]], dim=1)
    del_table = torch.cat([y[:, None], black[:, None], probs[:, 3::2]], dim=1)
    ins_curve, del_curve = ins_table[:, column], del_table[:, column]
    curves = InsertionDeletion(deltas, ins_curve, del_curve, auc(deltas, ins_curve), auc(deltas, del_curve))
    return MapScores(confidence, curves)


# --------------------------------------------------------------------------- #
# Sec. 4.3.3: energy-based pointing game
# --------------------------------------------------------------------------- #
def _as_boxes(boxes: BoxesLike) -> Tensor:
    """One image's boxes as an (n, 4) float64 CPU tensor (a single box may be flat)."""
    b = torch.as_tensor(boxes, dtype=torch.float64).detach().cpu()
    if b.numel() == 0:
        return b.reshape(0, 4)
    if b.shape[-1] != 4:
        raise ValueError(f"boxes must be (xmin, ymin, xmax, ymax) quadruples, got shape {tuple(b.shape)}")
    b = b.reshape(-1, 4)
    if not bool(torch.isfinite(b).all()):
        raise ValueError("boxes contain NaN or Inf")
    if bool(((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])).any()):
        raise ValueError("each box needs xmin <= xmax and ymin <= ymax")
    return b


def boxes_to_mask(boxes: BoxesLike, height: int, width: int, device: Union[torch.device, str, None] = None) -> Tensor:
    """Union mask of one image's boxes.

    ``boxes`` is (n, 4) (or one flat box) of ``(xmin, ymin, xmax, ymax)``
    *inclusive* 0-based pixel corners, x = column (right), y = row (down):
    pixel ``(row i, col j)`` is inside when ``xmin <= j <= xmax`` and
    ``ymin <= i <= ymax``.  Parts outside the image are clipped; overlapping
    boxes form a union (no pixel counted twice); no boxes gives an empty mask.
    (1-based annotations, e.g. raw PASCAL VOC XML, must be shifted by -1 first.)

    Returns:
        (height, width) bool tensor on ``device`` (default CPU).
    """
    b = _as_boxes(boxes).to(device)
    b = b.float()  # integer pixel coordinates are exact in float32 (< 2**24)
    rows = torch.arange(height, device=b.device, dtype=torch.float32)[None, :, None]
    cols = torch.arange(width, device=b.device, dtype=torch.float32)[None, None, :]
    x0, y0, x1, y1 = (b[:, k, None, None] for k in range(4))
    inside = (cols >= x0) & (cols <= x1) & (rows >= y0) & (rows <= y1)  # (n, H, W)
    return inside.any(dim=0) if b.shape[0] else torch.zeros(height, width, dtype=torch.bool, device=b.device)


def scale_boxes(boxes: BoxesLike, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> Tensor:
    """Map inclusive integer pixel boxes from an (H, W) grid to another (plain resize).

    Pixel ``j`` of an ``N``-pixel axis covers ``[j, j + 1)``, so a box
    ``[x0, x1]`` covers ``[x0, x1 + 1)``; scaled by ``f = N'/N`` that is
    ``[x0 f, (x1 + 1) f)``.  The new inclusive box holds the pixels whose
    centres ``j' + 0.5`` fall in it:
    ``x0' = ceil(x0 f - 1/2)``, ``x1' = ceil((x1 + 1) f - 1/2) - 1``,
    clipped to the new image and kept at least one pixel wide.  x scales with
    width, y with height.  E.g. the full 227x227 box (0, 0, 226, 226) maps to
    (0, 0, 223, 223) on 224x224.  A crop (e.g. resize-256 + centre-crop-224) is
    *not* a plain resize: subtract the crop offset yourself.

    Returns:
        (n, 4) long tensor (CPU).
    """
    b = _as_boxes(boxes)
    (h0, w0), (h1, w1) = (int(v) for v in from_hw), (int(v) for v in to_hw)
    if min(h0, w0, h1, w1) <= 0:
        raise ValueError("image sizes must be positive")
    out = torch.empty_like(b)
    for lo_col, hi_col, n_from, n_to in ((0, 2, w0, w1), (1, 3, h0, h1)):
        lo = torch.ceil((2.0 * b[:, lo_col] * n_to - n_from) / (2.0 * n_from))
        hi = torch.ceil((2.0 * (b[:, hi_col] + 1.0) * n_to - n_from) / (2.0 * n_from)) - 1.0
        lo = lo.clamp(0, n_to - 1)
        hi = torch.maximum(hi.clamp(0, n_to - 1), lo)
        out[:, lo_col], out[:, hi_col] = lo, hi
    return out.long()


@torch.inference_mode()
def energy_pointing_game(saliency: Tensor, boxes: Union[Tensor, Sequence[BoxesLike]]) -> Tensor:
    """Energy-based pointing game proportion (Eq. 14).

    .. math::
        \\text{Proportion} = \\frac{\\sum_{(i,j) \\in bbox} s(u(L))_{ij}}
                                  {\\sum_{(i,j) \\in \\Lambda'} s(u(L))_{ij}} \\qquad (14)

    ``bbox`` is the *union* of all ground-truth boxes of the target class in the
    image (overlaps counted once; see :func:`boxes_to_mask` for the inclusive
    corner convention).  Boxes must be in the saliency's pixel coordinates (use
    :func:`scale_boxes` first, e.g. from 227x227 annotations to a 224x224 map).
    An all-zero saliency (0/0) and an image without boxes give 0, not NaN.
    Multiply by 100 for the percentages of Table 5.

    Args:
        saliency: (B, H, W) in [0, 1].
        boxes: per image, an (n_i, 4) tensor/list of boxes (a list of length B),
            or a (B, n, 4) tensor.

    Returns:
        (B,) float32 proportions in [0, 1].
    """
    sal = _check_saliency(saliency)
    batch, height, width = sal.shape
    if len(boxes) != batch:
        raise ValueError(f"got boxes for {len(boxes)} images, saliency has B = {batch}")
    masks = torch.stack([boxes_to_mask(boxes[i], height, width, device=sal.device) for i in range(batch)])
    return energy_in_mask(sal, masks)


@torch.inference_mode()
def energy_in_mask(saliency: Tensor, masks: Tensor) -> Tensor:
    """Energy-based pointing game against pixel masks instead of boxes (Eq. 14 with any region).

    .. math::
        \\text{Proportion} = \\frac{\\sum_{(i,j)} s(u(L))_{ij} \\, M_{ij}}
                                  {\\sum_{(i,j)} s(u(L))_{ij}}

    ``M`` is a ground-truth evidence mask (e.g. the exact object masks of a
    Shapes-VQA question), in the saliency's pixel coordinates.  A map spread
    uniformly scores the mask's area fraction ``mean(M)``, the chance level to
    compare against.  An all-zero saliency (0/0) and an empty mask give 0, not NaN.

    Args:
        saliency: (B, H, W) in [0, 1].
        masks: (B, H, W) (or (H, W), shared by all images) bool or 0/1.

    Returns:
        (B,) float32 proportions in [0, 1].
    """
    sal = _check_saliency(saliency).float()
    m = torch.as_tensor(masks, device=sal.device)
    if m.dim() == 2 and m.shape == sal.shape[1:]:
        m = m.expand_as(sal)
    if m.shape != sal.shape:
        raise ValueError(f"masks of shape {tuple(m.shape)} do not match the saliency's {tuple(sal.shape)}")
    m = m.bool().float()
    inside = (sal * m).sum(dim=(1, 2))
    total = sal.sum(dim=(1, 2))
    positive = total > 0
    return torch.where(positive, inside / torch.where(positive, total, torch.ones_like(total)), torch.zeros_like(total))


# --------------------------------------------------------------------------- #
# Sec. 4.2: cosine similarity of coefficient vectors (Table 2)
# --------------------------------------------------------------------------- #
@torch.inference_mode()
def cosine_similarity(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarity of coefficient vectors ``alpha`` (Table 2), batched.

    .. math:: \\cos(a, b) = \\frac{a \\cdot b}{\\lVert a \\rVert_2 \\lVert b \\rVert_2}

    Over the last dimension; leading dimensions broadcast.  If either vector is
    exactly zero the similarity is defined as 0 (not NaN).  The result is
    clamped to [-1, 1] against rounding.  Computed in float64 internally.

    Returns:
        (...) float32 tensor.
    """
    a = torch.as_tensor(a)
    b = torch.as_tensor(b).to(a.device)
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"vector lengths differ: {a.shape[-1]} vs {b.shape[-1]}")
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    if not bool(torch.isfinite(a64).all() and torch.isfinite(b64).all()):
        raise ValueError("cosine_similarity got NaN or Inf")
    dot = (a64 * b64).sum(-1)
    norms = a64.norm(dim=-1) * b64.norm(dim=-1)
    positive = norms > 0
    cos = torch.where(positive, dot / torch.where(positive, norms, torch.ones_like(norms)), torch.zeros_like(dot))
    return cos.clamp(-1.0, 1.0).float()
