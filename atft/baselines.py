"""Reference signals a model has to beat on the same days: ridge on the CS-Z features, the 5-day reversal factor,
and, on a synthetic market, the oracle (the true expected forward returns).

Each gives dense ``[days, stocks, horizons]`` scores aligned with a :class:`FeatureArrays`, so they go through the
same metrics as a model's predictions. Ridge is fitted on training rows only, with the models' label purge.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import duckdb
import numpy as np
import pandas as pd

from atft.data.arrays import FeatureArrays
from schemas.manifest import FeatureManifest

RIDGE_ALPHA = 10.0
REVERSAL_FEATURE = "ret_5d_cs_z"


def csz_columns(manifest: FeatureManifest) -> list[int]:
    """Positions of the CS-Z inputs: the ridge baseline's features."""
    return [j for j, column in enumerate(manifest.features) if column.group == "cs_z"]


def dense_rows(arrays: FeatureArrays, days: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[D, S, F] inputs, [D, S, H] CS-Z targets (NaN where invalid or absent) and their mask over ``days``."""
    mask = arrays.target_valid[days] & arrays.present[days][..., None]
    return arrays.x[days], np.where(mask, arrays.targets[days], np.nan), mask


def fit_ridge(arrays: FeatureArrays, train: Sequence[int], columns: list[int], horizon: int) -> np.ndarray:
    """Closed-form ridge weights on ``columns`` for one target horizon, from training rows only.

    The same purge as the models': no label whose horizon reaches past the last training day.
    """
    x, y, mask = dense_rows(arrays, train)
    k = arrays.horizons.index(horizon)
    rows = mask[..., k] & (np.asarray(train) + horizon <= train[-1])[:, None]
    features = x[rows][:, columns].astype(np.float64)
    target = y[..., k][rows].astype(np.float64)
    gram = features.T @ features + RIDGE_ALPHA * np.eye(len(columns))
    return np.linalg.solve(gram, features.T @ target)


def ridge_scores(
    fit_arrays: FeatureArrays, train: Sequence[int], arrays: FeatureArrays, days: Sequence[int], columns: list[int]
) -> np.ndarray:
    """[D, S, H] ridge scores on ``arrays``' ``days``, one fit per horizon on ``fit_arrays``' ``train`` days."""
    x = arrays.x[days][..., columns]
    return np.stack([x @ fit_ridge(fit_arrays, train, columns, h) for h in fit_arrays.horizons], axis=-1)


def reversal_scores(arrays: FeatureArrays, days: Sequence[int]) -> np.ndarray:
    """[D, S, H] minus the CS-Z 5-day return, the same score for every horizon."""
    reversal = -arrays.x[days][..., arrays.manifest.feature_names.index(REVERSAL_FEATURE)]
    return np.repeat(reversal[..., None], len(arrays.horizons), axis=-1)


def read_oracle(con: duckdb.DuckDBPyConnection, start: date, end: date) -> pd.DataFrame:
    """The synthetic market's expected forward returns for days in [start, end]: Code, Date, oracle_<h>d."""
    return con.execute("SELECT * FROM synthetic_oracle WHERE Date BETWEEN ? AND ?", [start, end]).df()


def oracle_scores(arrays: FeatureArrays, days: Sequence[int], oracle: pd.DataFrame) -> np.ndarray:
    """[D, S, H] oracle expected returns (from :func:`read_oracle`) on ``days``; NaN where it has no row."""
    missing = [f"oracle_{h}d" for h in arrays.horizons if f"oracle_{h}d" not in oracle.columns]
    if missing:
        raise ValueError(f"synthetic_oracle has no {missing}; it has {list(oracle.columns)}")
    out = np.full((len(days), len(arrays.codes), len(arrays.horizons)), np.nan)
    d = pd.DatetimeIndex(arrays.dates[list(days)]).get_indexer(pd.DatetimeIndex(oracle["Date"]))
    s = pd.Index(arrays.codes).get_indexer(oracle["Code"])
    found = (d >= 0) & (s >= 0)
    for k, h in enumerate(arrays.horizons):
        out[d[found], s[found], k] = oracle[f"oracle_{h}d"].to_numpy()[found]
    return out
