"""Day batches: every valid stock of one or more trading days, lookback windows and the day graph.

Windows are strided views of the date-major cube (no per-sample Python loops). Labels are purged at the
split: a day's target for horizon h is used only if its window ends on or before ``label_cutoff``, so a
training set never learns from returns that fall inside the following validation period.
The dataset holds arrays and nothing else (no locks, no connections), so it pickles for ``num_workers > 0``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch.utils.data import DataLoader, Dataset, Sampler

from atft.config import GraphConfig
from atft.data.arrays import FeatureArrays
from atft.data.batch import DayBatch
from atft.data.graph import day_graph


class DayDataset(Dataset):
    """Batches of whole days. ``dataset[[i, j]]`` is one batch of the i-th and j-th of ``days``."""

    def __init__(
        self,
        arrays: FeatureArrays,
        days: Sequence[int],
        lookback: int,
        graph: GraphConfig,
        label_cutoff: int | None = None,
    ) -> None:
        """``days`` index ``arrays.dates``; each needs ``lookback - 1`` earlier days in the arrays."""
        if days and min(days) < lookback - 1:
            raise ValueError(f"day {arrays.dates[min(days)].date()} has fewer than {lookback - 1} earlier days loaded")
        self.arrays, self.days, self.lookback, self.graph = arrays, list(days), lookback, graph
        self.label_cutoff = len(arrays.dates) - 1 if label_cutoff is None else label_cutoff
        self._graphs: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.days)

    def __getitem__(self, positions: Sequence[int]) -> DayBatch:
        a = self.arrays
        present = sliding_window_view(a.present, self.lookback, axis=0)  # [D-L+1, S, L], a view
        horizons = np.asarray(a.horizons)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("x", "x_mask", "edges", "attr", "day", "slot", "y", "m")}
        offset = 0
        for i, position in enumerate(positions):
            d = self.days[position]
            rows = np.flatnonzero(a.present[d])
            # The day's window is a contiguous [L, S, F] slice; one gather along stocks is the only copy.
            parts["x"].append(np.take(a.x[d - self.lookback + 1 : d + 1], rows, axis=1))
            parts["x_mask"].append(present[d - self.lookback + 1][rows])
            edges, attr = self._graph(d, rows)
            parts["edges"].append(edges + offset)
            parts["attr"].append(attr)
            parts["day"].append(np.full(len(rows), i))
            parts["slot"].append(np.arange(len(rows)))
            # The purge: a label whose horizon reaches past the cutoff is not a label here.
            usable = a.target_valid[d][rows] & (d + horizons <= self.label_cutoff)[None, :]
            parts["y"].append(np.where(usable, a.targets[d][rows], 0.0).astype(np.float32))
            parts["m"].append(usable)
            offset += len(rows)
        # [L, N, F] in memory, seen as [N, L, F]: the model's first operation makes its own copy anyway.
        x = torch.from_numpy(np.concatenate(parts["x"], axis=1)).permute(1, 0, 2)
        return DayBatch(
            x=x if x.dtype == torch.float32 else x.float(),
            x_mask=torch.from_numpy(np.concatenate(parts["x_mask"])),
            edge_index=torch.from_numpy(np.concatenate(parts["edges"], axis=1)),
            edge_attr=torch.from_numpy(np.concatenate(parts["attr"])),
            day=torch.from_numpy(np.concatenate(parts["day"]).astype(np.int64)),
            slot=torch.from_numpy(np.concatenate(parts["slot"]).astype(np.int64)),
            y=torch.from_numpy(np.concatenate(parts["y"])),
            y_mask=torch.from_numpy(np.concatenate(parts["m"])),
            n_days=len(positions),
            max_stocks=max(len(s) for s in parts["slot"]),
        )

    def _graph(self, d: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The graph of day d over its present stocks, from returns of the ``window`` days ending at d."""
        if d not in self._graphs:
            start = max(0, d - self.graph.window + 1)
            returns = self.arrays.returns[start : d + 1, rows]
            self._graphs[d] = day_graph(returns, self.arrays.sector[d, rows], self.graph)
        return self._graphs[d]


class DayBatchSampler(Sampler[list[int]]):
    """Positions of ``days_per_batch`` days at a time; shuffled per epoch from a seed when ``shuffle``."""

    def __init__(self, n_days: int, days_per_batch: int, shuffle: bool, seed: int = 0) -> None:
        self.n_days, self.days_per_batch, self.shuffle, self.seed = n_days, days_per_batch, shuffle, seed
        self.epoch = 0

    def __iter__(self) -> Iterator[list[int]]:
        order = np.arange(self.n_days)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n_days)
            self.epoch += 1
        for start in range(0, self.n_days, self.days_per_batch):
            yield order[start : start + self.days_per_batch].tolist()

    def __len__(self) -> int:
        return -(-self.n_days // self.days_per_batch)


def day_loader(
    dataset: DayDataset, days_per_batch: int, shuffle: bool, seed: int = 0, num_workers: int = 0
) -> DataLoader:
    """Batches are built whole by the dataset, so the loader does no collation (batch_size=None)."""
    sampler = DayBatchSampler(len(dataset), days_per_batch, shuffle, seed)
    return DataLoader(
        dataset,
        batch_size=None,
        sampler=sampler,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )
