"""A deterministic, J-Quants-shaped Japanese equity market with a planted, known predictable component.

Daily close-to-close return of stock ``i`` on session ``t`` (adjusted terms)::

    r[i,t] = beta_i * m[t] + g_i * f[sector(i), t] + A[i,t-1] + sigma[i,t] * z[i,t]
    A[i,t] = phi * A[i,t-1] + kappa_i * s[i,t]

``m`` and ``f`` are market and sector factors, ``z`` idiosyncratic shocks: all Student-t (df 4, unit
variance) with GARCH(1,1) volatility. ``A`` is the predictable state; ``s[i,t]`` uses only information
known at the close of ``t`` and mixes four parts, each of about unit variance times its weight in
``signal_mix``:

1. short-term reversal of the stock's own 5-day return;
2. continuation of high-volume moves, ``tanh(volume_shock) * r / sigma`` (the shock is visible in Volume);
3. sector lead-lag: for followers, today's return of their sector's leaders (the largest stocks by
   base volume) relative to the average sector's leaders. A per-stock model cannot see it;
4. a market-state regime: after a market rally, a stock's 5-day return relative to the market
   reverses; after a sell-off, it continues (``tanh`` of the market's standardised 5-day return times
   the reversal). The sign of the effect flips with the market, so one linear coefficient per
   feature, fitted across regimes, sees little of it.

The library's default mix is parts 1-3 at weight 1 and no regime. Reversal dominates it and is linear in the CS-Z
features, so a ridge gets ~0.85x the oracle's RankIC there. The demo market (``deployments/demo.yaml``) adds the
regime at weight 2 and doubles the strength: to rank well there, a model has to combine a market-level input with a
stock-level one.

``oracle_h``, the expected return over the next ``h`` sessions known at the close of ``t``, is
``h * beta_i * MARKET_DRIFT + A[i,t] * (1 - phi**h) / (1 - phi)``: it sums expected daily returns,
ignoring compounding and the (near zero mean) contribution of signals that arrive after ``t``.

Generation is chunked and never holds more than one chunk of stocks, plus the leaders' returns and the
factors. Every stock draws from its own generator, so the data do not depend on ``chunk_stocks``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from atft.calendar import TradingCalendar
from atft.config import SyntheticSourceConfig
from atft.sources.base import LISTED_INFO_COLUMNS, ORACLE_COLUMNS, QuoteChunk
from schemas.columns import CANONICAL_QUOTE_COLUMNS

# TSE 33-industry code -> TOPIX-17 sector code.
SECTOR33_TO_17: dict[str, str] = {
    "0050": "1",
    "1050": "2",
    "2050": "3",
    "3050": "1",
    "3100": "4",
    "3150": "4",
    "3200": "4",
    "3250": "5",
    "3300": "2",
    "3350": "6",
    "3400": "3",
    "3450": "7",
    "3500": "7",
    "3550": "3",
    "3600": "8",
    "3650": "9",
    "3700": "6",
    "3750": "9",
    "3800": "10",
    "4050": "11",
    "5050": "12",
    "5100": "12",
    "5150": "12",
    "5200": "12",
    "5250": "10",
    "6050": "13",
    "6100": "14",
    "7050": "15",
    "7100": "16",
    "7150": "16",
    "7200": "16",
    "8050": "17",
    "9050": "10",
}
_SECTOR33 = np.array(sorted(SECTOR33_TO_17))
_SECTOR33_TO_IDX17 = np.array([int(SECTOR33_TO_17[c]) - 1 for c in _SECTOR33])
N_SECTORS = 17
_CODE_RANGE = (1300, 10_000)
_MARKETS = np.array(["0111", "0112", "0113"])  # Prime, Standard, Growth
_MARKET_WEIGHTS = (0.45, 0.40, 0.15)
_SPLIT_RATIOS = np.array([2, 3, 5, 10])
_SPLIT_WEIGHTS = (0.5, 0.2, 0.2, 0.1)

HORIZONS: tuple[int, ...] = (1, 5, 10, 20)
PHI = 0.8  # persistence of the predictable state
MARKET_DRIFT = 0.0003  # mean daily market factor return
MARKET_VOL = 0.010
SECTOR_VOL = 0.007
GARCH_ALPHA = 0.08
GARCH_BETA = 0.90
T_DF = 4.0
# kappa in units of each stock's long-run volatility; calibrated so that signal_strength=1 gives a mean
# daily cross-sectional IC of oracle_1d vs the next return of about 0.11.
KAPPA = 0.033
# Weights that bring the signal parts to about unit variance (the first three measured on the default market;
# the regime scales a reversal by tanh of a standardised return, whose std is about 0.6).
_PART_WEIGHTS = (1.0, 2.3, 1.0, 1.6)
LEADER_FRACTION = 0.05
# Below the TSE daily price limits; also keeps fat-tailed draws from taking prices to zero.
_RETURN_LIMIT = 0.3
_GAP_SHARE = 0.4  # share of the daily move that happens overnight
_VOLUME_SHOCK_VOL = 0.35
_VOLUME_SPIKE_PROB = 0.02
_VOLUME_SPIKE_SCALE = 1.2
_VOLUME_MOVE_LOADING = 0.5  # volume rises with |r| / sigma
_HALT_RUN_PROB = 0.3  # share of halts that last 2-5 sessions instead of one
_MIN_LIFE = 20  # sessions a late-listed stock trades at least before a delisting


@dataclass(frozen=True)
class _Universe:
    """Static per-stock attributes, indexed by stock number (the position in the sorted code list)."""

    codes: np.ndarray
    sector17: np.ndarray  # 0..16
    sector33: np.ndarray
    market: np.ndarray
    beta: np.ndarray
    gamma: np.ndarray
    idio_vol: np.ndarray
    total_vol: np.ndarray
    base_volume: np.ndarray
    start_price: np.ndarray  # raw yen, the close before the first session
    first: np.ndarray  # session index of listing
    last: np.ndarray  # session index of the last trading day
    delisted: np.ndarray
    split_day: np.ndarray  # session index of the ex-date, -1 when none
    split_ratio: np.ndarray  # 1 when none
    leader: np.ndarray


@dataclass(frozen=True)
class _Paths:
    """Simulated paths of a set of stocks, shape (sessions, stocks)."""

    r: np.ndarray
    sigma: np.ndarray
    state: np.ndarray  # A[t], known at the close of t


class SyntheticSource:
    """The synthetic market of ``config`` on ``calendar``; same config, byte-identical frames."""

    name = "synthetic"

    def __init__(self, config: SyntheticSourceConfig, calendar: TradingCalendar) -> None:
        if config.seed < 0:
            raise ValueError(f"synthetic source seed must be >= 0, got {config.seed}")
        n_codes = _CODE_RANGE[1] - _CODE_RANGE[0]
        if config.n_stocks > n_codes:
            raise ValueError(f"synthetic source has {n_codes} 4-digit codes, n_stocks={config.n_stocks}")
        self.config = config
        self.sessions = calendar.sessions(config.start, config.end).as_unit("ns")
        if len(self.sessions) < 2:
            raise ValueError(f"synthetic source needs at least 2 sessions in {config.start}..{config.end}")
        self._universe = _draw_universe(config, len(self.sessions))
        self._market, self._sector = _draw_factors(config.seed, len(self.sessions))
        self._lead_signal: np.ndarray | None = None

    @property
    def leader_codes(self) -> tuple[str, ...]:
        """Codes of the sector leaders whose returns the followers' expected returns lag."""
        return tuple(str(code) for code in self._universe.codes[self._universe.leader])

    def default_window(self) -> tuple[date | None, date | None]:
        return self.sessions[0].date(), self.sessions[-1].date()

    def listed_info(self, as_of: date) -> pd.DataFrame:
        """Stocks listed on or before ``as_of``; ValidTo is set once the last trading day has passed."""
        u = self._universe
        as_of_ts = np.datetime64(pd.Timestamp(as_of).as_unit("ns"))
        valid_from = self.sessions.values[u.first]
        last_day = self.sessions.values[u.last]
        keep = valid_from <= as_of_ts
        ended = u.delisted & (last_day <= as_of_ts)
        valid_to = np.where(ended, last_day, np.datetime64("NaT", "ns"))
        frame = pd.DataFrame(
            {
                "Code": u.codes[keep],
                "CompanyName": [f"Synthetic {c} Co." for c in u.codes[keep]],
                "Sector17Code": [str(s + 1) for s in u.sector17[keep]],
                "Sector33Code": u.sector33[keep],
                "MarketCode": u.market[keep],
                "ValidFrom": valid_from[keep],
                "ValidTo": valid_to[keep],
            },
            columns=list(LISTED_INFO_COLUMNS),
        )
        return frame.astype({c: "str" for c in LISTED_INFO_COLUMNS[:5]})

    def quote_chunks(self, start: date, end: date) -> Iterator[QuoteChunk]:
        """Chunks of at most ``chunk_stocks`` stocks with ``start <= Date <= end``; empty chunks are skipped."""
        dates = self.sessions.values
        in_window = (dates >= np.datetime64(pd.Timestamp(start).as_unit("ns"))) & (
            dates <= np.datetime64(pd.Timestamp(end).as_unit("ns"))
        )
        if not in_window.any():
            return
        lead_signal = self._leader_signal()
        size = self.config.chunk_stocks
        for lo in range(0, self.config.n_stocks, size):
            idx = np.arange(lo, min(lo + size, self.config.n_stocks))
            chunk = self._chunk(idx, lead_signal, in_window)
            if chunk is not None:
                yield chunk

    def _leader_signal(self) -> np.ndarray:
        """Part 3 of the signal per (session, sector): sector leaders' mean return minus the average
        sector's, scaled by its model-implied volatility. Leaders are simulated once and kept."""
        if self._lead_signal is None:
            u = self._universe
            leaders = np.flatnonzero(u.leader)
            returns = np.concatenate(
                [
                    self._simulate(self._draws(leaders[lo : lo + self.config.chunk_stocks]), None).r
                    for lo in range(0, len(leaders), self.config.chunk_stocks)
                ],
                axis=1,
            )
            sectors = u.sector17[leaders]
            sector_mean = np.zeros((len(self.sessions), N_SECTORS))
            scale = np.ones(N_SECTORS)
            for s in range(N_SECTORS):
                members = sectors == s
                if members.any():
                    sector_mean[:, s] = returns[:, members].mean(axis=1)
                    gamma, vol = u.gamma[leaders[members]], u.idio_vol[leaders[members]]
                    scale[s] = np.sqrt(np.mean(gamma**2) * SECTOR_VOL**2 + np.mean(vol**2) / members.sum())
            present = np.bincount(sectors, minlength=N_SECTORS) > 0
            relative = sector_mean - sector_mean[:, present].mean(axis=1, keepdims=True)
            self._lead_signal = relative / scale
        return self._lead_signal

    def _draws(self, idx: np.ndarray) -> _StockDraws:
        return _StockDraws(self.config.seed, idx, len(self.sessions), self.config.halt_probability)

    def _simulate(self, draws: _StockDraws, lead_signal: np.ndarray | None) -> _Paths:
        """Return, volatility and state paths of stocks ``draws.idx``; ``lead_signal`` None means all leaders."""
        u = self._universe
        idx = draws.idx
        n_days, n = len(self.sessions), len(idx)
        factor_part = u.beta[idx] * self._market[:, None] + u.gamma[idx] * self._sector[:, u.sector17[idx]]
        mix = self.config.signal_mix
        w_rev, w_vol, w_lead, w_regime = (
            w * m for w, m in zip(_PART_WEIGHTS, (mix.reversal, mix.volume, mix.lead_lag, mix.regime), strict=True)
        )
        # The market's 5-day return known at each close, and the regime it sets (part 4), for all sessions at once.
        market5 = np.convolve(self._market, np.ones(5))[:n_days]
        regime = np.tanh((market5 - 5 * MARKET_DRIFT) / (MARKET_VOL * np.sqrt(5.0)))
        # Exogenous to the recursion below, so computed for all sessions at once; zero for leaders.
        lead_part = np.zeros((n_days, n))
        if lead_signal is not None:
            followers = ~u.leader[idx]
            lead_part[:, followers] = w_lead * lead_signal[:, u.sector17[idx][followers]]
        tanh_shock = np.tanh(draws.volume_shock)
        kappa = KAPPA * self.config.signal_strength * u.total_vol[idx]
        rev_scale = -1.0 / (u.total_vol[idx] * np.sqrt(5.0))

        idio_var = u.idio_vol[idx] ** 2
        omega = idio_var * (1.0 - GARCH_ALPHA - GARCH_BETA)
        r = np.empty((n_days, n))
        sigma = np.empty((n_days, n))
        state = np.empty((n_days, n))
        a = np.zeros(n)
        ret5 = np.zeros(n)
        var = idio_var.copy()
        for t in range(n_days):
            sig = np.sqrt(var)
            eps = sig * draws.z[t]
            rt = np.clip(factor_part[t] + a + eps, -_RETURN_LIMIT, _RETURN_LIMIT)
            ret5 += rt - (r[t - 5] if t >= 5 else 0.0)
            reversal = w_rev * ret5 + w_regime * regime[t] * (ret5 - u.beta[idx] * market5[t])
            s = rev_scale * reversal + w_vol * tanh_shock[t] * rt / sig + lead_part[t]
            a = PHI * a + kappa * s
            r[t], sigma[t], state[t] = rt, sig, a
            var = omega + GARCH_ALPHA * eps * eps + GARCH_BETA * var
        return _Paths(r=r, sigma=sigma, state=state)

    def _chunk(self, idx: np.ndarray, lead_signal: np.ndarray, in_window: np.ndarray) -> QuoteChunk | None:
        u = self._universe
        n_days = len(self.sessions)
        draws = self._draws(idx)
        paths = self._simulate(draws, lead_signal)
        r, sig = paths.r, paths.sigma

        day = np.arange(n_days)[:, None]
        split_day, ratio = u.split_day[idx], u.split_ratio[idx].astype(float)
        # Smooth path in post-split (latest) units; raw prices before the ex-date are ``ratio`` times it.
        pre_split = (split_day >= 0) & (day < split_day)
        raw_multiplier = np.where(pre_split, ratio, 1.0)
        close = u.start_price[idx] / raw_multiplier[0] * np.cumprod(1.0 + r, axis=0)
        prev_close = np.vstack([u.start_price[idx] / raw_multiplier[0], close[:-1]])
        gap = np.clip(_GAP_SHARE * r + 0.3 * sig * draws.gap_noise, -_RETURN_LIMIT, _RETURN_LIMIT)
        open_ = prev_close * (1.0 + gap)
        high = np.maximum(open_, close) * (1.0 + 0.5 * sig * np.abs(draws.high_noise))
        low = np.minimum(open_, close) * (1.0 - np.minimum(0.5 * sig * np.abs(draws.low_noise), 0.5))

        raw = {
            k: np.maximum(np.round(v * raw_multiplier), 1.0)
            for k, v in (("Open", open_), ("High", high), ("Low", low), ("Close", close))
        }
        raw["High"] = np.maximum.reduce([raw["High"], raw["Open"], raw["Close"]])
        raw["Low"] = np.minimum.reduce([raw["Low"], raw["Open"], raw["Close"]])
        shares = (
            u.base_volume[idx]
            * np.exp(draws.volume_shock)
            * (1.0 + _VOLUME_MOVE_LOADING * np.abs(r) / u.total_vol[idx])
        )
        volume = np.maximum(np.round(shares / raw_multiplier / 100.0), 1.0) * 100.0
        turnover = volume * (raw["Open"] + raw["High"] + raw["Low"] + raw["Close"]) / 4.0
        factor = np.where(day == split_day, 1.0 / ratio, 1.0)

        alive = (day >= u.first[idx]) & (day <= u.last[idx])
        halted = draws.halted & (day != u.first[idx]) & (day != u.last[idx]) & (day != split_day)
        keep = (alive & ~halted & in_window[:, None]).T  # stock-major row order
        if not keep.any():
            return None

        def rows(values: np.ndarray) -> np.ndarray:
            return values.T[keep]

        stock_pos, day_pos = np.nonzero(keep)
        codes = u.codes[idx][stock_pos]
        dates = self.sessions.values[day_pos]
        frame = pd.DataFrame(
            {
                "Code": codes,
                "Date": dates,
                **{k: rows(v) for k, v in raw.items()},
                "Volume": rows(volume),
                "TurnoverValue": rows(turnover),
                "AdjustmentFactor": rows(factor),
            },
            columns=list(CANONICAL_QUOTE_COLUMNS),
        )
        drift = u.beta[idx][stock_pos] * MARKET_DRIFT
        state = rows(paths.state)
        oracle = pd.DataFrame(
            {
                "Code": codes,
                "Date": dates,
                **{f"oracle_{h}d": h * drift + state * (1.0 - PHI**h) / (1.0 - PHI) for h in HORIZONS},
            },
            columns=list(ORACLE_COLUMNS),
        )
        origin = f"synthetic seed={self.config.seed} stocks {idx[0]}-{idx[-1]}"
        return QuoteChunk(frame=frame, origin=origin, oracle=oracle)


_FACTOR_STREAM, _UNIVERSE_STREAM, _STOCK_STREAM = 1, 2, 3


def _unit_t(rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
    """Student-t draws scaled to unit variance."""
    return rng.standard_t(T_DF, size) / np.sqrt(T_DF / (T_DF - 2.0))


class _StockDraws:
    """All random inputs of stocks ``idx``, shape (sessions, stocks), each stock from its own generator."""

    def __init__(self, seed: int, idx: np.ndarray, n_days: int, halt_probability: float) -> None:
        n = len(idx)
        self.idx = idx
        self.z = np.empty((n_days, n))
        normals = np.empty((4, n_days, n))
        spikes = np.empty((n_days, n))
        halt_u = np.empty((2, n_days, n))
        run_length = np.empty((n_days, n), dtype=np.int64)
        for j, i in enumerate(idx):
            # The stream tag comes last: SeedSequence ignores trailing zeros, so i must not be last.
            rng = np.random.default_rng([seed, int(i), _STOCK_STREAM])
            self.z[:, j] = _unit_t(rng, n_days)
            normals[:, :, j] = rng.standard_normal((4, n_days))
            spike_u = rng.random(n_days)
            spikes[:, j] = np.where(spike_u < _VOLUME_SPIKE_PROB, rng.exponential(_VOLUME_SPIKE_SCALE, n_days), 0.0)
            halt_u[:, :, j] = rng.random((2, n_days))
            run_length[:, j] = rng.integers(2, 6, n_days)
        # Centred so that the shock is a surprise: zero mean, including the spikes.
        self.volume_shock = _VOLUME_SHOCK_VOL * normals[0] + spikes - _VOLUME_SPIKE_PROB * _VOLUME_SPIKE_SCALE
        self.gap_noise, self.high_noise, self.low_noise = normals[1], normals[2], normals[3]

        mean_run = 1.0 + _HALT_RUN_PROB * 2.5  # runs are 2-5 sessions, 3.5 on average
        starts = halt_u[0] < halt_probability / mean_run
        length = np.where(halt_u[1] < _HALT_RUN_PROB, run_length, 1)
        self.halted = starts.copy()
        for k in range(1, 5):
            self.halted[k:] |= starts[:-k] & (length[:-k] > k)


def _garch(z: np.ndarray, long_run_vol: np.ndarray) -> np.ndarray:
    """GARCH(1,1) shocks for innovations ``z`` (sessions, series) with the given long-run volatility."""
    long_run_var = long_run_vol**2
    omega = long_run_var * (1.0 - GARCH_ALPHA - GARCH_BETA)
    shocks = np.empty_like(z)
    var = long_run_var.copy()
    for t in range(len(z)):
        shocks[t] = np.sqrt(var) * z[t]
        var = omega + GARCH_ALPHA * shocks[t] ** 2 + GARCH_BETA * var
    return shocks


def _draw_factors(seed: int, n_days: int) -> tuple[np.ndarray, np.ndarray]:
    """Market factor (sessions,) and sector factors (sessions, 17)."""
    rng = np.random.default_rng([seed, _FACTOR_STREAM])
    z = _unit_t(rng, (n_days, 1 + N_SECTORS))
    shocks = _garch(z, np.array([MARKET_VOL] + [SECTOR_VOL] * N_SECTORS))
    return MARKET_DRIFT + shocks[:, 0], shocks[:, 1:]


def _draw_universe(config: SyntheticSourceConfig, n_days: int) -> _Universe:
    rng = np.random.default_rng([config.seed, _UNIVERSE_STREAM])
    n = config.n_stocks
    codes = np.sort(rng.choice(np.arange(*_CODE_RANGE), n, replace=False)).astype(str)

    sector33_idx = rng.integers(len(_SECTOR33), size=n)
    # Every TOPIX-17 sector gets at least one stock (when there are enough stocks).
    for sector, i in enumerate(rng.permutation(n)[:N_SECTORS]):
        sector33_idx[i] = rng.choice(np.flatnonzero(sector == _SECTOR33_TO_IDX17))
    sector17 = _SECTOR33_TO_IDX17[sector33_idx]
    market = rng.choice(_MARKETS, n, p=_MARKET_WEIGHTS)
    beta = np.clip(rng.normal(1.0, 0.2, n), 0.4, 1.6)
    gamma = rng.uniform(0.5, 1.5, n)
    idio_vol = np.exp(rng.uniform(np.log(0.012), np.log(0.03), n))
    total_vol = np.sqrt((beta * MARKET_VOL) ** 2 + (gamma * SECTOR_VOL) ** 2 + idio_vol**2)
    base_volume = np.exp(rng.normal(np.log(3e5), 1.0, n))
    start_price = np.exp(rng.uniform(np.log(200.0), np.log(8000.0), n))

    leader = np.zeros(n, dtype=bool)
    for sector in range(N_SECTORS):
        members = np.flatnonzero(sector17 == sector)
        n_lead = max(1, round(LEADER_FRACTION * len(members))) if len(members) else 0
        leader[members[np.argsort(-base_volume[members], kind="stable")[:n_lead]]] = True

    # Leaders trade over the whole window: followers lag them on every session.
    followers = np.flatnonzero(~leader)
    first = np.zeros(n, dtype=np.int64)
    late = rng.choice(followers, min(round(config.late_listing_fraction * n), len(followers)), replace=False)
    first[late] = rng.integers(1, max(2, int(0.8 * n_days)), len(late))
    last = np.full(n, n_days - 1, dtype=np.int64)
    delist = rng.choice(followers, min(round(config.delisting_fraction * n), len(followers)), replace=False)
    lo = np.maximum(first[delist] + _MIN_LIFE, int(0.3 * n_days))
    hi = n_days - 2
    delist_u = rng.random(len(delist))
    feasible = lo <= hi
    last[delist[feasible]] = lo[feasible] + (delist_u[feasible] * (hi - lo[feasible] + 1)).astype(np.int64)
    delisted = np.zeros(n, dtype=bool)
    delisted[delist[feasible]] = True

    has_split = (rng.random(n) < config.split_probability) & (last > first)
    ratio = rng.choice(_SPLIT_RATIOS, n, p=_SPLIT_WEIGHTS)
    day_u = rng.random(n)
    # The ex-date is strictly after listing, so every split is visible as a price jump in the raw data.
    split_day = np.where(has_split, first + 1 + (day_u * (last - first)).astype(np.int64), -1)

    return _Universe(
        codes=codes,
        sector17=sector17,
        sector33=_SECTOR33[sector33_idx],
        market=market,
        beta=beta,
        gamma=gamma,
        idio_vol=idio_vol,
        total_vol=total_vol,
        base_volume=base_volume,
        start_price=start_price,
        first=first,
        last=last,
        delisted=delisted,
        split_day=split_day,
        split_ratio=np.where(has_split, ratio, 1),
        leader=leader,
    )
