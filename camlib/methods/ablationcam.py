"""Ablation-CAM (Desai & Ramaswamy, WACV 2020), as reinterpreted by the paper (Eq. 9)."""

from __future__ import annotations

import torch

from camlib.methods.base import CamMethod, Context
from camlib.shapley import coalitions


class AblationCAM(CamMethod):
    """α_k = (F^c(h_A(A')) - F^c(h_A(A' \\ k))) / |F^c(h_A(A'))|                         (Eq. 9)

    the drop of the target logit when map k alone is zeroed, computed through the tail only (never
    the whole network), K ablations batched; for a linear tail the drops are read off the tail's
    weights in closed form (see :mod:`camlib.shapley`).

    Sign convention: Eq. 9 divides by F^c(A). When the target logit is negative that division
    would flip every coefficient's sign, so a map whose removal *lowers* the score would get a
    negative weight (pytorch-grad-cam's AblationCAM does this). We divide by |F^c(A)| instead: the
    sign of α_k always means "removing map k lowers the target score", and the map (after ReLU and
    min-max normalisation) is what Eq. 9 gives for positive logits. A logit of exactly 0 is
    replaced by 1 (no division by zero).
    """

    key, title = "ablationcam", "Ablation-CAM"
    summary = "drop of the target logit when each activation map is removed"

    def coefficients(self, ctx: Context, fast: bool = True, **options) -> torch.Tensor:
        rows = []
        for i in range(ctx.batch):
            target = int(ctx.target[i])
            game = coalitions(ctx.split, ctx.activations[i:i + 1], ctx.fixed_for(i, 1), target,
                              ctx.batch_size, fast=fast)
            full = ctx.logits[i, target]
            drop = full - game.leave_one_out().to(full.dtype)
            scale = full.abs() if full != 0 else torch.ones_like(full)
            rows.append(drop / scale)
            ctx.report((i + 1) / ctx.batch)
        return torch.stack(rows)
