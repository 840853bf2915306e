"""cs_zscore: per-day statistics over the stocks with a value, guards, clipping, NaN handling, and the
bit-for-bit day independence that incremental feature rebuilds rely on."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from atft.features.cross_section import cs_zscore, fill_missing

LOOSE = {"clip": np.inf, "min_stocks": 2, "min_std": 1e-12}  # no clipping, guards only for degenerate slices


def _panel(days: int = 30, stocks: int = 40, features: int = 5, *, nan_share: float = 0.1, seed: int = 0):
    rng = np.random.default_rng(seed)
    # Features on different scales and offsets, with a day effect, so that a wrong axis shows.
    panel = rng.standard_normal((days, stocks, features)) * rng.uniform(0.5, 50, features)
    panel += rng.normal(0, 10, (days, 1, features)) + rng.uniform(-100, 100, features)
    panel[rng.random(panel.shape) < nan_share] = np.nan
    return panel


def _numpy_reference(panel: np.ndarray, ddof: int = 1) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(panel, axis=1, keepdims=True)
        std = np.nanstd(panel, axis=1, ddof=ddof, keepdims=True)
    return (panel - mean) / std


@pytest.mark.parametrize("ddof", [1, 0])
def test_matches_per_day_numpy_reference(ddof: int) -> None:
    panel = _panel()
    z = cs_zscore(panel, **LOOSE, ddof=ddof)
    assert z.dtype == np.float32 and z.shape == panel.shape
    np.testing.assert_allclose(z, _numpy_reference(panel, ddof), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.nanmean(z, axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(np.nanstd(z.astype(np.float64), axis=1, ddof=ddof), 1, atol=1e-5)


def test_matches_pandas_groupby_transform() -> None:
    rng = np.random.default_rng(3)
    dates = pd.date_range("2024-01-04", periods=6, freq="B")
    codes = [f"{1300 + i}" for i in range(12)]
    long = pd.DataFrame([(d, c) for d in dates for c in codes], columns=["Date", "Code"])
    cols = ["ret_1d", "volume_z"]
    long[cols] = rng.standard_normal((len(long), 2)) * [0.02, 3.0] + [0.001, 10.0]
    long.loc[rng.random(len(long)) < 0.15, "ret_1d"] = np.nan
    long = long[rng.random(len(long)) > 0.1]  # absent rows: stocks not listed that day
    # A day where one feature has a single value: pandas' std is NaN there, our min_stocks gives NaN too.
    last = long["Date"] == dates[-1]
    long.loc[last & (long["Code"] != long.loc[last, "Code"].iloc[0]), "volume_z"] = np.nan

    g = long.groupby("Date")[cols]
    expected = (long[cols] - g.transform("mean")) / g.transform("std")

    wide = long.pivot(index="Date", columns="Code", values=cols).reindex(columns=codes, level=1)
    panel = wide.to_numpy().reshape(len(dates), len(cols), -1).transpose(0, 2, 1)
    z = cs_zscore(np.ascontiguousarray(panel), **LOOSE)
    got = z[wide.index.get_indexer(long["Date"]), pd.Index(codes).get_indexer(long["Code"])]

    assert np.isnan(expected.loc[last, "volume_z"]).all()
    np.testing.assert_allclose(got, expected.to_numpy(), rtol=1e-5, atol=1e-6)


def test_planted_outliers_are_clipped_to_exactly_the_bound() -> None:
    panel = _panel(days=4, stocks=60, nan_share=0.0)
    panel[1, 7, 2] = 1e6
    panel[2, 9, 3] = -1e6
    unclipped = cs_zscore(panel, **LOOSE)
    z = cs_zscore(panel, clip=3.0, min_stocks=2, min_std=1e-12)
    assert z[1, 7, 2] == 3.0 and z[2, 9, 3] == -3.0
    assert unclipped[1, 7, 2] > 3.0 and unclipped[2, 9, 3] < -3.0
    assert np.abs(z).max() == 3.0
    inside = np.abs(unclipped) < 3.0
    assert np.array_equal(z[inside], unclipped[inside])


def test_constant_feature_on_a_day_is_nan_for_that_day() -> None:
    panel = _panel(days=3, stocks=50, nan_share=0.0)
    panel[1, :, 2] = 0.1  # not representable: the float64 mean is off by an ulp, so std is tiny, not 0
    z = cs_zscore(panel, clip=5.0, min_stocks=2, min_std=1e-9)
    assert np.isnan(z[1, :, 2]).all()
    assert np.isfinite(np.delete(z[1], 2, axis=1)).all()
    assert np.isfinite(z[[0, 2]]).all()


def test_zero_std_is_nan_even_with_min_std_zero() -> None:
    panel = _panel(days=2, stocks=10, nan_share=0.0)
    panel[0, :, 1] = 1.0  # representable: the mean is exact and std exactly 0
    panel[0, :, 2] = np.arange(10) * 1e-200  # squared deviations underflow: std is 0 though values differ
    z = cs_zscore(panel, clip=5.0, min_stocks=2, min_std=0.0)
    assert np.isnan(z[0, :, 1:3]).all()
    assert np.isfinite(z[0, :, [0, 3, 4]]).all() and np.isfinite(z[1]).all()


def test_std_below_min_std_is_nan_and_above_is_kept() -> None:
    rng = np.random.default_rng(5)
    panel = np.empty((2, 30, 1))
    panel[0, :, 0] = 7.0 + rng.standard_normal(30) * 1e-7  # std ~1e-7
    panel[1, :, 0] = 7.0 + rng.standard_normal(30) * 1e-5  # std ~1e-5
    z = cs_zscore(panel, clip=5.0, min_stocks=2, min_std=1e-6)
    assert np.isnan(z[0]).all()
    assert np.isfinite(z[1]).all()


def test_too_few_stocks_is_nan_for_that_day_and_feature() -> None:
    panel = _panel(days=3, stocks=20, nan_share=0.0)
    panel[0, 5:, 1] = np.nan  # 5 stocks with a value
    panel[1, 4:, 1] = np.nan  # 4 stocks
    z = cs_zscore(panel, clip=5.0, min_stocks=5, min_std=1e-12)
    assert np.isfinite(z[0, :5, 1]).all()
    assert np.isnan(z[1, :, 1]).all()
    assert np.isfinite(np.delete(z[1], 1, axis=1)).all()
    assert np.isfinite(z[2]).all()


def test_nan_passes_through_and_counts_as_absent() -> None:
    panel = _panel(nan_share=0.05)
    missing = np.isnan(panel)
    z = cs_zscore(panel, **LOOSE)
    assert np.array_equal(np.isnan(z), missing)
    # A stock that is NaN on every day is the same as a stock that is not in the panel at all.
    panel[:, 3, :] = np.nan
    with_gap = cs_zscore(panel, **LOOSE)
    without = cs_zscore(np.delete(panel, 3, axis=1), **LOOSE)
    assert np.isnan(with_gap[:, 3, :]).all()
    assert np.array_equal(np.delete(with_gap, 3, axis=1), without, equal_nan=True)


def test_non_finite_statistics_make_their_slice_nan_not_garbage() -> None:
    panel = _panel(days=2, nan_share=0.0)
    panel[0, 4, 1] = np.inf
    panel[0, :, 2] *= 1e200  # squared deviations overflow: std is inf
    z = cs_zscore(panel, **LOOSE)
    assert np.isnan(z[0, :, 1:3]).all()
    assert np.isfinite(z[0, :, [0, 3, 4]]).all() and np.isfinite(z[1]).all()


def test_changing_later_days_never_changes_earlier_days() -> None:
    panel = _panel()
    z = cs_zscore(panel, **LOOSE)
    for d in (0, 10, 28):
        changed = panel.copy()
        changed[d + 1 :] = np.random.default_rng(d).standard_normal(changed[d + 1 :].shape) * 1e3
        z_changed = cs_zscore(changed, **LOOSE)
        assert np.array_equal(z_changed[: d + 1], z[: d + 1], equal_nan=True)
        assert not np.array_equal(z_changed[d + 1 :], z[d + 1 :], equal_nan=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_days_result_does_not_depend_on_the_panel_around_it(dtype: type) -> None:
    # Enough stocks that a blocked or pairwise summation would group differently from a sequential one.
    panel = _panel(days=25, stocks=301, features=7, nan_share=0.08, seed=11).astype(dtype)
    kwargs = {"clip": 4.0, "min_stocks": 3, "min_std": 1e-9}
    full = cs_zscore(panel, **kwargs)
    for a, b in [(0, 1), (3, 4), (24, 25), (5, 17), (1, 25)]:
        assert np.array_equal(cs_zscore(panel[a:b], **kwargs), full[a:b], equal_nan=True)
        # A copy sits at a different alignment than the view.
        assert np.array_equal(cs_zscore(panel[a:b].copy(), **kwargs), full[a:b], equal_nan=True)
    shuffled = np.random.default_rng(0).permutation(25)
    assert np.array_equal(cs_zscore(panel[shuffled], **kwargs), full[shuffled], equal_nan=True)


def test_float32_input_gets_float64_statistics() -> None:
    panel32 = (_panel() * 1e3 + 1e5).astype(np.float32)  # large offset: float32 sums would lose digits
    z32 = cs_zscore(panel32, **LOOSE)
    z64 = cs_zscore(panel32.astype(np.float64), **LOOSE)
    assert z32.dtype == z64.dtype == np.float32
    assert np.array_equal(z32, z64, equal_nan=True)
    np.testing.assert_allclose(z32, _numpy_reference(panel32.astype(np.float64)), rtol=1e-5, atol=1e-5)


def test_non_contiguous_input_gives_the_same_result() -> None:
    panel = _panel()
    strided = np.asfortranarray(panel)
    assert not strided.flags.c_contiguous
    assert np.array_equal(cs_zscore(strided, **LOOSE), cs_zscore(panel, **LOOSE), equal_nan=True)


@pytest.mark.parametrize(
    ("panel", "kwargs", "error"),
    [
        (np.zeros((2, 3)), {}, ValueError),
        (np.zeros((2, 3, 1), dtype=np.int64), {}, TypeError),
        (np.zeros((2, 3, 1)), {"clip": 0.0}, ValueError),
        (np.zeros((2, 3, 1)), {"min_stocks": 1}, ValueError),
        (np.zeros((2, 3, 1)), {"min_std": -1e-8}, ValueError),
        (np.zeros((2, 3, 1)), {"ddof": -1}, ValueError),
    ],
)
def test_rejects_bad_arguments(panel: np.ndarray, kwargs: dict, error: type) -> None:
    with pytest.raises(error):
        cs_zscore(panel, **{**LOOSE, **kwargs})


def test_fill_missing() -> None:
    z = np.array([[[1.5, np.nan], [np.nan, -2.0]]], dtype=np.float32)
    original = z.copy()
    assert fill_missing(z, "none") is z
    filled = fill_missing(z, "zero")
    assert filled is not z and filled.dtype == np.float32
    assert np.array_equal(filled, np.array([[[1.5, 0.0], [0.0, -2.0]]], dtype=np.float32))
    assert np.array_equal(z, original, equal_nan=True)
    with pytest.raises(ValueError, match=r"'none', 'zero'.*'mean'"):
        fill_missing(z, "mean")
