"""Honesty controls of a walk-forward replay: what a model must not be able to find, and what no real signal reaches.

- :func:`shuffle_labels` permutes the training labels across the stocks of each day. A model, or a baseline,
  trained on them can only learn the day's structure, never which stock does better, so its out-of-sample RankIC
  against the real labels has to be zero up to noise. One that is not has found a path from the labels of the
  evaluated days into its scores: a leak.
- :func:`plant_leak` overwrites one input with the future label it is scored on. The no-look-ahead checks of the
  feature pipeline refuse such a column; this control writes it straight into the arrays, past them, so that the
  replay's own alarm can be seen to go off.
- :func:`leakage_warnings` is that alarm: a stitched daily RankIC above :data:`LEAKAGE_RANK_IC` on real prices is
  far beyond any published daily cross-sectional signal, and far more often a leak than a discovery.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from atft.data.arrays import FeatureArrays

LEAKAGE_RANK_IC = 0.1
SHUFFLED_RANK_IC = 0.005  # the bound a stitched |RankIC| of a model trained on shuffled labels must stay below


def shuffle_labels(arrays: FeatureArrays, seed: int) -> None:
    """Permute, in place, each day's labels (CS-Z targets, their validity and the raw forward returns) across the
    stocks present that day, with one permutation per day shared by every horizon."""
    rng = np.random.default_rng(seed)
    for day in range(len(arrays.dates)):
        stocks = np.flatnonzero(arrays.present[day])
        shuffled = rng.permutation(stocks)
        for values in (arrays.targets, arrays.target_valid, arrays.forward_returns):
            values[day, stocks] = values[day, shuffled]


def plant_leak(arrays: FeatureArrays, feature: str, horizon: int) -> None:
    """Overwrite, in place, input ``feature`` with the ``horizon``-day CS-Z label of the same stock-day (0 where
    there is none, as for any missing input)."""
    j = arrays.manifest.feature_names.index(feature)
    k = arrays.horizons.index(horizon)
    label = np.where(arrays.target_valid[..., k], arrays.targets[..., k], 0.0)
    arrays.x[..., j] = label.astype(arrays.x.dtype)


def leakage_warnings(metrics: Mapping[str, Mapping[str, Any]], horizons: Sequence[int]) -> list[str]:
    """One line per source and horizon whose stitched RankIC exceeds :data:`LEAKAGE_RANK_IC`; the oracle, which
    knows the truth by construction, is left out. Meant for real prices: a synthetic market plants signals that
    strong on purpose."""
    lines = []
    for source, values in metrics.items():
        if source == "oracle":
            continue
        for h in horizons:
            rank_ic = values.get(f"rank_ic_{h}d")
            if rank_ic is not None and np.isfinite(rank_ic) and rank_ic > LEAKAGE_RANK_IC:
                lines.append(
                    f"WARNING: {source} has a stitched {h}d RankIC of {rank_ic:.4f}, above {LEAKAGE_RANK_IC} on real "
                    "prices: look-ahead leakage is the likely cause (a feature, graph, normalisation or label that "
                    "uses data after its day) until proven otherwise"
                )
    return lines
