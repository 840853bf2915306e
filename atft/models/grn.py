"""Gated residual network (Temporal Fusion Transformer, Lim et al. 2021), for one or many independent groups.

η2 = ELU(W2·a + b2), η1 = W1·η2 + b1, output = LayerNorm(skip(a) + GLU(dropout(η1))), GLU(γ) = σ(W4γ + b4) ⊙ (W5γ + b5).
With ``groups`` > 1, every group (e.g. every input variable of a variable selection network) has its own weights and
all groups are evaluated by one batched matmul per layer: a Python list of 150+ small modules would be far slower.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GatedResidualNetwork(nn.Module):
    """``groups`` GRNs of widths in_dim -> hidden_dim -> out_dim; forward maps [G, M, in_dim] -> [G, M, out_dim]."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, dropout: float, groups: int = 1) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.dropout = dropout
        self.w2, self.b2 = self._affine(groups, in_dim, hidden_dim)
        self.w1, self.b1 = self._affine(groups, hidden_dim, hidden_dim)
        self.w_glu, self.b_glu = self._affine(groups, hidden_dim, 2 * out_dim)
        # The skip path needs a projection only when the width changes.
        self.w_skip, self.b_skip = self._affine(groups, in_dim, out_dim) if in_dim != out_dim else (None, None)
        self.norm_weight = nn.Parameter(torch.ones(groups, 1, out_dim))
        self.norm_bias = nn.Parameter(torch.zeros(groups, 1, out_dim))

    @staticmethod
    def _affine(groups: int, fan_in: int, fan_out: int) -> tuple[nn.Parameter, nn.Parameter]:
        # nn.Linear's default initialisation, per group.
        bound = 1.0 / math.sqrt(fan_in)
        weight = nn.Parameter(torch.empty(groups, fan_in, fan_out).uniform_(-bound, bound))
        bias = nn.Parameter(torch.empty(groups, 1, fan_out).uniform_(-bound, bound))
        return weight, bias

    def forward(self, a: Tensor) -> Tensor:
        eta2 = F.elu(torch.baddbmm(self.b2, a, self.w2))
        eta1 = torch.baddbmm(self.b1, eta2, self.w1)
        gate, value = torch.baddbmm(self.b_glu, F.dropout(eta1, self.dropout, self.training), self.w_glu).chunk(2, -1)
        skip = a if self.w_skip is None else torch.baddbmm(self.b_skip, a, self.w_skip)
        # LayerNorm without affine, then the per-group affine: F.layer_norm's weight cannot vary by group.
        normed = F.layer_norm(skip + torch.sigmoid(gate) * value, (self.out_dim,))
        return torch.addcmul(self.norm_bias, normed, self.norm_weight)
