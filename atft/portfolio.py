"""Portfolio simulation of a day-by-day score: a costed long-short book and the JPX spread-return Sharpe.

Inputs are dense ``[D, S]`` arrays (days x stocks). A stock counts on a day only if it is in ``mask`` and both its
score and its realised return are finite; so, as in any label-based backtest, a stock whose return is unknown is
never held.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from atft.config import PortfolioConfig

JPX_PORTFOLIO_SIZE = 200  # stocks per leg in the JPX Tokyo Stock Exchange Prediction metric
JPX_TOPRANK_WEIGHT_RATIO = 2.0  # weight of the best-ranked stock of a leg relative to the last one


@dataclass(frozen=True)
class LongShortResult:
    """The simulated book. Daily series are ``[D]``; summary statistics use every day, flat days included."""

    daily_returns: np.ndarray  # net of costs
    costs: np.ndarray  # cost_bps / 1e4 x turnover; gross return = daily_returns + costs
    turnover: np.ndarray  # sum over stocks of |w_t - w_{t-1}|, from zero weights before the first day
    equity: np.ndarray  # cumprod(1 + daily_returns): the equity curve, starting from 1 before the first day
    annual_return: float  # mean(daily_returns) x annualisation (arithmetic, not compounded)
    sharpe: float  # mean / std (ddof=1) of daily_returns x sqrt(annualisation)
    max_drawdown: float  # largest fall of the equity curve from its running peak, as a positive fraction
    mean_turnover: float
    annualisation: int  # trading days per year used for annual_return and sharpe
    horizon: int  # the label horizon h; each day earns the h-day return / h
    held_days: int  # days with a book; the others were flat (too few stocks)


def long_short_weights(scores: np.ndarray, mask: np.ndarray, config: PortfolioConfig) -> np.ndarray:
    """``[D, S]`` weights: +1/K on each day's K highest scores, -1/K on the K lowest, 0 elsewhere.

    Gross exposure is 2 (each leg has absolute weight 1) and net exposure 0. K is ``config.top_k``, or
    floor(quantile x the day's stock count) when top_k is None. A day with fewer than 2K stocks (or K < 1) holds
    nothing. Equal scores are ordered by stock index (a stable sort), so ties are broken deterministically.
    """
    mask = mask & np.isfinite(scores)
    n = mask.sum(axis=1)
    if config.top_k is not None:
        k = np.full_like(n, config.top_k)
    else:
        # The epsilon keeps e.g. 0.29 x 100 = 28.999... from flooring to 28.
        k = np.floor(config.quantile * n + 1e-9).astype(n.dtype)
    held = (k >= 1) & (n >= 2 * k)
    # Ascending with masked-out stocks (NaN) last, so the day's stocks take positions 0 .. n-1.
    order = np.argsort(np.where(mask, scores, np.nan), axis=1, kind="stable")
    position = np.argsort(order, axis=1)
    short = position < k[:, None]
    long = (position >= (n - k)[:, None]) & (position < n[:, None])
    weights = (long.astype(float) - short) / np.maximum(k, 1)[:, None]
    return np.where(held[:, None], weights, 0.0)


def simulate_long_short(
    scores: np.ndarray, returns: np.ndarray, mask: np.ndarray, config: PortfolioConfig, horizon: int = 1
) -> LongShortResult:
    """Rebalance daily into :func:`long_short_weights` and book each day's P&L net of costs.

    ``returns`` are the realised h-day forward returns (the label at ``horizon`` h, raw, not normalised). With daily
    rebalancing, h-day returns of consecutive days overlap; the simulator approximates a day's P&L by the h-day
    return divided by h, so the Sharpe and annual return are on a per-day scale for every horizon. Costs are
    charged in full on each day's turnover (weights are reset to equal weight every day; drift is ignored). A day
    with too few stocks is flat: its gross return is 0, but closing the previous book is charged like any trade.
    """
    mask = mask & np.isfinite(scores) & np.isfinite(returns)
    weights = long_short_weights(scores, mask, config)
    gross = (weights * np.where(mask, returns, 0.0)).sum(axis=1) / horizon
    turnover = np.abs(np.diff(weights, axis=0, prepend=0.0)).sum(axis=1)
    costs = config.cost_bps / 1e4 * turnover
    daily = gross - costs
    equity = np.cumprod(1.0 + daily)
    peak = np.maximum.accumulate(np.concatenate([[1.0], equity]))[1:]
    return LongShortResult(
        daily_returns=daily,
        costs=costs,
        turnover=turnover,
        equity=equity,
        annual_return=float(daily.mean() * config.annualisation) if daily.size else float("nan"),
        sharpe=sharpe_ratio(daily, config.annualisation),
        max_drawdown=float((1.0 - equity / peak).max()) if daily.size else float("nan"),
        mean_turnover=float(turnover.mean()) if daily.size else float("nan"),
        annualisation=config.annualisation,
        horizon=horizon,
        held_days=int((weights != 0).any(axis=1).sum()),
    )


def jpx_spread_returns(
    scores: np.ndarray,
    returns: np.ndarray,
    mask: np.ndarray,
    portfolio_size: int = JPX_PORTFOLIO_SIZE,
    toprank_weight_ratio: float = JPX_TOPRANK_WEIGHT_RATIO,
) -> np.ndarray:
    """``[D]`` daily spread returns of the JPX Tokyo Stock Exchange Prediction competition metric.

    Per day, with n = min(portfolio_size, the day's stock count // 2) so that the legs never overlap:
    w = linspace(toprank_weight_ratio, 1, n); S_up = sum(w x r of the n best scores, best first) / mean(w);
    S_down likewise over the n worst scores, worst first; spread = S_up - S_down. Days with fewer than 2 stocks
    give NaN. Equal scores are ordered by stock index.
    """
    mask = mask & np.isfinite(scores) & np.isfinite(returns)
    n_stocks = mask.sum(axis=1)
    size = np.minimum(portfolio_size, n_stocks // 2)[:, None]
    # Best score first, masked-out stocks (NaN) last.
    order = np.argsort(np.where(mask, -scores, np.nan), axis=1, kind="stable")
    ranked = np.take_along_axis(np.where(mask, returns, 0.0), order, axis=1)
    step = (toprank_weight_ratio - 1.0) / np.maximum(size - 1, 1)  # linspace's step, for any leg size
    best = np.arange(scores.shape[1])[None, :]  # 0 = best score of the day
    worst = n_stocks[:, None] - 1 - best  # 0 = worst score of the day; negative for masked-out positions
    up = np.where(best < size, toprank_weight_ratio - step * best, 0.0)
    down = np.where((worst >= 0) & (worst < size), toprank_weight_ratio - step * worst, 0.0)
    mean_weight = np.where(size == 1, toprank_weight_ratio, (toprank_weight_ratio + 1.0) / 2.0)
    spread = ((up - down) * ranked).sum(axis=1, keepdims=True) / mean_weight
    return np.where(size >= 1, spread, np.nan)[:, 0]


def jpx_sharpe(
    scores: np.ndarray,
    returns: np.ndarray,
    mask: np.ndarray,
    portfolio_size: int = JPX_PORTFOLIO_SIZE,
    toprank_weight_ratio: float = JPX_TOPRANK_WEIGHT_RATIO,
) -> float:
    """mean / std (ddof=1, as pandas) of :func:`jpx_spread_returns` over the days with a spread; not annualised,
    as in the competition."""
    return sharpe_ratio(jpx_spread_returns(scores, returns, mask, portfolio_size, toprank_weight_ratio))


def sharpe_ratio(daily: np.ndarray, annualisation: int = 1) -> float:
    """mean / std (ddof=1) x sqrt(annualisation) over the finite days; NaN with fewer than 2 days or zero std."""
    values = daily[np.isfinite(daily)]
    std = values.std(ddof=1) if values.size >= 2 else 0.0
    return float(values.mean() / std * np.sqrt(annualisation)) if std > 0 else float("nan")
