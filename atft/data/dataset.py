"""Day batches: every valid stock of one or more trading days, lookback windows and the day graph.

Windows are strided views of the date-major cube (no per-sample Python loops). Labels are purged at the
split: a day's target for horizon h is used only if its window ends on or before ``label_cutoff``, so a
training set never learns from returns that fall inside the following validation period. The window of day d
ends at d + execution lag + h (``FeatureManifest.label_span``), the lag read from the arrays' manifest.
The dataset holds arrays and nothing else (no locks, no connections), so it pickles for ``num_workers > 0``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from numpy.lib.stride_tricks import as_strided, sliding_window_view
from torch.utils.data import DataLoader, Dataset, Sampler

from atft.config import GraphConfig, ModelConfig
from atft.data.arrays import FeatureArrays
from atft.data.batch import DayBatch
from atft.data.graph import day_graph


def history_days(model: ModelConfig) -> int:
    """Sessions to load before a window's first day: its lookback, and the full trailing window of its first graph."""
    return max(model.lookback, model.graph.window) - 1


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

    def stock_days(self) -> int:
        """Stocks trading on each of ``days``, summed: the rows one pass over the dataset scores."""
        return int(self.arrays.present[self.days].sum())

    def __getitem__(self, positions: Sequence[int]) -> DayBatch:
        a = self.arrays
        days = [self.days[p] for p in positions]
        stocks = a.present.shape[1]
        horizons = np.asarray(a.horizons)
        spans = np.asarray([a.manifest.label_span(h) for h in a.horizons])
        runs = _consecutive_runs(days)
        views = [torch.from_numpy(self._windows(run[0], len(run))) for run in runs]
        x = views[0] if len(views) == 1 else torch.cat(views)
        windows_present = sliding_window_view(a.present, self.lookback, axis=0)  # [D-L+1, S, L], a view
        x_mask = np.concatenate([windows_present[d - self.lookback + 1] for d in days])
        # The purge: a label whose horizon reaches past the cutoff is not a label here. Absent stocks have none.
        y_mask = np.stack([a.target_valid[d] & a.present[d][:, None] & (d + spans <= self.label_cutoff)
                           for d in days])  # fmt: skip
        y = np.where(y_mask, a.targets[days], 0.0).astype(np.float32)
        edges, attr = [], []
        for i, d in enumerate(days):
            rows = np.flatnonzero(a.present[d])
            day_edges, day_attr = self._graph(d, rows)
            edges.append(rows[day_edges] + i * stocks)  # the day's present stocks -> the batch's rows
            attr.append(day_attr)
        return DayBatch(
            x=x if x.dtype == torch.float32 else x.float(),
            x_mask=torch.from_numpy(x_mask),
            edge_index=torch.from_numpy(np.concatenate(edges, axis=1)),
            edge_attr=torch.from_numpy(np.concatenate(attr)),
            day=torch.arange(len(days)).repeat_interleave(stocks),
            slot=torch.arange(stocks).repeat(len(days)),
            y=torch.from_numpy(y.reshape(-1, len(horizons))),
            y_mask=torch.from_numpy(y_mask.reshape(-1, len(horizons))),
            n_days=len(days),
            max_stocks=stocks,
        )

    def _windows(self, first: int, count: int) -> np.ndarray:
        """[count * S, L, F] windows of ``count`` consecutive days from ``first``, as one view of the cube.

        Row ``i * S + s`` at step ``l`` is ``cube[first + i - L + 1 + l, s]``: the day-major cube already holds
        every window, so the view needs only the right strides, and no byte is copied.
        """
        cube = self.arrays.x
        _, stocks, width = cube.shape
        step_stride, stock_stride, feature_stride = cube.strides
        base = cube[first - self.lookback + 1 :]
        return as_strided(
            base,
            shape=(count * stocks, self.lookback, width),
            strides=(stock_stride, step_stride, feature_stride),
        )

    def _graph(self, d: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The graph of day d over its present stocks, from returns of the ``window`` days ending at d."""
        if d not in self._graphs:
            start = max(0, d - self.graph.window + 1)
            returns = self.arrays.returns[start : d + 1, rows]
            self._graphs[d] = day_graph(returns, self.arrays.sector[d, rows], self.graph)
        return self._graphs[d]


def _consecutive_runs(days: Sequence[int]) -> list[list[int]]:
    """``days`` split where they stop being consecutive: each run is one zero-copy view."""
    runs: list[list[int]] = []
    for d in days:
        if runs and d == runs[-1][-1] + 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    return runs


class DayBatchSampler(Sampler[list[int]]):
    """Positions of ``days_per_batch`` consecutive days at a time, so that a batch is one view of the cube.

    With ``shuffle``, each epoch (from a seed) shifts the block boundaries by a random phase and shuffles the
    order of the blocks: days meet different neighbours from epoch to epoch, and the number of batches stays
    fixed. The one block that wraps around the end holds two runs of days, and is the only batch copied.
    """

    def __init__(self, n_days: int, days_per_batch: int, shuffle: bool, seed: int = 0) -> None:
        self.n_days, self.days_per_batch, self.shuffle, self.seed = n_days, days_per_batch, shuffle, seed
        self.epoch = 0

    def __iter__(self) -> Iterator[list[int]]:
        order = np.arange(self.n_days)
        starts = np.arange(0, self.n_days, self.days_per_batch)
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            order = np.roll(order, -int(rng.integers(self.days_per_batch)))
            starts = rng.permutation(starts)
            self.epoch += 1
        for start in starts:
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
