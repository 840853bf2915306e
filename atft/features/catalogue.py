"""The base feature set: per-stock time series, sector-relative and market-level features.

Each feature declares its group and its lookback: how many sessions of raw data, the current one
included, its value at day t depends on. An incremental rebuild loads that much history and no more,
and the manifest records it. Bump ``FEATURE_CODE_VERSION`` whenever a definition changes: it is part of
the manifest hash, so old checkpoints refuse new features instead of silently reading them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from atft.features.panel import MarketPanel
from atft.features.rolling import (
    ema,
    lag,
    safe_divide,
    window_cov,
    window_extreme,
    window_mean,
    window_moment,
    window_std,
)

FEATURE_CODE_VERSION = "features-2026.11.1"
Array = np.ndarray  # a [stocks, days] float64 panel unless noted
Series = dict[int, np.ndarray]  # window length -> panel
RETURN_HORIZONS = (1, 5, 10, 20, 60)


@dataclass(frozen=True)
class FeatureDef:
    name: str
    group: str
    lookback: int


class FeatureSet:
    """Collects computed features into one ``[days, stocks, features]`` float32 block, in definition order."""

    def __init__(self, panel: MarketPanel, capacity: int) -> None:
        self.defs: list[FeatureDef] = []
        self._panel = panel
        self.values = np.empty((panel.shape[1], panel.shape[0], capacity), dtype=np.float32)

    def add(self, name: str, group: str, lookback: int, values: np.ndarray) -> None:
        if len(self.defs) == self.values.shape[2]:
            raise RuntimeError(f"feature capacity {self.values.shape[2]} exceeded at {name!r}")
        # Only rows that exist carry a value: no feature for a halt day or outside a stock's life.
        values = np.where(self._panel.present & np.isfinite(values), values, np.nan)
        self.values[:, :, len(self.defs)] = values.T
        self.defs.append(FeatureDef(name, group, lookback))

    def block(self) -> np.ndarray:
        return self.values[:, :, : len(self.defs)]


def present_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-day mean of ``values`` over the stocks in ``mask`` with a finite value; NaN on an empty day.

    Accumulated stock by stock in code order: a day's mean depends only on that day's values.
    """
    use = mask & np.isfinite(values)
    total = np.zeros(values.shape[1])
    count = np.zeros(values.shape[1])
    for row, keep in zip(values, use, strict=True):
        total += np.where(keep, row, 0.0)
        count += keep
    return safe_divide(total, count)


def group_mean(values: np.ndarray, mask: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Each stock gets the per-day mean of its own group (e.g. its sector) that day; NaN without a group."""
    out = np.full(values.shape, np.nan)
    for g in np.unique(groups[groups >= 0]):
        member = groups == g
        out = np.where(member, present_mean(values, mask & member)[None, :], out)
    return out


def definitions(sectors: bool) -> list[FeatureDef]:
    """The features ``compute_features`` produces, in order, without any data.

    Computed on a one-stock, one-day panel, so the declared list and the computed one cannot disagree.
    """
    one = np.ones((1, 1))
    panel = MarketPanel(
        codes=np.array(["0000"], dtype=object),
        dates=pd.DatetimeIndex(["2000-01-04"]),
        present=one.astype(bool),
        alive=one.astype(bool),
        open=one, high=one, low=one, close=one, volume=one, turnover=one,
        sector=np.zeros((1, 1), dtype=np.int16) if sectors else None,
    )  # fmt: skip
    with np.errstate(all="ignore"):
        return compute_features(panel, sectors).defs


def compute_features(panel: MarketPanel, sectors: bool) -> FeatureSet:
    """All base features of ``panel``; sector features only when ``sectors`` and the panel has sector data."""
    use_sectors = sectors and panel.sector is not None and bool((panel.sector >= 0).any())
    out = FeatureSet(panel, capacity=96)
    c, o, h, lo = panel.close, panel.open, panel.high, panel.low
    v, tv, p = panel.volume, panel.turnover, panel.present
    r1 = c / lag(c, 1) - 1.0
    lr1 = np.log(c / lag(c, 1))
    returns = {n: c / lag(c, n) - 1.0 for n in RETURN_HORIZONS}
    sma = {n: window_mean(c, n) for n in (5, 10, 20, 60)}

    _price(out, c, o, h, lo, r1, returns, sma)
    market = present_mean(lr1, p)
    _volatility(out, c, h, lo, lr1, market)
    _volume(out, c, v, tv, r1)
    _market(out, p, r1, returns, c, sma[20], market)
    if use_sectors:
        _sector(out, p, r1, lr1, returns, panel.sector)
    return out


def _price(out: FeatureSet, c: Array, o: Array, h: Array, lo: Array, r1: Array, returns: Series, sma: Series) -> None:
    add = out.add
    for n in RETURN_HORIZONS:
        add(f"ret_{n}d", "price", n + 1, returns[n])
    for n in RETURN_HORIZONS:
        add(f"logret_{n}d", "price", n + 1, np.log1p(returns[n]))
    for n in (5, 10, 20, 60):
        add(f"ma_ratio_{n}", "price", n, c / sma[n] - 1.0)
    add("ma_cross_5_20", "price", 20, sma[5] / sma[20] - 1.0)
    add("ma_cross_20_60", "price", 60, sma[20] / sma[60] - 1.0)
    # MACD on truncated EMAs (2 x span each): a finite, declared lookback.
    macd = (ema(c, 12, 24) - ema(c, 26, 52)) / c
    signal = ema(macd, 9, 18)
    add("macd", "price", 52, macd)
    add("macd_signal", "price", 52 + 17, signal)
    add("macd_hist", "price", 52 + 17, macd - signal)
    # Cutler's RSI (simple means of gains and losses): Wilder's smoothing would need unbounded history.
    gains, losses = window_mean(np.maximum(r1, 0.0), 14), window_mean(np.maximum(-r1, 0.0), 14)
    add("rsi_14", "price", 15, safe_divide(gains, gains + losses))
    std20 = window_std(c, 20)
    add("bb_pos_20", "price", 20, safe_divide(c - sma[20], 2.0 * std20))
    add("bb_width_20", "price", 20, safe_divide(4.0 * std20, sma[20]))
    for n in (20, 60):
        add(f"dist_high_{n}", "price", n, c / window_extreme(h, n, largest=True) - 1.0)
        add(f"dist_low_{n}", "price", n, c / window_extreme(lo, n, largest=False) - 1.0)
    add("gap_overnight", "price", 2, o / lag(c, 1) - 1.0)
    add("ret_intraday", "price", 1, c / o - 1.0)
    low14, high14 = window_extreme(lo, 14, largest=False), window_extreme(h, 14, largest=True)
    add("stoch_k_14", "price", 14, safe_divide(c - low14, high14 - low14))
    add("mom_accel_5", "price", 11, returns[5] - lag(returns[5], 5))
    add("up_frac_20", "price", 21, window_mean(np.where(np.isnan(r1), np.nan, (r1 > 0).astype(float)), 20))
    add("max_ret_20", "price", 21, window_extreme(r1, 20, largest=True))
    add("min_ret_20", "price", 21, window_extreme(r1, 20, largest=False))


def _volatility(out: FeatureSet, c: Array, h: Array, lo: Array, lr1: Array, market: Array) -> None:
    add = out.add
    rv = {n: window_std(lr1, n) for n in (5, 10, 20, 60)}
    for n, values in rv.items():
        add(f"rv_{n}", "volatility", n + 1, values)
    add("rv_ratio_5_20", "volatility", 21, safe_divide(rv[5], rv[20]))
    add("rv_ratio_20_60", "volatility", 61, safe_divide(rv[20], rv[60]))
    prev = lag(c, 1)
    true_range = np.maximum(h, prev) - np.minimum(lo, prev)
    for n in (5, 14):
        add(f"atr_{n}", "volatility", n + 1, window_mean(true_range, n) / c)
    hl = np.log(h / lo)
    add("range_hl", "volatility", 1, h / lo - 1.0)
    add("range_hl_5", "volatility", 5, window_mean(h / lo - 1.0, 5))
    add("range_hl_20", "volatility", 20, window_mean(h / lo - 1.0, 20))
    add("parkinson_20", "volatility", 20, np.sqrt(window_mean(hl * hl, 20) / (4.0 * np.log(2.0))))
    add("downside_vol_20", "volatility", 21, np.sqrt(window_mean(np.minimum(lr1, 0.0) ** 2, 20)))
    var20 = window_moment(lr1, 20, 2)
    add("skew_20", "volatility", 21, safe_divide(window_moment(lr1, 20, 3), var20**1.5))
    add("kurt_20", "volatility", 21, safe_divide(window_moment(lr1, 20, 4), var20**2) - 3.0)
    m = np.broadcast_to(market, lr1.shape)
    var_m = window_std(m, 60) ** 2
    cov = window_cov(lr1, m, 60)
    beta = safe_divide(cov, var_m)
    var_i = window_std(lr1, 60) ** 2
    add("beta_60", "volatility", 61, beta)
    add("corr_mkt_60", "volatility", 61, safe_divide(cov, np.sqrt(var_i * var_m)))
    add("idio_vol_60", "volatility", 61, np.sqrt(np.maximum(var_i - beta * cov, 0.0)))


def _volume(out: FeatureSet, c: Array, v: Array, tv: Array, r1: Array) -> None:
    add = out.add
    for n in (5, 20, 60):
        add(f"vol_ratio_{n}", "volume", n, safe_divide(v, window_mean(v, n)))
    for n in (5, 20, 60):
        add(f"turnover_ratio_{n}", "volume", n, safe_divide(tv, window_mean(tv, n)))
    add("log_turnover_20", "volume", 20, np.log1p(window_mean(tv, 20)))
    add("log_volume_20", "volume", 20, np.log1p(window_mean(v, 20)))
    # Amihud: price impact per unit of traded value, scaled to yen-billions so values are O(1).
    add("amihud_20", "volume", 21, window_mean(safe_divide(np.abs(r1), tv / 1e9), 20))
    add("vol_trend_5_20", "volume", 20, safe_divide(window_mean(v, 5), window_mean(v, 20)))
    log_v = np.log1p(v)
    add("log_volume_std_20", "volume", 20, window_std(log_v, 20))
    add("pv_corr_20", "volume", 21, _window_corr(r1, log_v - lag(log_v, 1), 20))
    add("vwap_dist", "volume", 1, safe_divide(c * v, tv) - 1.0)


def _window_corr(x: np.ndarray, y: np.ndarray, w: int) -> np.ndarray:
    return safe_divide(window_cov(x, y, w), window_std(x, w) * window_std(y, w))


def _market(out: FeatureSet, p: Array, r1: Array, returns: Series, c: Array, sma20: Array, market_log: Array) -> None:
    add = out.add

    def broadcast(series: np.ndarray) -> np.ndarray:
        return np.broadcast_to(series, p.shape)

    market_1d = present_mean(r1, p)
    add("mkt_ret_1d", "market", 2, broadcast(market_1d))
    add("mkt_ret_5d", "market", 6, broadcast(present_mean(returns[5], p)))
    add("mkt_ret_20d", "market", 21, broadcast(present_mean(returns[20], p)))
    add("mkt_vol_20", "market", 21, broadcast(window_std(market_log, 20)))
    add("mkt_vol_60", "market", 61, broadcast(window_std(market_log, 60)))
    add("breadth_1d", "market", 2, broadcast(present_mean(np.where(np.isnan(r1), np.nan, r1 > 0), p)))
    above = np.where(np.isnan(sma20), np.nan, c > sma20)
    add("breadth_ma20", "market", 20, broadcast(present_mean(above, p)))
    deviation = (r1 - market_1d) ** 2
    add("mkt_dispersion_1d", "market", 2, broadcast(np.sqrt(present_mean(deviation, p))))


def _sector(out: FeatureSet, p: Array, r1: Array, lr1: Array, returns: Series, sector: Array) -> None:
    add = out.add
    for n, lookback in ((1, 2), (5, 6), (20, 21)):
        mean = group_mean(returns[n], p, sector)
        add(f"sec_ret_{n}d", "sector", lookback, mean)
        add(f"rel_sec_ret_{n}d", "sector", lookback, returns[n] - mean)
    # Volatility of the stock's sector's daily mean log return, over the sector series of the last 20 days.
    sector_vol = np.full(lr1.shape, np.nan)
    for g in np.unique(sector[sector >= 0]):
        series = present_mean(lr1, p & (sector == g))
        sector_vol = np.where(sector == g, window_std(series, 20)[None, :], sector_vol)
    add("sec_vol_20", "sector", 21, sector_vol)
    add("sec_breadth_1d", "sector", 2, group_mean(np.where(np.isnan(r1), np.nan, r1 > 0), p, sector))
