"""Gated fusion of two embeddings of the same stock-day (here: its own history and its graph neighbourhood)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GatedFusion(nn.Module):
    """h = LayerNorm(g ⊙ a + (1 - g) ⊙ b), g = σ(W[a; b] + c): a learned, per-dimension mix of the two inputs."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.gate = nn.Linear(2 * hidden, hidden)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        g = torch.sigmoid(self.gate(torch.cat([a, b], dim=-1)))
        return self.norm(b + g * (a - b))
