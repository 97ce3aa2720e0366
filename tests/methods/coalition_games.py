"""Shared by the tests of the estimators over coalitions of maps (LIME-CAM, KernelSHAP-CAM):
games given as tables, a stand-in for the engine's quantities, a model whose head is exact, and
the float64 facts about a weighted lasso that the LIME tests bound their tolerances with."""

from __future__ import annotations

import torch
import torch.nn as nn

from camlib.model import CamModel

U = 2.0 ** -24  # float32 unit roundoff
EPS = 2.0 ** -52  # float64 machine epsilon


def table_game(k: int, seed: int):
    """A game with an independent N(0, 1) value (float64) for each of the 2^k coalitions."""
    table = torch.randn(2 ** k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    powers = 2 ** torch.arange(k)
    return lambda masks: table[(masks.long() * powers).sum(1)]


def linear_game(base: float, d: torch.Tensor):
    """v(a') = base + a'·d in float64: its SHAP values are d."""
    return lambda masks: base + masks.double() @ d


class FakeGame:
    def __init__(self, values, n: int, calls: list):
        self.values_of, self.n, self.calls = values, n, calls

    def values(self, masks: torch.Tensor) -> torch.Tensor:
        self.calls.append(masks.shape[0])
        return self.values_of(masks)


class FakeQuantities:
    """What a coalition method reads from :class:`camlib.engine.quantities.Quantities`, for games
    given as functions of the masks (one per image); ``calls`` counts the coalitions evaluated."""

    def __init__(self, games: list, k: int, activations: torch.Tensor | None = None):
        self.n_maps, self.batch = k, len(games)
        self.activations = torch.ones(len(games), k, 1, 1) if activations is None else activations
        self.info, self.calls, self._games = {}, [], games

    def game(self, i: int) -> FakeGame:
        return FakeGame(self._games[i], self.n_maps, self.calls)

    def report(self, fraction: float) -> None:
        assert 0.0 <= fraction <= 1.0


class CopyHeadNet(nn.Module):
    """8×8 RGB input. Head: a 1×1 convolution whose map k is input channel k mod 3 times 2^-(k // 3)
    (one product per output, so the maps are exact and the same bits in any batch), a ReLU.
    Tail (nonlinear): TinyNet's, a 1×1 convolution mixing the maps, ReLU, 2×2 max pooling and two
    FC layers with a ReLU between them."""

    def __init__(self, maps: int = 6, classes: int = 3):
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(3, maps, 1, bias=False), nn.ReLU())
        self.mix = nn.Conv2d(maps, 5, 1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(5 * 4 * 4, 8)
        self.fc2 = nn.Linear(8, classes)

    def forward(self, x):
        x = self.pool(torch.relu(self.mix(self.head(x))))
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


def copy_head_model(seed: int = 0) -> CamModel:
    torch.manual_seed(seed)
    net = CopyHeadNet()
    for p in net.parameters():
        nn.init.normal_(p, std=0.6)
    with torch.no_grad():
        net.head[0].weight.zero_()
        for k in range(net.head[0].out_channels):
            net.head[0].weight[k, k % 3] = 2.0 ** -(k // 3)
    return CamModel("copyhead", net.eval(), torch.device("cpu"), ["a", "b", "c"], default_layer="head",
                    input_size=(8, 8))


# -- the weighted lasso in float64, for bounds ---------------------------------------------------

def centred(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor):
    """(H, c, A, b, N) of the weighted problem with the intercept eliminated: A = √w X̃, b = √w ỹ
    (centred by the weighted means), N = Σw, H = AᵀA/N, c = Aᵀb/N; all float64."""
    x, y, w = x.double(), y.double(), w.double()
    total = w.sum()
    xc, yc = x - w @ x / total, y - w @ y / total
    a, b = w.sqrt()[:, None] * xc, w.sqrt() * yc
    return a.T @ a / total, a.T @ b / total, a, b, total


def lasso_gap(x, y, w, lam: float, beta: torch.Tensor) -> float:
    """Duality gap of β for min 1/(2N) ‖b - Aβ‖² + λ‖β‖_1 (the intercept at its optimum): an upper
    bound on P(β) - P*, from the dual point θ = r·min(1, Nλ/‖Aᵀr‖_∞), r = b - Aβ."""
    _, _, a, b, total = centred(x, y, w)
    beta = beta.double()
    r = b - a @ beta
    primal = r @ r / (2 * total) + lam * beta.abs().sum()
    theta = r * min(1.0, float(total * lam / (a.T @ r).abs().max().clamp_min(1e-300)))
    dual = (b @ b - (b - theta) @ (b - theta)) / (2 * total)
    return float(primal - dual)


def support_shift(h1, c1, h2, c2, beta1: torch.Tensor) -> float:
    """‖β2 - β1‖_2 for two lasso solutions with the same support S and signs (β1 of (H1, c1), β2 of
    (H2, c2), same λ): exactly β2_S - β1_S = H2_SS⁻¹ [(c2 - c1)_S - (H2 - H1)_SS β1_S], bounded by
    ‖H2_SS⁻¹‖_2 (‖(c2 - c1)_S‖ + ‖(H2 - H1)_SS‖_2 ‖β1_S‖)."""
    s = torch.nonzero(beta1).flatten()
    if s.numel() == 0:
        return 0.0
    inverse = 1.0 / torch.linalg.eigvalsh(h2[s][:, s]).min()
    dh = torch.linalg.matrix_norm(h2[s][:, s] - h1[s][:, s], ord=2)
    return float(inverse * ((c2 - c1)[s].norm() + dh * beta1.double()[s].norm()))


def restricted_mu(h, beta: torch.Tensor) -> float:
    """λ_min(H_SS) on the support S of β: the lasso objective's strong convexity among vectors
    supported on S, so P(β') - P* >= ½ μ_S ‖β' - β*‖² for β', β* both supported on S."""
    s = torch.nonzero(beta).flatten()
    return float(torch.linalg.eigvalsh(h[s][:, s]).min()) if s.numel() else float("inf")
