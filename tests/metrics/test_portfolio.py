"""Long-short simulator on hand-computed books, and the JPX spread-return Sharpe against a per-day pandas copy of
the competition's formula."""

from __future__ import annotations

import statistics

import numpy as np
import pandas as pd
import pytest

from atft.config import PortfolioConfig
from atft.portfolio import jpx_sharpe, jpx_spread_returns, long_short_weights, simulate_long_short

# 6 stocks, 3 days. Day 0: long stock 3, short stock 0. Days 1-2: long stock 0, short stock 1.
SCORES = np.array(
    [
        [0.1, 0.5, 0.3, 0.9, 0.2, 0.4],
        [0.9, 0.1, 0.3, 0.8, 0.2, 0.4],
        [0.9, 0.1, 0.3, 0.8, 0.2, 0.4],
    ]
)
RETURNS = np.array(
    [
        [0.01, 0.02, -0.01, 0.03, 0.00, 0.01],  # gross 0.03 - 0.01 = 0.02
        [-0.02, 0.01, 0.00, 0.01, 0.00, 0.00],  # gross -0.02 - 0.01 = -0.03
        [0.01, -0.01, 0.00, 0.00, 0.00, 0.00],  # gross 0.01 + 0.01 = 0.02
    ]
)
ALL = np.ones(SCORES.shape, dtype=bool)
TOP1 = PortfolioConfig(top_k=1, cost_bps=10.0, annualisation=252)


def test_hand_computed_book() -> None:
    book = simulate_long_short(SCORES, RETURNS, ALL, TOP1)
    # Turnover: open both legs (2), swap both legs (|+2| + |-1| + |-1| = 4), hold (0); costs 10 bps of that.
    np.testing.assert_allclose(book.turnover, [2.0, 4.0, 0.0])
    np.testing.assert_allclose(book.costs, [0.002, 0.004, 0.0])
    expected = [0.02 - 0.002, -0.03 - 0.004, 0.02]
    np.testing.assert_allclose(book.daily_returns, expected)
    np.testing.assert_allclose(book.equity, [1.018, 1.018 * 0.966, 1.018 * 0.966 * 1.02])
    assert book.max_drawdown == pytest.approx(0.034)  # from the 1.018 peak down by 3.4%
    assert book.mean_turnover == pytest.approx(2.0)
    assert book.annual_return == pytest.approx(statistics.mean(expected) * 252)
    assert book.sharpe == pytest.approx(statistics.mean(expected) / statistics.stdev(expected) * np.sqrt(252))
    assert (book.annualisation, book.horizon, book.held_days) == (252, 1, 3)


def test_horizon_scales_returns_but_not_costs() -> None:
    book = simulate_long_short(SCORES, RETURNS, ALL, TOP1, horizon=5)
    np.testing.assert_allclose(book.daily_returns, [0.02 / 5 - 0.002, -0.03 / 5 - 0.004, 0.02 / 5])


def test_thin_day_is_flat_and_closing_the_book_is_charged() -> None:
    mask = ALL.copy()
    mask[1, 1:] = False  # day 1 has one stock: fewer than 2K
    scores = SCORES.copy()
    scores[2, 1] = np.nan  # a NaN score is never held: day 2 shorts stock 4 (return 0) instead of stock 1
    book = simulate_long_short(scores, RETURNS, mask, TOP1)
    np.testing.assert_allclose(book.turnover, [2.0, 2.0, 2.0])  # open, close everything, reopen
    np.testing.assert_allclose(book.daily_returns, [0.018, -0.002, 0.008])
    assert book.held_days == 2
    # NaN returns are not held either: day 2's best stock (0) has no return, so stock 3 is bought instead.
    returns = RETURNS.copy()
    returns[2, 0] = np.nan
    assert long_short_weights(SCORES, ALL & np.isfinite(returns), TOP1)[2, 3] == 1.0


def test_quantile_legs_ties_and_gross_exposure() -> None:
    scores = np.array([[5.0, 1, 2, 3, 4, 6, 7, 8, 9, 10], [1.0] * 10])
    mask = np.ones(scores.shape, dtype=bool)
    weights = long_short_weights(scores, mask, PortfolioConfig(quantile=0.2))  # K = 2 of 10
    np.testing.assert_allclose(weights[0], [0, -0.5, -0.5, 0, 0, 0, 0, 0, 0.5, 0.5])
    np.testing.assert_allclose(np.abs(weights).sum(axis=1), [2.0, 2.0])  # gross 2, net 0
    np.testing.assert_allclose(weights[1], [-0.5, -0.5, 0, 0, 0, 0, 0, 0, 0.5, 0.5])  # ties: by stock index
    mask[0, 4:] = False  # 4 stocks: K = floor(0.8) = 0, so nothing is held
    assert not long_short_weights(scores, mask, PortfolioConfig(quantile=0.2))[0].any()


def _competition_sharpe(frame: pd.DataFrame, portfolio_size: int) -> tuple[float, pd.Series]:
    """The JPX metric as published, per day: Rank 0 is the best score; legs of min(size, n // 2) stocks."""

    def spread(day: pd.DataFrame) -> float:
        size = min(portfolio_size, len(day) // 2)
        weights = np.linspace(start=2, stop=1, num=size)
        purchase = (day.sort_values(by="Rank")["Target"][:size] * weights).sum() / weights.mean()
        short = (day.sort_values(by="Rank", ascending=False)["Target"][:size] * weights).sum() / weights.mean()
        return purchase - short

    buf = frame.groupby("Date")[["Rank", "Target"]].apply(spread)
    return buf.mean() / buf.std(), buf


@pytest.mark.parametrize("portfolio_size", [200, 7])
def test_jpx_sharpe_matches_the_competition_formula(portfolio_size: int) -> None:
    rng = np.random.default_rng(11)
    days, stocks = 12, 450
    returns = 0.02 * rng.standard_normal((days, stocks))
    scores = returns + 0.05 * rng.standard_normal((days, stocks))
    mask = rng.random((days, stocks)) > 0.05
    mask[3, 300:] = False  # fewer than 2 x 200 stocks: legs of n // 2
    mask[4, 9:] = False  # at most 9 stocks: legs of n // 2 <= 4
    returns[rng.random((days, stocks)) < 0.02] = np.nan
    scores[rng.random((days, stocks)) < 0.02] = np.nan
    usable = mask & np.isfinite(returns) & np.isfinite(scores)
    d, s = np.nonzero(usable)
    frame = pd.DataFrame({"Date": d, "Score": scores[d, s], "Target": returns[d, s]})
    frame["Rank"] = frame.groupby("Date")["Score"].rank(ascending=False, method="first").astype(int) - 1
    expected, buf = _competition_sharpe(frame, portfolio_size)
    np.testing.assert_allclose(jpx_spread_returns(scores, returns, mask, portfolio_size), buf.to_numpy(), rtol=1e-10)
    assert jpx_sharpe(scores, returns, mask, portfolio_size) == pytest.approx(expected, rel=1e-10)


def test_jpx_day_without_two_stocks_is_left_out() -> None:
    scores = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    returns = np.array([[0.0, 0.01, 0.03], [0.0, 0.0, 0.01], [0.05, 0.0, 0.0]])
    mask = np.ones(scores.shape, dtype=bool)
    mask[2, 1:] = False
    spreads = jpx_spread_returns(scores, returns, mask)
    np.testing.assert_allclose(spreads, [0.03, 0.01, np.nan])  # one stock per leg: top minus bottom return
    assert jpx_sharpe(scores, returns, mask) == pytest.approx(np.mean([0.03, 0.01]) / np.std([0.03, 0.01], ddof=1))
