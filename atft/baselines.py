"""Reference signals a model has to beat on the same days: ridge and LightGBM on the CS-Z features, the 5-day
reversal factor, and, on a synthetic market, the oracle (the true expected forward returns).

Each gives dense ``[days, stocks, horizons]`` scores aligned with a :class:`FeatureArrays`, so they go through the
same metrics as a model's predictions. Ridge and LightGBM are fitted on training rows only, with the models' label
purge; LightGBM early-stops on the validation rows the model early-stops on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import lightgbm
import numpy as np
import pandas as pd

from atft.data.arrays import FeatureArrays
from schemas.manifest import FeatureManifest, group_positions

RIDGE_ALPHA = 10.0
# Qlib's Alpha158 LightGBM configuration (examples/benchmarks/LightGBM), a careful quant's first try and not tuned
# here on any test day; bagging_freq makes its subsample take effect, and the thread count is the caller's.
LIGHTGBM_PARAMS: dict[str, object] = {
    "objective": "mse",
    "learning_rate": 0.2,
    "colsample_bytree": 0.8879,
    "subsample": 0.8789,
    "bagging_freq": 1,
    "lambda_l1": 205.6999,
    "lambda_l2": 580.9768,
    "max_depth": 8,
    "num_leaves": 210,
    "seed": 7,
    "deterministic": True,
    "verbosity": -1,
}
LIGHTGBM_ROUNDS = 1000
LIGHTGBM_PATIENCE = 50  # rounds without a better validation loss before stopping, as Qlib
LIGHTGBM_FALLBACK_ROUNDS = 100
log = logging.getLogger(__name__)
REVERSAL_FEATURE = "ret_5d_cs_z"


def csz_columns(manifest: FeatureManifest) -> list[int]:
    """Positions of the CS-Z inputs: the ridge baseline's features."""
    return group_positions(["cs_z"], manifest.feature_groups, "the ridge baseline", f"manifest {manifest.sha256}")


def dense_rows(arrays: FeatureArrays, days: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[D, S, F] inputs, [D, S, H] CS-Z targets (NaN where invalid or absent) and their mask over ``days``."""
    mask = arrays.target_valid[days] & arrays.present[days][..., None]
    return arrays.x[days], np.where(mask, arrays.targets[days], np.nan), mask


def labelled_rows(
    arrays: FeatureArrays, days: Sequence[int], columns: list[int], horizon: int
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``columns`` and CS-Z labels at ``horizon`` of the stock-days of ``days`` whose label is valid and
    ends (execution lag + ``horizon`` sessions on) on or before the last of ``days``: the models' purge, so no label
    reaches past the window."""
    x, y, mask = dense_rows(arrays, days)
    k = arrays.horizons.index(horizon)
    rows = mask[..., k] & (np.asarray(days) + arrays.manifest.label_span(horizon) <= days[-1])[:, None]
    return x[rows][:, columns].astype(np.float64), y[..., k][rows].astype(np.float64)


def fit_ridge(arrays: FeatureArrays, train: Sequence[int], columns: list[int], horizon: int) -> np.ndarray:
    """Closed-form ridge weights on ``columns`` for one target horizon, from training rows only."""
    features, target = labelled_rows(arrays, train, columns, horizon)
    gram = features.T @ features + RIDGE_ALPHA * np.eye(len(columns))
    return np.linalg.solve(gram, features.T @ target)


def ridge_scores(
    fit_arrays: FeatureArrays, train: Sequence[int], arrays: FeatureArrays, days: Sequence[int], columns: list[int]
) -> np.ndarray:
    """[D, S, H] ridge scores on ``arrays``' ``days``, one fit per horizon on ``fit_arrays``' ``train`` days."""
    x = arrays.x[days][..., columns]
    return np.stack([x @ fit_ridge(fit_arrays, train, columns, h) for h in fit_arrays.horizons], axis=-1)


def fit_lightgbm(
    arrays: FeatureArrays, train: Sequence[int], valid: Sequence[int], columns: list[int], horizon: int,
    threads: int = 0,
) -> lightgbm.Booster:  # fmt: skip
    """LightGBM on ``columns`` for one horizon: fitted on the training rows, early-stopped on the validation rows,
    each window purged as the models' are. ``threads`` 0 is LightGBM's default (OpenMP's)."""
    x, y = labelled_rows(arrays, train, columns, horizon)
    xv, yv = labelled_rows(arrays, valid, columns, horizon)
    if not len(y):
        raise ValueError(f"LightGBM at {horizon}d: no training row has a label ({len(train)} training days)")
    train_set = lightgbm.Dataset(x, y)
    params = {**LIGHTGBM_PARAMS, "num_threads": threads}
    if not len(yv):
        # A validation window shorter than the horizon has no label to stop on: a fixed, short fit instead.
        log.warning("LightGBM at %dd: no validation label in %d days; %d rounds without early stopping",
                    horizon, len(valid), LIGHTGBM_FALLBACK_ROUNDS)  # fmt: skip
        return lightgbm.train(params, train_set, num_boost_round=LIGHTGBM_FALLBACK_ROUNDS)
    return lightgbm.train(
        params,
        train_set,
        num_boost_round=LIGHTGBM_ROUNDS,
        valid_sets=[lightgbm.Dataset(xv, yv, reference=train_set)],
        callbacks=[lightgbm.early_stopping(LIGHTGBM_PATIENCE, verbose=False)],
    )


def lightgbm_scores(
    fit_arrays: FeatureArrays, train: Sequence[int], valid: Sequence[int], arrays: FeatureArrays,
    days: Sequence[int], columns: list[int], threads: int = 0,
) -> np.ndarray:  # fmt: skip
    """[D, S, H] LightGBM scores on ``arrays``' ``days``, one booster per horizon fitted on ``fit_arrays``."""
    x = arrays.x[days][..., columns]
    flat = x.reshape(-1, len(columns)).astype(np.float64)
    scores = []
    for h in fit_arrays.horizons:
        booster = fit_lightgbm(fit_arrays, train, valid, columns, h, threads)
        scores.append(booster.predict(flat, num_iteration=booster.best_iteration).reshape(x.shape[:2]))
    return np.stack(scores, axis=-1)


BASELINES = ("ridge", "lightgbm")


def baseline_scores(
    name: str, fit_arrays: FeatureArrays, train: Sequence[int], valid: Sequence[int], arrays: FeatureArrays,
    days: Sequence[int], columns: list[int], threads: int = 0,
) -> np.ndarray:  # fmt: skip
    """[D, S, H] scores of the fitted baseline ``name`` (one of :data:`BASELINES`) on ``arrays``' ``days``."""
    if name == "ridge":
        return ridge_scores(fit_arrays, train, arrays, days, columns)
    if name == "lightgbm":
        return lightgbm_scores(fit_arrays, train, valid, arrays, days, columns, threads)
    raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")


def reversal_scores(arrays: FeatureArrays, days: Sequence[int]) -> np.ndarray:
    """[D, S, H] minus the CS-Z 5-day return, the same score for every horizon."""
    reversal = -arrays.x[days][..., arrays.manifest.feature_names.index(REVERSAL_FEATURE)]
    return np.repeat(reversal[..., None], len(arrays.horizons), axis=-1)


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
