"""Forward-return targets: close-to-close at lag 0, entered ``execution_lag`` sessions later otherwise."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from atft.features.panel import MarketPanel
from atft.features.targets import forward_returns

HORIZONS = [1, 5, 10, 20]
STOCKS, DAYS = 6, 60


def panel(seed: int = 0) -> MarketPanel:
    """Random closes; stock 1 halts on days 20-22 (alive, not present), stock 2 delists after day 40, stock 3
    lists on day 10."""
    rng = np.random.default_rng(seed)
    close = 100 * np.cumprod(1 + 0.02 * rng.standard_normal((STOCKS, DAYS)), axis=1)
    present = np.ones((STOCKS, DAYS), dtype=bool)
    present[1, 20:23] = False
    present[2, 41:] = False
    present[3, :10] = False
    alive = present.copy()
    alive[1, 20:23] = True
    close[1, 20:23] = close[1, 19]  # a halt carries the last close forward, as load_panel does
    close = np.where(alive, close, np.nan)
    nothing = np.zeros_like(close)
    return MarketPanel(
        codes=np.array([f"{1300 + i}" for i in range(STOCKS)], dtype=object),
        dates=pd.bdate_range("2024-01-01", periods=DAYS),
        present=present, alive=alive, open=close, high=close, low=close, close=close,
        volume=nothing, turnover=nothing, sector=None,
    )  # fmt: skip


def close_to_close(p: MarketPanel, horizons: list[int]) -> np.ndarray:
    """The targets before execution lags existed, verbatim: close[t+h] / close[t] - 1."""
    close, n_days = p.close, p.shape[1]
    out = np.full((n_days, p.shape[0], len(horizons)), np.nan, dtype=np.float32)
    for j, h in enumerate(horizons):
        if h >= n_days:
            continue
        valid = p.present[:, :-h] & p.alive[:, h:]
        out[:-h, :, j] = np.where(valid, close[:, h:] / close[:, :-h] - 1.0, np.nan).T
    return out


def test_lag_0_reproduces_close_to_close_targets_exactly():
    p = panel()
    assert np.array_equal(forward_returns(p, HORIZONS, 0), close_to_close(p, HORIZONS), equal_nan=True)
    assert np.array_equal(forward_returns(p, HORIZONS), close_to_close(p, HORIZONS), equal_nan=True)
    assert np.array_equal(forward_returns(p, [1, 70]), close_to_close(p, [1, 70]), equal_nan=True)


@pytest.mark.parametrize("lag", [1, 2])
def test_a_lagged_target_is_the_return_from_the_close_lag_sessions_later(lag):
    p = panel()
    got = forward_returns(p, HORIZONS, lag)
    for j, h in enumerate(HORIZONS):
        t = np.arange(DAYS - lag - h)
        expected = p.close[0, t + lag + h] / p.close[0, t + lag] - 1
        assert np.allclose(got[t, 0, j], expected, rtol=1e-6)
        # The last lag + h days of the data have no target.
        assert np.isnan(got[DAYS - lag - h :, :, j]).all()


def test_with_lag_1_a_days_labels_ignore_its_own_close():
    p, t = panel(), 30
    moved = p.close.copy()
    moved[:, t] *= 1.5
    shaken = forward_returns(dataclasses.replace(p, close=moved), HORIZONS, 1)
    base = forward_returns(p, HORIZONS, 1)
    # Day t's labels are built from closes t+1 on: its own close does not enter them.
    assert np.array_equal(shaken[t], base[t], equal_nan=True)
    assert np.array_equal(shaken[t + 1 :], base[t + 1 :], equal_nan=True)
    # The day before enters at t's close, so its labels do move; at lag 0, day t's own labels move.
    assert not np.allclose(shaken[t - 1], base[t - 1], equal_nan=True)
    lag0 = forward_returns(dataclasses.replace(p, close=moved), HORIZONS, 0)
    assert not np.allclose(lag0[t], forward_returns(p, HORIZONS, 0)[t], equal_nan=True)
    # And the close at t+1, the entry, does move day t's labels.
    entry = p.close.copy()
    entry[:, t + 1] *= 1.5
    assert not np.allclose(forward_returns(dataclasses.replace(p, close=entry), HORIZONS, 1)[t], base[t])


def test_a_lagged_target_needs_the_stock_at_t_and_listed_at_entry_and_exit():
    got = forward_returns(panel(), HORIZONS, 1)
    one = HORIZONS.index(1)
    # Halted (alive, no row) days have no label of their own, but can be an entry or an exit.
    assert np.isnan(got[20:23, 1]).all() and np.isfinite(got[19, 1, one]) and np.isfinite(got[18, 1, one])
    # Delisted after day 40: the last label enters at 40 - h and exits at 40.
    for j, h in enumerate(HORIZONS):
        assert np.isfinite(got[40 - 1 - h, 2, j]) and np.isnan(got[40 - h : 41, 2, j]).all()
    # Listed on day 10: no label before it, and day 10's label enters at day 11.
    assert np.isnan(got[:10, 3]).all() and np.isfinite(got[10, 3]).all()
