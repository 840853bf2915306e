"""Loading: day batches (strided windows, whole cross-sections) vs a naive per-sample Dataset + DataLoader.

Both produce the same lookback windows of the same stock-days from the same in-memory cube (2,000 stocks x
260 days x 152 features by default). A batch of consecutive days is one strided view of the date-major cube,
so no window is copied; the day batches also build each day's stock graph, which the naive loader does not.
Later epochs are shuffled as in training. Target: at least 20x the samples per second.

    python benchmarks/bench_loader.py [--stocks 2000 --days 260 --features 152] [--json results.json]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from harness import finish
from torch.utils.data import DataLoader, Dataset

from atft.config import GraphConfig
from atft.data.arrays import FeatureArrays, StoredCube
from atft.data.batch import DayBatch
from atft.data.dataset import DayDataset, day_loader
from schemas.manifest import CSZSettings, FeatureColumn, FeatureManifest

TARGET_RATIO, LOOKBACK, HORIZONS = 20.0, 20, [1, 5, 10, 20]


def market(stocks: int, days: int, features: int) -> FeatureArrays:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(days, stocks, features)).astype(np.float32)
    present = rng.random((days, stocks)) > 0.03
    manifest = FeatureManifest(
        tuple(FeatureColumn(f"f{i}", "float32", "price", 1) for i in range(features)),
        tuple(FeatureColumn(f"target_{h}d", "float32", "target", 0) for h in HORIZONS),
        CSZSettings(5.0, 10, 1e-8, 1, "none"),
        "bench",
    )
    return FeatureArrays(
        manifest=manifest,
        horizons=HORIZONS,
        dates=pd.bdate_range("2020-01-01", periods=days),
        codes=np.array([f"{1300 + i}" for i in range(stocks)], dtype=object),
        cube=StoredCube(x.shape, "float32", _array=x),
        present=present,
        targets=rng.normal(size=(days, stocks, len(HORIZONS))).astype(np.float32),
        target_valid=np.ones((days, stocks, len(HORIZONS)), dtype=bool),
        forward_returns=(rng.normal(size=(days, stocks, len(HORIZONS))) * 0.02).astype(np.float32),
        returns=(rng.normal(size=(days, stocks)) * 0.01).astype(np.float32),
        sector=np.tile(np.arange(stocks) % 17, (days, 1)).astype(np.int16),
    )


class PerSample(Dataset):
    """The usual first version: one (stock, day) window per __getitem__, collated by the DataLoader."""

    def __init__(self, arrays: FeatureArrays, days: list[int]) -> None:
        self.arrays = arrays
        self.samples = [(d, s) for d in days for s in np.flatnonzero(arrays.present[d])]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        d, s = self.samples[i]
        window = self.arrays.x[d - LOOKBACK + 1 : d + 1, s, :]
        mask = self.arrays.present[d - LOOKBACK + 1 : d + 1, s]
        return torch.from_numpy(window), torch.from_numpy(mask), torch.from_numpy(self.arrays.targets[d, s])


def _trading(batch: DayBatch) -> int:
    """Stock-days with a row: a day batch also carries the day's absent stocks, as masked rows."""
    return int(batch.x_mask[:, -1].sum())


def _rate(batches: object, count: callable) -> tuple[float, int]:
    began, samples = time.perf_counter(), 0
    for batch in batches:
        samples += count(batch)
    return samples / (time.perf_counter() - began), samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stocks", type=int, default=2000)
    parser.add_argument("--days", type=int, default=260)
    parser.add_argument("--features", type=int, default=152)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    arrays = market(args.stocks, args.days, args.features)
    days = list(range(LOOKBACK - 1, args.days))
    naive_rate, naive_samples = _rate(
        DataLoader(PerSample(arrays, days), batch_size=512, shuffle=False), lambda b: b[0].shape[0]
    )
    dataset = DayDataset(arrays, days, LOOKBACK, GraphConfig())
    first_rate, day_samples = _rate(day_loader(dataset, days_per_batch=2, shuffle=False), _trading)
    # Graphs are built once per day and cached: every epoch after the first loads at this rate.
    day_rate, _ = _rate(day_loader(dataset, days_per_batch=2, shuffle=True), _trading)
    assert naive_samples == day_samples, (naive_samples, day_samples)
    ratio = day_rate / naive_rate
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    print(f"loader benchmark: {args.stocks:,} stocks x {len(days)} days x {args.features} features, L={LOOKBACK}")
    print(f"  per-sample Dataset + DataLoader  {naive_rate:>12,.0f} samples/s")
    print(f"  day batches, first epoch         {first_rate:>12,.0f} samples/s  (building each day's graph)")
    print(f"  day batches, later epochs        {day_rate:>12,.0f} samples/s  (graphs cached)")
    print(f"  ratio {ratio:.1f}x; target >= {TARGET_RATIO:.0f}x: {verdict}")
    results = {"naive": naive_rate, "day_batches_first_epoch": first_rate, "day_batches": day_rate, "ratio": ratio}
    finish(verdict != "FAIL", args.json, results)


if __name__ == "__main__":
    main()
