"""camlib.cam: the shared map path L = ReLU(Σ α_k A_k), u(·), s(·)."""

import torch

from camlib.cam import linear_combination, minmax, saliency_maps, upsample


def test_linear_combination_and_relu():
    a = torch.tensor([[[[1.0, 0.0]], [[0.0, 2.0]]]])  # (1, 2, 1, 2)
    alpha = torch.tensor([[2.0, -1.0]])
    assert linear_combination(alpha, a).tolist() == [[[2.0, 0.0]]]


def test_minmax_and_upsample():
    maps = torch.tensor([[[1.0, 3.0], [5.0, 9.0]]])
    out, constant = minmax(maps)
    assert out.tolist() == [[[0.0, 0.25], [0.5, 1.0]]] and constant.tolist() == [False]
    assert upsample(maps, (4, 4)).shape == (1, 4, 4)


def test_constant_map_gives_zeros_and_a_flag_never_nan():
    a = torch.rand(2, 3, 4, 4)
    alpha = torch.tensor([[-1.0, -2.0, -0.5], [1.0, 0.0, 0.0]])
    cam, saliency, constant = saliency_maps(alpha, a, (8, 8))
    assert constant.tolist() == [True, False]
    assert torch.equal(saliency[0], torch.zeros(8, 8))
    assert torch.isfinite(saliency).all() and saliency[1].max() == 1.0 and saliency[1].min() == 0.0
    _, saliency, constant = saliency_maps(torch.full((1, 3), float("nan")), a[:1], (8, 8))
    assert constant.tolist() == [True] and torch.isfinite(saliency).all()
