"""One batch: the full cross-section of one or more trading days, in the one layout every stage uses.

Rows are stock-days, grouped by day (``day`` is non-decreasing). Models take ``batch.inputs()`` and
nothing else, in training, evaluation, export and scoring alike: one forward signature, tested.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass
class DayBatch:
    x: Tensor  # [N, L, F] float32: lookback window per stock-day, oldest step first, the day itself last
    x_mask: Tensor  # [N, L] bool: the stock had a row at that step (False: before listing, or halted)
    edge_index: Tensor  # [2, E] int64: source -> target rows of the same day; no self-loops
    edge_attr: Tensor  # [E, 2] float32: (trailing return correlation, same sector)
    day: Tensor  # [N] int64: the row's day within the batch, 0..n_days-1
    slot: Tensor  # [N] int64: the row's position within its day, 0..n_stocks(day)-1
    y: Tensor  # [N, H] float32: CS-Z targets per horizon; 0 where y_mask is False
    y_mask: Tensor  # [N, H] bool: the target exists (window complete, and inside the training purge)
    n_days: int
    max_stocks: int  # the largest cross-section among the batch's days

    def inputs(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The model's positional inputs: ``model(*batch.inputs())`` -> predictions [N, H]."""
        return self.x, self.x_mask, self.edge_index, self.edge_attr, self.day

    def to(self, device: torch.device | str, non_blocking: bool = False) -> DayBatch:
        moved = {
            f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
            if isinstance(getattr(self, f.name), Tensor)
            else getattr(self, f.name)
            for f in fields(self)
        }
        return DayBatch(**moved)

    def dense(self, values: Tensor, fill: float = 0.0) -> Tensor:
        """[N, ...] row values -> [n_days, max_stocks, ...], ``fill`` where a day has fewer stocks."""
        out = values.new_full((self.n_days, self.max_stocks, *values.shape[1:]), fill)
        out[self.day, self.slot] = values
        return out
