"""Day-context modulation: every stock's embedding is rescaled by a summary of its day's whole cross-section.

Some signals change sign with the market's state (a past relative return that reverses after a rally continues
after a sell-off). The variable selection network adds per-variable embeddings with positive weights, so it cannot
form the product of a market and a stock input; FiLM (Perez et al. 2018) by a summary of the day makes that product
one multiplication, h ⊙ (1 + γ(c)) + β(c). The summary c reads the cross-sectional means of both the scaled inputs
and the embeddings: the inputs' means carry the market's state as it is (its returns, volatility and breadth),
which the means of the embeddings only blur (benchmarks/README.md has the measurement).

FiLM is applied at every step of the window, with each step's own cross-section: the means are over the stocks
present at that step of the same day, so they use nothing after the step and nothing from the batch's other days.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from atft.models.neutral_scores import day_slots

# FiLM starts near the identity: small enough that γ and β are ~0, not zero, so the summary layer gets a gradient
# from the first step.
_FILM_INIT_STD = 1e-3


class DayContextFiLM(nn.Module):
    """[N, L, H] per-step embeddings and [N, L, F] scaled inputs -> [N, L, H]."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.summary = nn.Sequential(nn.Linear(width + hidden, hidden), nn.GELU())
        self.film = nn.Linear(hidden, 2 * hidden)
        nn.init.normal_(self.film.weight, std=_FILM_INIT_STD)
        nn.init.zeros_(self.film.bias)

    def forward(self, h: Tensor, x: Tensor, day: Tensor, present: Tensor) -> Tensor:
        weight = present.to(h.dtype).unsqueeze(-1)
        # One slot per day: the summary layers run once per day and step, not once per stock.
        slots = day_slots(h, day)
        sums = [t.new_zeros(slots, *t.shape[1:]).index_add(0, day, t * weight) for t in (x, h, weight)]
        context = torch.cat(sums[:2], dim=-1) / sums[2].clamp_min(1.0)
        gamma, beta = self.film(self.summary(context))[day].chunk(2, dim=-1)
        return h * (1.0 + gamma) + beta
