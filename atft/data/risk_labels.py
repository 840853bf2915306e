"""Risk-adjusted training labels: each day's CS-Z labels divided by each stock's own risk, with named exposures
and sectors regressed out.

On real prices a day's labels are mostly common bets paid or lost that day (on a rally the high-beta stocks lead),
and they are heteroscedastic: a volatile stock's return is several times a quiet one's, up or down, which a
top-one ranking loss rewards by itself. Three ways to train on what is left, each optional:

- ``scale_by``: each label divided by the named input's value that day (a stock's own volatility, e.g. ``rv_60``),
  so that every stock's label has about the same spread and a volatile stock is no easier to score on;
- ``neutralize``: for every day and horizon, the labels regressed by least squares, with an intercept, on the named
  inputs' values that day (``beta_60``, ``rv_60``), and replaced by the residuals: the part of each return that
  those common bets do not explain;
- ``sector_neutral``: the same regression with a dummy per sector as well, so that each label is measured against
  its sector's mean that day: what a stock earned over its peers, not its sector's move. Stocks without a sector
  (-1 in the arrays) form one group of their own.

On S&P prices neither of the first two removes ATFT-GAT-FAN's volatility tilt, which the network makes by itself
(benchmarks/README.md, "The volatility tilt"; ``atft.models.neutral_scores`` is the remedy that does). Every way
the labels are z-scored again per day (ddof 0). Everything read is known at the close of the label's own
day, so nothing later is used (sector labels are as the listings file has them: on real prices they are not point in
time, see deployments/sp500.yaml). Only the training labels change: validation, scoring and every gate still read the
true CS-Z labels, so a model is judged on the returns it would have earned.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from atft.data.arrays import FeatureArrays
from schemas.manifest import input_positions


def input_columns(arrays: FeatureArrays, names: Sequence[str], option: str) -> list[int]:
    """Positions of ``names`` among the manifest's inputs; an unknown name is an error that lists the known ones."""
    return input_positions(names, arrays.manifest.feature_names, option, f"feature table {arrays.manifest.table_name}")


def risk_adjusted_targets(
    arrays: FeatureArrays, neutralize: Sequence[str] = (), scale_by: str | None = None, sector_neutral: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """[D, S, H] float32 labels and their validity: each day's valid labels divided by ``scale_by``'s value, then
    least-squares residuals on an intercept, ``neutralize``'s values and, with ``sector_neutral``, a dummy for each
    sector of the day but the first; z-scored per day; NaN where not valid.

    A stock-day whose ``scale_by`` value is 0 (how the arrays hold a missing input) has no label; a negative one is
    an error. A day with no more valid stocks than regressors has nothing left to learn once its exposures are
    removed, and has no labels."""
    valid = arrays.target_valid & arrays.present[..., None]
    y = np.where(valid, arrays.targets, 0.0).astype(np.float64)
    if scale_by is not None:
        (column,) = input_columns(arrays, [scale_by], "loss.scale_by")
        risk = np.asarray(arrays.x[:, :, column], dtype=np.float64)
        day, stock = np.nonzero((risk < 0) & valid.any(axis=-1))
        if len(day):
            raise ValueError(
                f"loss.scale_by input {scale_by} must not be negative; it is {risk[day[0], stock[0]]:.6g} for stock "
                f"{arrays.codes[stock[0]]} on {arrays.dates[day[0]].date()} ({len(day)} such stock-days)"
            )
        valid &= (risk > 0)[..., None]
        y = np.divide(y, risk[..., None], out=np.zeros_like(y), where=valid)
    columns = input_columns(arrays, neutralize, "loss.neutralize")
    exposures = np.asarray(arrays.x[:, :, columns], dtype=np.float64)  # [D, S, K]
    out = np.full(arrays.targets.shape, np.nan, dtype=np.float32)
    for d, k in zip(*np.nonzero(valid.any(axis=1)), strict=True):
        rows = valid[d, :, k]
        design = np.column_stack([np.ones(rows.sum()), exposures[d, rows]])
        if sector_neutral:
            sectors = arrays.sector[d, rows]
            design = np.column_stack([design, sectors[:, None] == np.unique(sectors)[None, 1:]])
        if rows.sum() <= design.shape[1]:
            continue
        residual = y[d, rows, k] - design @ np.linalg.lstsq(design, y[d, rows, k], rcond=None)[0]
        spread = residual.std()
        out[d, rows, k] = residual / spread if spread > 1e-12 else 0.0
    return out, np.isfinite(out)


def with_risk_adjusted_labels(
    arrays: FeatureArrays, neutralize: Sequence[str] = (), scale_by: str | None = None, sector_neutral: bool = False
) -> FeatureArrays:
    """``arrays`` with :func:`risk_adjusted_targets` as its targets (inputs and everything else shared)."""
    targets, valid = risk_adjusted_targets(arrays, neutralize, scale_by, sector_neutral)
    return dataclasses.replace(arrays, targets=targets, target_valid=valid)
