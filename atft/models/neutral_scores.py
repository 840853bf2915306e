"""Exposure-neutral scores: each day's scores with named inputs' exposures regressed out, inside the model.

ATFT-GAT-FAN ranks stocks by their volatility after one epoch of any loss, and on labels with no volatility left in
them too (benchmarks/README.md, "The volatility tilt"): the bet comes from the network, not from what the labels
paid. Regressing it out of the finished scores afterwards leaves what the network learnt beside the bet, which is
little. Done inside the forward pass, in training as in scoring, the losses only ever see scores with no exposure to
the named inputs, so no gradient rewards the bet and the network has to spend its capacity elsewhere.

For every day in the batch and every horizon, the scores of the day's present stocks are regressed by least squares
on an intercept and the named inputs' scaled values at the day's own step (known at that day's close), and replaced
by the residuals. The regression is differentiable, vectorised over the days (no loop whose length depends on the
data) and costs a few [K+1, K+1] solves per batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Added to each day's normal equations: a day whose exposures are constant, or an empty slot, solves to 0 instead of
# failing; far below any real day's sums over hundreds of stocks.
_RIDGE = 1e-6


def day_slots(rows: Tensor, day: Tensor) -> int:
    """Slots for per-day sums: one per day on CPU; export, compile and accelerators get one per row (at most that
    many days), a size that does not depend on the values in ``day``."""
    if rows.device.type != "cpu" or torch.compiler.is_compiling():
        return rows.shape[0]
    return int(day.max()) + 1


def neutralise(scores: Tensor, exposures: Tensor, day: Tensor, present: Tensor) -> Tensor:
    """[N, H] scores, [N, K] exposures, [N] day and present -> [N, H]: per day, the residuals of the present rows'
    scores on an intercept and the exposures. Absent rows take no part in the fit; their values mean nothing."""
    weight = present.to(scores.dtype).unsqueeze(-1)
    design = torch.cat([torch.ones_like(exposures[:, :1]), exposures.to(scores.dtype)], dim=-1)  # [N, K+1]
    weighted = design * weight
    slots = day_slots(scores, day)
    gram = scores.new_zeros(slots, design.shape[1], design.shape[1]).index_add(
        0, day, weighted.unsqueeze(-1) * design.unsqueeze(-2)
    )
    moments = scores.new_zeros(slots, design.shape[1], scores.shape[1]).index_add(
        0, day, weighted.unsqueeze(-1) * scores.unsqueeze(-2)
    )
    eye = torch.eye(design.shape[1], dtype=scores.dtype, device=scores.device)
    coef = torch.linalg.solve(gram + _RIDGE * eye, moments)  # [slots, K+1, H]
    return scores - (design.unsqueeze(-1) * coef[day]).sum(1)
