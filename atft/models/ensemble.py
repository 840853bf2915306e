"""Seed ensemble: several copies of one model, initialised and trained from different seeds, scored as one model.

On real prices a retrain's scores depend on its random initialisation and batch order almost as much as on its data.
Averaging independently trained members removes that part of the variance without touching what they learn. Each
member's scores are first turned into ranks within the day, so no member counts more because its scores happen to
spread wider, and the average is what the version publishes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from atft.config import ModelConfig
from atft.models.contract import ContractModel

# Percentile ranks are uniform on (0, 1), whose std is 1/√12: scaled by √12 they have unit spread, as the labels do.
_UNIT_SPREAD = math.sqrt(12.0)


def day_ranks(scores: Tensor, day: Tensor, present: Tensor) -> Tensor:
    """[N] scores -> [N] centred percentile ranks within each day, ``(rank + 0.5) / n - 0.5`` times √12.

    Ranks count only the rows ``present`` that day; absent rows are ranked among themselves and their values are
    meaningless, as the member scores they come from. Tied scores share their average rank, so a member that
    collapsed to a constant contributes exactly 0 to every stock, not an arbitrary order. Vectorised over the days
    (no loop whose length depends on the data), so the ensemble exports as its members do.
    """
    n = scores.shape[0]
    group = day * 2 + (~present).long()  # present and absent rows of a day are separate groups
    by_score = torch.argsort(scores, stable=True)
    order = by_score[torch.argsort(group[by_score], stable=True)]  # by group, then by score
    sorted_group, sorted_score = group[order], scores[order]
    position = torch.arange(n, device=scores.device)
    # Each row against the row before it (a roll, not slices: export traces it for any number of rows, one included).
    new_group = (sorted_group != torch.roll(sorted_group, 1)) | (position == 0)
    new_tie = new_group | (sorted_score != torch.roll(sorted_score, 1))
    group_start = torch.cummax(torch.where(new_group, position, 0), dim=0).values
    tie_id = torch.cumsum(new_tie.long(), dim=0) - 1
    within = (position - group_start).to(scores.dtype)
    ones = torch.ones_like(within)
    tie_rank = within.new_zeros(n).index_add(0, tie_id, within) / within.new_zeros(n).index_add(0, tie_id, ones)
    group_id = torch.cumsum(new_group.long(), dim=0) - 1
    group_size = within.new_zeros(n).index_add(0, group_id, ones)[group_id]
    centred = (tie_rank[tie_id] + 0.5) / group_size - 0.5
    return scores.new_zeros(n).index_copy(0, order, centred * _UNIT_SPREAD)


class SeedEnsemble(ContractModel):
    """Scores [N, H]: the mean over ``members`` of each member's per-day ranks (see :func:`day_ranks`).

    Every member is the same model (``config`` with one member) on the same inputs and input scaling; member ``i``
    is initialised and trained from seed ``train.seed + i`` by the trainer. The state dict holds every member, under
    ``members.<i>.``, so a checkpoint is one file as for a single model.
    """

    def __init__(
        self, config: ModelConfig, width: int, horizons: list[int], manifest_sha256: str,
        groups: Sequence[str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(config, width, horizons, manifest_sha256, groups)
        from atft.models import build_model  # the member classes are registered there

        single = config.model_copy(update={"ensemble": 1})
        self.name = config.name
        self.members = nn.ModuleList(
            build_model(single, width, horizons, manifest_sha256, groups) for _ in range(config.ensemble)
        )

    def set_input_scaling(self, mean: Tensor, std: Tensor) -> None:
        super().set_input_scaling(mean, std)
        for member in self.members:
            member.set_input_scaling(mean, std)

    def set_neutral_columns(self, feature_names: Sequence[str]) -> None:
        super().set_neutral_columns(feature_names)
        for member in self.members:
            member.set_neutral_columns(feature_names)

    def input_weights(self, x: Tensor, x_mask: Tensor) -> Tensor:
        """[N, F] the members' variable-selection weights, averaged (for members that have them: ATFT-GAT-FAN)."""
        return torch.stack([member.input_weights(x, x_mask) for member in self.members]).mean(0)

    def forward(self, x: Tensor, x_mask: Tensor, edge_index: Tensor, edge_attr: Tensor, day: Tensor) -> Tensor:
        present = x_mask[:, -1]
        total = x.new_zeros(x.shape[0], len(self.horizons))
        for member in self.members:
            scores = member(x, x_mask, edge_index, edge_attr, day)
            total = total + torch.stack([day_ranks(scores[:, k], day, present) for k in range(scores.shape[1])], 1)
        return total / len(self.members)
