"""Honesty controls of a walk-forward replay: what a model must not be able to find, and what no real signal reaches.

- :func:`shuffle_labels` permutes the training labels across the stocks of each day. A model, or a baseline,
  trained on them can only learn the day's structure, never which stock does better, so its out-of-sample RankIC
  against the real labels has to be zero up to the untrained floor (below). One far above it has found a path from
  the labels of the evaluated days into its scores: a leak.
- :func:`plant_leak` overwrites one input with the future label it is scored on. The no-look-ahead checks of the
  feature pipeline refuse such a column; this control writes it straight into the arrays, past them, so that the
  replay's own alarm can be seen to go off.
- :func:`leakage_warnings` is that alarm: a stitched daily RankIC above :data:`LEAKAGE_RANK_IC` on real prices is
  far beyond any published daily cross-sectional signal, and far more often a leak than a discovery.
- :class:`UntrainedFloor` is what no label at all earns. A network's scores are a smooth function of its inputs, so
  even untrained they carry a random tilt on them (on size, volatility, reversal...), and on real prices the
  cross-section pays such tilts a lot, differently from month to month. The stitched RankIC of networks that never
  saw a label spreads several times wider than that of unrelated random numbers (benchmarks/README measures it).
  A shuffled-label model is one more draw of that floor; :func:`shuffled_verdict` reads it against both the fixed
  bound and the floor measured on the same days.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from atft.data.arrays import FeatureArrays

LEAKAGE_RANK_IC = 0.1
SHUFFLED_RANK_IC = 0.005  # the bound a stitched |RankIC| of a model trained on shuffled labels must stay below
FLOOR_Z = 2.0  # a control within this many spreads of the untrained floor is one more draw of it
FLOOR_SEEDS = 5  # fewer untrained networks than this cannot tell a floor's spread


def shuffle_labels(arrays: FeatureArrays, seed: int | Sequence[int]) -> None:
    """Permute, in place, each day's labels (CS-Z targets, their validity and the raw forward returns) across the
    stocks present that day, with one permutation per day shared by every horizon. ``seed``: an int, or a sequence
    of them (a window and a model seed), for numpy's generator."""
    rng = np.random.default_rng(seed)
    for day in range(len(arrays.dates)):
        stocks = np.flatnonzero(arrays.present[day])
        shuffled = rng.permutation(stocks)
        for values in (arrays.targets, arrays.target_valid, arrays.forward_returns):
            values[day, stocks] = values[day, shuffled]


@dataclass(frozen=True)
class UntrainedFloor:
    """The stitched RankIC at one horizon of untrained networks (one per seed) on a control's own days."""

    rank_ics: tuple[float, ...]

    @property
    def spread(self) -> float:
        """Root mean square about zero. Initial weights are as likely negated as not, and negating the head negates
        the scores, so an untrained network's expected RankIC is zero and this is its spread around it."""
        return float(np.sqrt(np.mean(np.square(self.rank_ics))))

    def z(self, rank_ic: float) -> float:
        """``rank_ic`` in units of the floor's spread."""
        return rank_ic / self.spread


def shuffled_verdict(rank_ic: float, horizon: int, floor: UntrainedFloor | None) -> str:
    """One line on a shuffled-label model's stitched RankIC at ``horizon``: against the fixed bound
    :data:`SHUFFLED_RANK_IC`, and, given ``floor`` (at least :data:`FLOOR_SEEDS` untrained networks on the same
    days and horizon), against it: within :data:`FLOOR_Z` spreads it is indistinguishable from a network that never
    saw a label; beyond, a positive one is what a leak looks like."""
    fixed = "pass" if abs(rank_ic) < SHUFFLED_RANK_IC else "FAIL"
    line = f"{horizon}d RankIC {rank_ic:+.4f}: fixed bound |RankIC| < {SHUFFLED_RANK_IC} {fixed}"
    if floor is None or len(floor.rank_ics) < FLOOR_SEEDS:
        have = 0 if floor is None else len(floor.rank_ics)
        return f"{line}; untrained floor: {have} seeds, {FLOOR_SEEDS} needed to read it"
    z = floor.z(rank_ic)
    if abs(z) < FLOOR_Z:
        reading = "within it: no sign of a leak"
    elif z > 0:
        reading = "ABOVE it: a path from the evaluated labels into the scores is the likely cause"
    else:
        reading = "BELOW it: worse than chance, which no leak explains; look for a sign error"
    spread = f"spread {floor.spread:.4f} over {len(floor.rank_ics)} untrained networks"
    return f"{line}; untrained floor ({spread}): z {z:+.1f}, {reading}"


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
