"""Day-context modulation: every stock's embedding is rescaled by a summary of its day's whole cross-section.

Some signals change sign with the market's state (a past relative return that reverses after a rally continues
after a sell-off). The variable selection network adds per-variable embeddings with positive weights, so it cannot
form the product of a market and a stock input; FiLM (Perez et al. 2018) by the cross-sectional mean embedding
makes that product one multiplication, h ⊙ (1 + γ(c)) + β(c). It is applied at every step of the window, with
each step's own cross-section: the mean is over the stocks present at that step of the same day, so it uses
nothing after the step and nothing from the batch's other days.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class DayContextFiLM(nn.Module):
    """[N, L, H] per-step embeddings -> [N, L, H]; the identity at initialisation (γ = β = 0)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.film = nn.Linear(hidden, 2 * hidden)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, h: Tensor, day: Tensor, present: Tensor) -> Tensor:
        weight = present.to(h.dtype).unsqueeze(-1)
        # Sums into N slots indexed by day (at most N days): no size that depends on the values in ``day``.
        sums = torch.zeros_like(h).index_add(0, day, h * weight)
        counts = torch.zeros_like(weight).index_add(0, day, weight)
        context = sums[day] / counts[day].clamp_min(1.0)
        gamma, beta = self.film(context).chunk(2, dim=-1)
        return h * (1.0 + gamma) + beta
