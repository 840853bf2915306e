"""Variable selection network (TFT), applied independently at every step of every window."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from atft.models.grn import GatedResidualNetwork


class VariableSelectionNetwork(nn.Module):
    """[N, L, V] scalar variables -> [N, L, hidden]: softmax-weighted sum of per-variable GRN embeddings.

    Each variable's GRN embeds its scalar into ``var_hidden`` dims; the GRN hidden layer has width
    min(input, hidden) = 1, the rule of the pytorch-forecasting reference, which keeps the [N·L, V, var_hidden]
    tensors (the dominant cost) to the GLU, skip and norm. The selection weights come from one GRN over the flattened
    raw variables. TFT feeds that GRN the flattened per-variable linear embeddings; for scalar inputs those are affine
    maps of the scalars, so a GRN over the scalars sees the same information at 1/var_hidden of the cost.
    """

    def __init__(self, n_vars: int, var_hidden: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.variable_grns = GatedResidualNetwork(1, 1, var_hidden, dropout, groups=n_vars)
        self.weight_grn = GatedResidualNetwork(n_vars, min(hidden, n_vars), n_vars, dropout)
        self.project = nn.Linear(var_hidden, hidden)

    def forward(self, x: Tensor) -> Tensor:
        n, steps, n_vars = x.shape
        flat = x.reshape(1, n * steps, n_vars)
        weights = torch.softmax(self.weight_grn(flat), dim=-1)  # [1, M, V]
        # Variable-major layout [V, M, 1]: one batched matmul per GRN layer over all variables.
        embedded = self.variable_grns(flat.transpose(0, 2).contiguous())  # [V, M, var_hidden]
        selected = (embedded * weights.transpose(0, 2)).sum(0)  # [M, var_hidden]
        return self.project(selected).reshape(n, steps, -1)
