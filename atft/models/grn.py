"""Gated residual networks (Temporal Fusion Transformer, Lim et al. 2021).

η2 = ELU(W2·a + b2), η1 = W1·η2 + b1, output = LayerNorm(skip(a) + GLU(dropout(η1))), GLU(γ) = σ(W4γ + b4) ⊙ (W5γ + b5).

``GatedResidualNetwork`` is the usual one, over vectors. ``ScalarGRNs`` is many of them side by side, one per scalar
input variable, as a variable selection network embeds its inputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LAYER_NORM_EPS = 1e-5  # F.layer_norm's default


def _affine(groups: int, fan_in: int, fan_out: int) -> tuple[nn.Parameter, nn.Parameter]:
    # nn.Linear's default initialisation, per group.
    bound = 1.0 / math.sqrt(fan_in)
    weight = nn.Parameter(torch.empty(groups, fan_in, fan_out).uniform_(-bound, bound))
    bias = nn.Parameter(torch.empty(groups, 1, fan_out).uniform_(-bound, bound))
    return weight, bias


class GatedResidualNetwork(nn.Module):
    """in_dim -> hidden_dim -> out_dim; forward maps [1, M, in_dim] -> [1, M, out_dim]."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.dropout = dropout
        # Weights are [1, fan_in, fan_out] (one group), the layout checkpoints hold.
        self.w2, self.b2 = _affine(1, in_dim, hidden_dim)
        self.w1, self.b1 = _affine(1, hidden_dim, hidden_dim)
        self.w_glu, self.b_glu = _affine(1, hidden_dim, 2 * out_dim)
        # The skip path needs a projection only when the width changes.
        self.w_skip, self.b_skip = _affine(1, in_dim, out_dim) if in_dim != out_dim else (None, None)
        self.norm_weight = nn.Parameter(torch.ones(1, 1, out_dim))
        self.norm_bias = nn.Parameter(torch.zeros(1, 1, out_dim))

    def forward(self, a: Tensor) -> Tensor:
        eta2 = F.elu(torch.baddbmm(self.b2, a, self.w2))
        eta1 = torch.baddbmm(self.b1, eta2, self.w1)
        gate, value = torch.baddbmm(self.b_glu, F.dropout(eta1, self.dropout, self.training), self.w_glu).chunk(2, -1)
        skip = a if self.w_skip is None else torch.baddbmm(self.b_skip, a, self.w_skip)
        normed = F.layer_norm(skip + torch.sigmoid(gate) * value, (self.out_dim,))
        return torch.addcmul(self.norm_bias, normed, self.norm_weight)


class ScalarGRNs(nn.Module):
    """``n_vars`` independent GRNs 1 -> 1 -> out_dim, one per scalar variable: [V, M] -> [V, out_dim, M].

    The hidden width is min(input, hidden) = 1, the rule of the pytorch-forecasting reference, so every matmul is a
    scalar times a vector and the whole network is elementwise. It is laid out variable-major with the M rows last:
    every op then runs along contiguous rows, the layer norm over ``out_dim`` is a sum of ``out_dim`` row vectors,
    and torch.compile fuses the lot into a few vectorised loops (see ``ATFTGATFAN.compile_for_cpu``).
    Parameters keep the [V, fan_in, fan_out] layout and creation order of V grouped GRNs, so checkpoints load and a
    seed gives the same weights.
    """

    def __init__(self, n_vars: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.dropout = dropout
        self.w2, self.b2 = _affine(n_vars, 1, 1)
        self.w1, self.b1 = _affine(n_vars, 1, 1)
        self.w_glu, self.b_glu = _affine(n_vars, 1, 2 * out_dim)
        self.w_skip, self.b_skip = _affine(n_vars, 1, out_dim)
        self.norm_weight = nn.Parameter(torch.ones(n_vars, 1, out_dim))
        self.norm_bias = nn.Parameter(torch.zeros(n_vars, 1, out_dim))

    def forward(self, values: Tensor) -> Tensor:
        a = values.unsqueeze(1)  # [V, 1, M]; every [V, 1, k] parameter broadcasts as it is
        eta1 = self.w1 * F.elu(self.w2 * a + self.b2) + self.b1
        eta1 = F.dropout(eta1, self.dropout, self.training)
        # [V, 1, k] vectors become [V, k, 1] columns that broadcast along the rows.
        w_gate, w_value = self.w_glu.transpose(1, 2).chunk(2, 1)
        b_gate, b_value = self.b_glu.transpose(1, 2).chunk(2, 1)
        z = self.w_skip.transpose(1, 2) * a + self.b_skip.transpose(1, 2)
        z = z + torch.sigmoid(w_gate * eta1 + b_gate) * (w_value * eta1 + b_value)
        centred = z - z.mean(1, keepdim=True)
        normed = centred * torch.rsqrt(centred.square().mean(1, keepdim=True) + _LAYER_NORM_EPS)
        return normed * self.norm_weight.transpose(1, 2) + self.norm_bias.transpose(1, 2)
