"""Variable selection network (TFT), applied independently at every step of every window."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from atft.models.grn import GatedResidualNetwork, ScalarGRNs


class VariableSelectionNetwork(nn.Module):
    """[N, L, V] scalar variables -> [N, L, hidden]: softmax-weighted sum of per-variable GRN embeddings.

    Each variable's GRN embeds its scalar into ``var_hidden`` dims (``ScalarGRNs``); the [V, var_hidden, N·L]
    embeddings are the dominant cost. The selection weights come from one GRN over the flattened raw variables. TFT
    feeds that GRN the flattened per-variable linear embeddings; for scalar inputs those are affine maps of the
    scalars, so a GRN over the scalars sees the same information at 1/var_hidden of the cost.
    """

    def __init__(self, n_vars: int, var_hidden: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.variable_grns = ScalarGRNs(n_vars, var_hidden, dropout)
        self.weight_grn = GatedResidualNetwork(n_vars, min(hidden, n_vars), n_vars, dropout)
        self.project = nn.Linear(var_hidden, hidden)

    def selection_weights(self, flat: Tensor) -> Tensor:
        """[M, V] scalar variables -> [M, V] selection weights, each row summing to 1: what the network looks at."""
        return torch.softmax(self.weight_grn(flat.unsqueeze(0)), dim=-1).squeeze(0)

    def forward(self, x: Tensor) -> Tensor:
        n, steps, n_vars = x.shape
        flat = x.reshape(n * steps, n_vars)
        weights = self.selection_weights(flat)  # [M, V]
        # Variable-major, rows last: contiguous copies, so that every op below runs along the rows.
        embedded = self.variable_grns(flat.T.contiguous())  # [V, var_hidden, M]
        selected = (embedded * weights.T.contiguous().unsqueeze(1)).sum(0)  # [var_hidden, M]
        return self.project(selected.T).reshape(n, steps, -1)
