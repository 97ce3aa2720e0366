"""Value-level tests of camlib.metrics with hand-computable fake models.

Most tests use the fake model ``region_model`` on 4x4 images: with
``a`` = sum of channel 0 over the top-left 2x2 block ``R`` and ``b`` = sum of
channel 0 over the other 12 pixels, its logits are ``[log(1 + a), log(1 + b)]``,
so the softmax probabilities are the rationals

    p_0 = (1 + a) / (2 + a + b),    p_1 = (1 + b) / (2 + a + b).
"""

from __future__ import annotations

import math

import pytest
import torch

from camlib.metrics import (
    ConfidenceScores,
    InsertionDeletion,
    Summary,
    aggregate_confidence,
    auc,
    boxes_to_mask,
    confidence_scores,
    cosine_similarity,
    energy_in_mask,
    energy_pointing_game,
    explanation_images,
    insertion_deletion,
    scale_boxes,
    score_maps,
    summarize,
    top_fraction_mask,
)
from tests.numerics import assert_close_scaled, chain

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
TOL = dict(rtol=1e-5, atol=1e-6)

TOP_LEFT = torch.zeros(4, 4)
TOP_LEFT[:2, :2] = 1.0


def region_model(x: torch.Tensor) -> torch.Tensor:
    a = (x[:, 0] * TOP_LEFT.to(x.device)).sum(dim=(1, 2))
    b = (x[:, 0] * (1 - TOP_LEFT.to(x.device))).sum(dim=(1, 2))
    return torch.stack([torch.log1p(a), torch.log1p(b)], dim=1)


def count_model(x: torch.Tensor) -> torch.Tensor:
    """T = sum of channel 0 over a 4x4 image in [0, 16]; p_0 = (1 + T) / 18."""
    t = x[:, 0].sum(dim=(1, 2))
    return torch.stack([torch.log1p(t), torch.log(17.0 - t)], dim=1)


def p0(a: float, b: float) -> float:
    return (1 + a) / (2 + a + b)


def p1(a: float, b: float) -> float:
    return (1 + b) / (2 + a + b)


def ones(batch: int = 1, device: str = "cpu") -> torch.Tensor:
    return torch.ones(batch, 3, 4, 4, device=device)


def assert_no_nan(*tensors: torch.Tensor) -> None:
    for t in tensors:
        assert not torch.isnan(t).any()


# --------------------------------------------------------------------------- #
# Eq. 10
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("device", DEVICES)
def test_explanation_images_pixel_space_product(device):
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32, device=device).view(2, 3, 2, 2) / 24
    s = torch.tensor([[[1.0, 0.0], [0.5, 0.25]], [[0.0, 0.0], [0.0, 1.0]]], device=device)
    e, e_inv = explanation_images(x, s)
    for c in range(3):
        torch.testing.assert_close(e[:, c], s * x[:, c])
        torch.testing.assert_close(e_inv[:, c], (1 - s) * x[:, c])
    # a removed pixel is black (0), kept pixels are untouched, e + e_inv = x
    assert e[0, :, 0, 1].eq(0).all() and e_inv[0, :, 0, 0].eq(0).all()
    torch.testing.assert_close(e[0, :, 0, 0], x[0, :, 0, 0])
    torch.testing.assert_close(e + e_inv, x)
    assert e.device.type == device and e.dtype == torch.float32
    # (B, 1, H, W) saliency is accepted too
    e2, _ = explanation_images(x, s[:, None])
    torch.testing.assert_close(e2, e)


def test_explanation_images_rejects_bad_saliency():
    x = ones()
    with pytest.raises(ValueError):
        explanation_images(x, torch.full((1, 4, 4), float("nan")))
    with pytest.raises(ValueError):
        explanation_images(x, torch.full((1, 4, 4), 2.0))
    with pytest.raises(ValueError):
        explanation_images(x, torch.ones(1, 3, 3))


# --------------------------------------------------------------------------- #
# Eqs. 11-13
# --------------------------------------------------------------------------- #
def confidence_cases():
    """Four (saliency, target) cases on an all-ones 4x4 image + hand results.

    x = ones: a = 4, b = 12.
    """
    s_tl = TOP_LEFT.clone()
    s_half = torch.full((4, 4), 0.5)
    s_rest = 1 - TOP_LEFT
    sal = torch.stack([s_tl, s_half, s_rest, s_tl])
    target = torch.tensor([0, 0, 0, 1])
    y = [p0(4, 12), p0(4, 12), p0(4, 12), p1(4, 12)]  # 5/18, 5/18, 5/18, 13/18
    o = [p0(4, 0), p0(2, 6), p0(0, 12), p1(4, 0)]  # 5/6, 3/10, 1/14, 1/6
    d = [p0(0, 12), p0(2, 6), p0(4, 0), p1(0, 12)]  # 1/14, 3/10, 5/6, 13/14
    ic = [1.0, 1.0, 0.0, 0.0]  # Y < O: yes, yes (5/18 < 3/10), no, no
    ad = [0.0, 0.0, 26 / 35, 10 / 13]
    add = [26 / 35, -2 / 25, -2.0, -2 / 7]  # D > Y gives negative terms
    return sal, target, dict(Y=y, O=o, D=d, ic=ic, ad=ad, add=add)


def test_hand_values_of_cases():
    # the closed forms used above, spelled out once
    assert p0(4, 12) == pytest.approx(5 / 18)
    assert p0(2, 6) == pytest.approx(3 / 10)
    assert (5 / 18 - 1 / 14) / (5 / 18) == pytest.approx(26 / 35)
    assert (5 / 18 - 3 / 10) / (5 / 18) == pytest.approx(-2 / 25)
    assert (13 / 18 - 1 / 6) / (13 / 18) == pytest.approx(10 / 13)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch_size", [1, 2, 5, 64])
def test_confidence_scores_hand_computed(device, batch_size):
    sal, target, expected = confidence_cases()
    scores = confidence_scores(region_model, ones(4, device), sal.to(device), target.to(device), batch_size=batch_size)
    assert isinstance(scores, ConfidenceScores) and len(scores) == 4
    for name, values in expected.items():
        got = getattr(scores, name)
        assert got.device.type == device and got.dtype == torch.float32 and got.shape == (4,)
        torch.testing.assert_close(got.cpu(), torch.tensor(values), **TOL)


def test_confidence_scores_batched_equals_single():
    sal, target, _ = confidence_cases()
    batched = confidence_scores(region_model, ones(4), sal, target)
    for i in range(4):
        single = confidence_scores(region_model, ones(1), sal[i : i + 1], int(target[i]))
        for name in ("Y", "O", "D", "ic", "ad", "add"):
            torch.testing.assert_close(getattr(single, name), getattr(batched, name)[i : i + 1])


def test_confidence_scores_zero_probability_is_guarded():
    def dead_model(x):  # target class 0 has probability exp(-1e4) == 0 in float32
        return torch.stack([torch.full_like(x[:, 0, 0, 0], -1e4), x[:, 0].mean(dim=(1, 2))], dim=1)

    s = torch.full((1, 4, 4), 0.5)
    scores = confidence_scores(dead_model, ones(), s, torch.tensor([0]))
    assert scores.Y.item() == 0.0 and scores.O.item() == 0.0 and scores.D.item() == 0.0
    assert scores.ic.item() == 0.0 and scores.ad.item() == 0.0 and scores.add.item() == 0.0
    assert_no_nan(*(getattr(scores, f) for f in ("Y", "O", "D", "ic", "ad", "add")))


def test_aggregate_confidence_percent():
    sal, target, expected = confidence_cases()
    scores = confidence_scores(region_model, ones(4), sal, target)
    agg = aggregate_confidence(scores)
    assert set(agg) == {"IC", "AD", "ADD"}
    assert agg["IC"].mean == pytest.approx(50.0)
    assert agg["AD"].mean == pytest.approx(100 * (26 / 35 + 10 / 13) / 4, rel=1e-5)
    assert agg["ADD"].mean == pytest.approx(100 * (26 / 35 - 2 / 25 - 2 - 2 / 7) / 4, rel=1e-5)
    # IC uses the Wilson interval for 2 of 4: (p + z^2/2n +- z sqrt(p q/n + z^2/4n^2)) / (1 + z^2/n)
    z = 1.959963984540054
    centre = (0.5 + z * z / 8) / (1 + z * z / 4)
    half = z / (1 + z * z / 4) * math.sqrt(0.25 / 4 + z * z / 64)
    assert agg["IC"].ci_low == pytest.approx(100 * (centre - half))
    assert agg["IC"].ci_high == pytest.approx(100 * (centre + half))
    # concatenating per-batch results gives the same aggregate
    parts = [confidence_scores(region_model, ones(2), sal[i : i + 2], target[i : i + 2]) for i in (0, 2)]
    agg2 = aggregate_confidence(parts)
    for k in agg:
        assert agg2[k] == pytest.approx(agg[k], rel=1e-6)


# --------------------------------------------------------------------------- #
# insertion / deletion
# --------------------------------------------------------------------------- #
def ranked_saliency() -> torch.Tensor:
    """4x4 saliency whose 4 largest values are the top-left 2x2 block."""
    s = torch.tensor(
        [
            [1.00, 0.95, 0.10, 0.20],
            [0.90, 0.85, 0.30, 0.40],
            [0.50, 0.55, 0.60, 0.65],
            [0.00, 0.70, 0.75, 0.80],
        ]
    )
    return s[None]


def test_top_fraction_mask_counts_and_order():
    s = ranked_saliency()
    m25 = top_fraction_mask(s, 0.25)  # 25 % of 16 = 4 pixels: the top-left block
    torch.testing.assert_close(m25[0], TOP_LEFT)
    m50 = top_fraction_mask(s, 0.5)  # 8 pixels: block + 0.80, 0.75, 0.70, 0.65
    expected = TOP_LEFT.clone()
    expected[3, 1:] = 1
    expected[2, 3] = 1
    torch.testing.assert_close(m50[0], expected)
    # round(0.025 * 16 = 0.4) = 0, round(0.05 * 16 = 0.8) = 1, round(0.1 * 16 = 1.6) = 2
    assert top_fraction_mask(s, 0.025).sum() == 0
    assert top_fraction_mask(s, 0.05).sum() == 1 and top_fraction_mask(s, 0.05)[0, 0, 0] == 1
    assert top_fraction_mask(s, 0.1).sum() == 2
    assert top_fraction_mask(s, 0.0).sum() == 0 and top_fraction_mask(s, 1.0).sum() == 16
    # halves round up: 0.025 * 20 = 0.5 -> 1 pixel on a 4x5 map
    assert top_fraction_mask(torch.rand(1, 4, 5), 0.025).sum() == 1


def test_top_fraction_mask_ties_are_row_major():
    s = torch.zeros(2, 4, 4)
    s[1, 3, 3] = 1.0  # one strict maximum, the rest tied at 0
    m = top_fraction_mask(s, 0.25)
    first_row = torch.zeros(4, 4)
    first_row[0] = 1
    torch.testing.assert_close(m[0], first_row)  # all tied: first 4 in row-major order
    expected = torch.zeros(4, 4)
    expected[3, 3] = 1
    expected[0, :3] = 1
    torch.testing.assert_close(m[1], expected)
    assert m.sum(dim=(1, 2)).tolist() == [4.0, 4.0]


@pytest.mark.parametrize("device", DEVICES)
def test_insertion_deletion_curves_count_model(device):
    """With x = ones and count_model, ins(d) = (1 + k_d)/18, del(d) = (17 - k_d)/18."""
    s = torch.rand(1, 4, 4, generator=torch.Generator().manual_seed(0)).to(device)
    res = insertion_deletion(count_model, ones(1, device), s, torch.tensor([0], device=device), batch_size=7)
    assert isinstance(res, InsertionDeletion)
    deltas, ins, dele, ins_auc, del_auc = res
    assert deltas.shape == (41,) and ins.shape == (1, 41) and ins_auc.shape == (1,)
    torch.testing.assert_close(deltas.cpu(), torch.tensor([i * 0.025 for i in range(41)]))
    k = [math.floor(16 * i / 40 + 0.5) for i in range(41)]  # 0, 0, 1, 1, 2, 2, 2, 3, ...
    assert k[:8] == [0, 0, 1, 1, 2, 2, 2, 3] and k[10] == 4 and k[40] == 16
    torch.testing.assert_close(ins[0].cpu(), torch.tensor([(1 + kk) / 18 for kk in k]), **TOL)
    torch.testing.assert_close(dele[0].cpu(), torch.tensor([(17 - kk) / 18 for kk in k]), **TOL)
    # ins + del == 1 at every delta, so the AUCs sum to 1
    assert (ins_auc + del_auc).item() == pytest.approx(1.0, abs=1e-6)
    expected_auc = sum(0.025 * ((1 + k[i]) + (1 + k[i + 1])) / 36 for i in range(40))
    assert ins_auc.item() == pytest.approx(expected_auc, abs=1e-6)


def test_insertion_deletion_respects_ordering():
    s = ranked_saliency()
    res = insertion_deletion(region_model, ones(), s, 0)
    # delta = 0.25 (index 10) keeps exactly the top-left block: a = 4, b = 0
    assert res.ins_curve[0, 10].item() == pytest.approx(p0(4, 0))  # 5/6
    assert res.del_curve[0, 10].item() == pytest.approx(p0(0, 12))  # 1/14
    # endpoints: black image (a = b = 0) and the full image
    assert res.ins_curve[0, 0].item() == pytest.approx(0.5) and res.del_curve[0, 40].item() == pytest.approx(0.5)
    assert res.ins_curve[0, 40].item() == pytest.approx(5 / 18) and res.del_curve[0, 0].item() == pytest.approx(5 / 18)


@pytest.mark.numerics
def test_insertion_deletion_batched_equals_single_and_progress():
    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(5, 3 * 6 * 6, generator=gen)

    def linear_model(x):
        return x.flatten(1) @ weight.T

    x = torch.rand(3, 3, 6, 6, generator=gen)
    s = torch.rand(3, 6, 6, generator=gen)
    target = torch.tensor([0, 3, 4])
    seen = []
    batched = insertion_deletion(linear_model, x, s, target, steps=41, batch_size=13, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0) and len(seen) == math.ceil(3 * 41 * 2 / 13)
    for i in range(3):
        single = insertion_deletion(linear_model, x[i : i + 1], s[i : i + 1], target[i : i + 1], batch_size=1000)
        # Logits of 108-term products in batches of 13 and of 1000 (other orders): each off by
        # 2·chain(108)·Σ|x W_c| ≤ 2·chain(108)·M; a softmax probability p then by ≤ 2 p·that
        # (relative, per entry); an AUC (trapezoids of 41 values) by max p·that + 2·chain(41).
        m = float((x[i].flatten().abs() @ weight.T.abs()).max())
        rel = 2 * 2 * chain(108) * m
        for name, a, b in zip(("insertion", "deletion"), single[1:3], batched[1:3]):
            assert_close_scaled(a, b[i : i + 1], b[i : i + 1].abs(), rel, f"{name} curve {i}")
        for name, a, b, curve in zip(("insertion", "deletion"), single[3:], batched[3:], batched[1:3]):
            assert_close_scaled(a, b[i : i + 1], curve[i].max(), rel + 2 * chain(41), f"{name} AUC {i}")
    assert_no_nan(*batched)


# --------------------------------------------------------------------------- #
# score_maps: the suite of many maps, each derived image evaluated once
# --------------------------------------------------------------------------- #
class RowCounter:
    """Wraps a model and counts the images it is given."""

    def __init__(self, model):
        self.model, self.rows = model, 0

    def __call__(self, x):
        self.rows += x.shape[0]
        return self.model(x)


def rowwise_linear(weight: torch.Tensor):
    """logits = x · W per row as an elementwise product and a sum over the last dim: every row is
    reduced alone, in the same order whatever the batch, so batch composition cannot change it."""
    return lambda x: (x.flatten(1)[:, None, :] * weight[None]).sum(-1)


def test_score_maps_equals_confidence_scores_and_insertion_deletion():
    gen = torch.Generator().manual_seed(3)
    model = rowwise_linear(0.2 * torch.randn(5, 3 * 6 * 6, generator=gen))
    x = torch.rand(3, 3, 6, 6, generator=gen)
    s = torch.rand(5, 6, 6, generator=gen)
    s[4] = 0.0  # a constant map: e = 0 (black), e_inv = x, row-major insertion order
    index = torch.tensor([0, 1, 2, 0, 1])  # two methods' maps share images 0 and 1
    target = torch.tensor([0, 3, 4, 2, 1])
    seen = []
    got = score_maps(model, x, s, target, index, steps=41, batch_size=7, progress=seen.append)
    conf = confidence_scores(model, x[index], s, target, batch_size=64)
    curves = insertion_deletion(model, x[index], s, target, steps=41, batch_size=64)
    # Same definitions; the model reduces each row alone, so only float32 rounding of the softmax
    # over differently sized chunks may differ: a few ulp of probabilities <= 1 (rtol 1e-6).
    for name in ("Y", "O", "D", "ic", "ad", "add"):
        torch.testing.assert_close(getattr(got.confidence, name), getattr(conf, name), rtol=1e-6, atol=1e-7)
    for a, b in zip(got.curves, curves):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert got.confidence.D[4] == pytest.approx(got.confidence.Y[4].item(), rel=1e-6)  # e_inv = x
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0)
    # default image_index = arange(B): one map per image
    single = score_maps(model, x, s[:3], target[:3], steps=0)
    assert single.curves is None
    torch.testing.assert_close(single.confidence.O, conf.O[:3], rtol=1e-6, atol=1e-7)


def test_score_maps_hand_values_and_network_images():
    """count_model on ones: ins(d) = (1 + k_d) / 18, del(d) = (17 - k_d) / 18, Y = 17/18 (T = 16),
    e of s = 0.5 everywhere: T = 8, O = 9/18; e_inv the same."""
    counter = RowCounter(count_model)
    s = torch.stack([torch.rand(4, 4, generator=torch.Generator().manual_seed(0)), torch.full((4, 4), 0.5),
                     torch.zeros(4, 4)])
    got = score_maps(counter, ones(2), s, 0, image_index=[0, 0, 1], steps=41, batch_size=5)
    k = [math.floor(16 * i / 40 + 0.5) for i in range(41)]
    for m in range(3):
        torch.testing.assert_close(got.curves.ins_curve[m], torch.tensor([(1 + kk) / 18 for kk in k]), **TOL)
        torch.testing.assert_close(got.curves.del_curve[m], torch.tensor([(17 - kk) / 18 for kk in k]), **TOL)
    torch.testing.assert_close(got.confidence.Y, torch.full((3,), 17 / 18), **TOL)
    assert got.confidence.O[1].item() == pytest.approx(9 / 18) and got.confidence.D[1].item() == pytest.approx(9 / 18)
    assert got.confidence.O[2].item() == pytest.approx(1 / 18) and got.confidence.D[2].item() == pytest.approx(17 / 18)
    # images through the network: x of 2 images + the black image, then per map e, e_inv and one
    # insertion and one deletion image per distinct count strictly inside (0, 16): k = 1 .. 15
    assert sorted(set(k) - {0, 16}) == list(range(1, 16))
    assert counter.rows == 2 + 1 + 3 * (2 + 2 * 15)


def test_score_maps_paper_grid_cost():
    """224 x 224, 41 steps: 80 images per map (85 with the per-map functions) + x per image + black."""
    counter = RowCounter(lambda x: torch.stack([x.mean(dim=(1, 2, 3)), -x.mean(dim=(1, 2, 3))], dim=1))
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    s = torch.rand(2, 224, 224, generator=torch.Generator().manual_seed(1))
    score_maps(counter, x, s, 0, image_index=[0, 0], steps=41, batch_size=64)
    assert counter.rows == 1 + 1 + 2 * 80
    counter.rows = 0
    confidence_scores(counter, x, s[:1], 0)
    insertion_deletion(counter, x, s[:1], 0)
    assert counter.rows == 3 + 2 * 41


def test_score_maps_rejects_bad_input():
    s = torch.rand(2, 4, 4)
    with pytest.raises(ValueError, match="image_index"):
        score_maps(count_model, ones(1), s, 0, image_index=[0, 1])
    with pytest.raises(ValueError, match="image_index"):
        score_maps(count_model, ones(2), s, 0, image_index=[0])
    with pytest.raises(ValueError, match="saliency maps are"):
        score_maps(count_model, ones(2), torch.rand(2, 3, 3), 0)
    with pytest.raises(ValueError, match="steps"):
        score_maps(count_model, ones(2), s, 0, steps=1)
    with pytest.raises(ValueError, match="out of range"):
        score_maps(count_model, ones(2), s, 7)


def test_auc_known_curves():
    d = torch.linspace(0, 1, 41)
    assert auc(d, d).item() == pytest.approx(0.5, abs=1e-6)
    assert auc(d, torch.ones(41)).item() == pytest.approx(1.0, abs=1e-6)
    assert auc(d, torch.zeros(41)).item() == 0.0
    # trapezoid of d^2 with h = 1/40: 1/3 + h^2/6 = 1/3 + 1/9600
    assert auc(d, d**2).item() == pytest.approx(1 / 3 + 1 / 9600, abs=1e-6)
    # batched over leading dims
    curves = torch.stack([d, torch.ones(41), 1 - d])
    torch.testing.assert_close(auc(d, curves), torch.tensor([0.5, 1.0, 0.5]))
    with pytest.raises(ValueError):
        auc(torch.tensor([0.0, 0.5, 0.4]), torch.ones(3))


# --------------------------------------------------------------------------- #
# Eq. 14
# --------------------------------------------------------------------------- #
def test_boxes_to_mask_inclusive_union():
    m = boxes_to_mask([[0, 0, 1, 1], [1, 1, 2, 2], [3, 3, 3, 3]], 4, 4)
    expected = torch.tensor(
        [
            [1, 1, 0, 0],
            [1, 1, 1, 0],
            [0, 1, 1, 0],
            [0, 0, 0, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(m, expected)
    # x is the column, y the row; a box sticking out of the image is clipped
    m2 = boxes_to_mask([2, 0, 9, 1], 4, 4)
    assert m2.sum() == 4 and m2[0, 2:].all() and m2[1, 2:].all()
    assert boxes_to_mask([], 4, 4).sum() == 0


@pytest.mark.parametrize("device", DEVICES)
def test_energy_pointing_game(device):
    uniform = torch.ones(4, 4)
    ramp = torch.arange(16, dtype=torch.float32).view(4, 4) / 15
    sal = torch.stack([uniform, uniform, ramp, torch.zeros(4, 4), uniform]).to(device)
    boxes = [
        [[0, 0, 1, 1], [1, 1, 2, 2]],  # union of 4 + 4 - 1 = 7 pixels, not 8
        [[0, 0, 1, 1], [1, 1, 2, 2], [3, 3, 3, 3]],  # + 1 border pixel (inclusive corner)
        torch.tensor([[0, 0, 1, 1]]),  # ramp values 0, 1, 4, 5 out of 0 + ... + 15 = 120
        [[0, 0, 3, 3]],  # zero saliency -> 0
        [],  # no box -> 0
    ]
    got = energy_pointing_game(sal, boxes)
    assert got.device.type == device and got.dtype == torch.float32
    torch.testing.assert_close(got.cpu(), torch.tensor([7 / 16, 8 / 16, 10 / 120, 0.0, 0.0]))
    # batched == per image, and (B, n, 4) tensors work
    for i in range(5):
        torch.testing.assert_close(energy_pointing_game(sal[i : i + 1], [boxes[i]]), got[i : i + 1])
    dense = energy_pointing_game(sal[:1], torch.tensor([[[0, 0, 1, 1], [1, 1, 2, 2]]]))
    torch.testing.assert_close(dense, got[:1])


@pytest.mark.parametrize("device", DEVICES)
def test_energy_in_mask(device):
    ramp = torch.arange(16, dtype=torch.float32).view(4, 4) / 15
    triangle = torch.tril(torch.ones(4, 4, dtype=torch.bool))  # 10 pixels, not a box
    sal = torch.stack([torch.ones(4, 4), ramp, ramp, torch.zeros(4, 4)]).to(device)
    masks = torch.stack([triangle, triangle, torch.zeros(4, 4, dtype=torch.bool), triangle]).to(device)
    got = energy_in_mask(sal, masks)
    assert got.device.type == device and got.dtype == torch.float32
    # uniform map: the area fraction; ramp: (0 + 4+5 + 8+9+10 + 12+...+15) / 120; empty mask, zero map: 0
    torch.testing.assert_close(got.cpu(), torch.tensor([10 / 16, 90 / 120, 0.0, 0.0]))
    # one (H, W) mask for the whole batch; 0/1 floats count as a mask
    torch.testing.assert_close(energy_in_mask(sal[:2], triangle.float().to(device)), got[:2])
    # a box mask gives the box pointing game
    box = boxes_to_mask([[0, 0, 1, 1]], 4, 4, device=device)
    torch.testing.assert_close(energy_in_mask(sal, box), energy_pointing_game(sal, [[[0, 0, 1, 1]]] * 4))
    with pytest.raises(ValueError, match="do not match"):
        energy_in_mask(sal, torch.ones(3, 3, dtype=torch.bool))


def test_scale_boxes():
    # full 227x227 box -> full 224x224 box
    assert scale_boxes([[0, 0, 226, 226]], (227, 227), (224, 224)).tolist() == [[0, 0, 223, 223]]
    # identity
    assert scale_boxes([[3, 5, 100, 200]], (227, 227), (227, 227)).tolist() == [[3, 5, 100, 200]]
    # 2x upsampling: pixel 1 covers [1, 2) -> [2, 4) -> pixels 2..3
    assert scale_boxes([1, 1, 1, 1], (4, 4), (8, 8)).tolist() == [[2, 2, 3, 3]]
    assert scale_boxes([[2, 2, 3, 3]], (8, 8), (4, 4)).tolist() == [[1, 1, 1, 1]]
    # x scales with width, y with height: (H, W) = (4, 8) -> (8, 8)
    assert scale_boxes([[4, 1, 7, 2]], (4, 8), (8, 8)).tolist() == [[4, 2, 7, 5]]
    # a single pixel never vanishes when shrinking
    assert scale_boxes([[5, 5, 5, 5]], (227, 227), (224, 224)).tolist() == [[5, 5, 5, 5]]


# --------------------------------------------------------------------------- #
# Table 2 cosine similarity
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("device", DEVICES)
def test_cosine_similarity(device):
    a = torch.tensor([[1.0, 0.0], [1.0, 2.0], [1.0, 0.0], [0.0, 0.0], [3.0, 4.0]], device=device)
    b = torch.tensor([[0.0, 1.0], [2.0, 4.0], [-1.0, 0.0], [1.0, 1.0], [4.0, 3.0]], device=device)
    got = cosine_similarity(a, b)
    assert got.device.type == device and got.dtype == torch.float32
    torch.testing.assert_close(got.cpu(), torch.tensor([0.0, 1.0, -1.0, 0.0, 24 / 25]))
    assert cosine_similarity(torch.zeros(3), torch.zeros(3)).item() == 0.0
    for i in range(5):
        torch.testing.assert_close(cosine_similarity(a[i], b[i]), got[i])


# --------------------------------------------------------------------------- #
# aggregation
# --------------------------------------------------------------------------- #
def _t_of_summary(n: int, confidence: float = 0.95) -> float:
    """The t quantile summarize() used for n values: its interval's half-width over the sem (one 1
    and n - 1 zeros; the sem recomputed in float64, so the ratio is the quantile to ~1e-15)."""
    values = torch.zeros(n, dtype=torch.float64)
    values[0] = 1.0
    got = summarize(values, scale=1.0, confidence=confidence)
    sem = float(values.std(correction=1)) / math.sqrt(n)
    return (got.ci_high - got.ci_low) / 2 / sem


# t_{p, df} of the quantile code camlib had before scipy (closed-form CDF + bisection for df <= 1000,
# Cornish-Fisher beyond), printed with repr: scipy.stats.t.ppf must reproduce them to 1e-12.
PREVIOUS_T = {
    0.975: {1: 12.70620473617472, 2: 4.302652729749468, 4: 2.7764451051977734, 9: 2.2621571627981822,
            10: 2.228138851986225, 30: 2.0422724563012764, 1000: 1.9623390808265129, 1001: 1.9623367052808784,
            5000: 1.9604385517065073},
    0.995: {1: 63.65674116287262, 4: 4.604094871349847, 29: 2.7563859036706235, 100: 2.6258905214380897},
}


def test_t_quantiles_match_tables_and_the_previous_implementation():
    # 10-digit values of published t tables (two-sided 95 %)
    table = {1: 12.7062047362, 2: 4.3026527297, 4: 2.7764451052, 9: 2.2621571628, 10: 2.2281388520,
             30: 2.0422724563, 1000: 1.9623390808}
    for df, q in table.items():
        assert _t_of_summary(df + 1) == pytest.approx(q, abs=1e-9)
    for p_upper, values in PREVIOUS_T.items():
        for df, q in values.items():
            assert _t_of_summary(df + 1, confidence=2 * p_upper - 1) == pytest.approx(q, rel=1e-12)
    # a large sample: the t quantile tends to the normal one (t_{0.975, 5000} = 1.96044 > z = 1.95996)
    assert 1.959963984540054 < _t_of_summary(5001) < 1.9605


def test_summarize_t_interval():
    # mean 3, sd sqrt(2.5), sem sqrt(0.5), t_{0.975, 4} = 2.7764451052
    half = 2.7764451052 * math.sqrt(0.5)
    got = summarize([1.0, 2.0, 3.0, 4.0, 5.0], scale=1.0)
    assert isinstance(got, Summary)
    assert got == pytest.approx((3.0, 3.0 - half, 3.0 + half))
    assert summarize(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])) == pytest.approx((300.0, 100 * (3 - half), 100 * (3 + half)))
    normal = summarize([1.0, 2.0, 3.0, 4.0, 5.0], scale=1.0, method="normal")
    assert normal == pytest.approx((3.0, 3.0 - 1.959963985 * math.sqrt(0.5), 3.0 + 1.959963985 * math.sqrt(0.5)))
    # degenerate cases stay finite
    assert summarize([0.7], scale=1.0) == pytest.approx((0.7, 0.7, 0.7))
    assert summarize([2.0, 2.0, 2.0], scale=1.0) == pytest.approx((2.0, 2.0, 2.0))
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError):
        summarize([1.0, float("nan")])


def test_summarize_wilson():
    # 5 of 10: the textbook Wilson 95 % interval is (0.2366, 0.7634)
    got = summarize([1.0] * 5 + [0.0] * 5, scale=1.0, method="wilson")
    assert got == pytest.approx((0.5, 0.2365930905, 0.7634069095), abs=1e-9)
    # 0 of 4 stays inside [0, 1]: (0, z^2 / (n + z^2))
    z2 = 1.959963984540054**2
    assert summarize([0.0] * 4, scale=100.0, method="wilson") == pytest.approx((0.0, 0.0, 100 * z2 / (4 + z2)))
    with pytest.raises(ValueError):
        summarize([0.5, 1.0], method="wilson")
