"""Ablation-CAM (Desai & Ramaswamy, WACV 2020), as reinterpreted by the paper (Eq. 9)."""

from __future__ import annotations

import torch

from camlib.methods.base import Cost, Method, Need, Quantities


class AblationCAM(Method):
    """α_k = (F^c(h_A(A')) - F^c(h_A(A' \\ k))) / |F^c(h_A(A'))|                         (Eq. 9)

    the drop of the target logit when map k alone is zeroed, read off the coalition game (the
    tail only, never the whole network: K ablations batched, or in closed form on a linear tail).

    Sign convention: Eq. 9 divides by F^c(A). When the target logit is negative that division
    would flip every coefficient's sign, so a map whose removal *lowers* the score would get a
    negative weight (pytorch-grad-cam's AblationCAM does this). We divide by |F^c(A)| instead: the
    sign of α_k always means "removing map k lowers the target score", and the map (after ReLU and
    min-max normalisation) is what Eq. 9 gives for positive logits. A logit of exactly 0 is
    replaced by 1 (no division by zero).
    """

    key, title = "ablationcam", "Ablation-CAM"
    summary = "drop of the target logit when each activation map is removed"
    needs = frozenset({Need.GAME})
    cost = Cost.PER_MAP
    paper = True

    def coefficients(self, q: Quantities) -> torch.Tensor:
        rows = []
        for i in range(q.batch):
            full = q.logits[i, int(q.target[i])]
            drop = full - q.game(i).leave_one_out().to(full.dtype)
            scale = full.abs() if full != 0 else torch.ones_like(full)
            rows.append(drop / scale)
            q.report((i + 1) / q.batch)
        return torch.stack(rows)
