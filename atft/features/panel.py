"""Load raw quotes from the warehouse into dense ``[stocks, days]`` panels for the feature kernels.

Prices are adjusted forward: divided by the product of the ``AdjustmentFactor``s up to and including
the day, so a value at day t uses only data up to t (a split announced later never rewrites history).
The factors are multiplied in date order, so an incremental load reproduces a full load bit for bit.

During a halt (a session with no row inside a stock's life) prices carry the last traded value and
volume is 0. Before a stock's first row and after its last, everything is NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import duckdb
import numpy as np
import pandas as pd

from atft.calendar import TradingCalendar

PRICE_FIELDS: tuple[str, ...] = ("open", "high", "low", "close")


@dataclass(frozen=True)
class MarketPanel:
    """Adjusted daily bars of every stock on every session of a window."""

    codes: np.ndarray  # [stocks] str, sorted
    dates: pd.DatetimeIndex  # [days] sessions
    present: np.ndarray  # [stocks, days] bool: a row exists in raw_quotes
    alive: np.ndarray  # [stocks, days] bool: between the stock's first and last row (halts included)
    open: np.ndarray  # [stocks, days] float64, adjusted
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray  # adjusted shares; 0 on halt days
    turnover: np.ndarray  # traded value; 0 on halt days
    sector: np.ndarray | None  # [stocks, days] int, -1 where unknown; None without sector data

    @property
    def shape(self) -> tuple[int, int]:
        return self.present.shape


def load_panel(
    con: duckdb.DuckDBPyConnection, calendar: TradingCalendar, start: date, end: date, sectors: bool
) -> MarketPanel:
    """Every stock with a row on or before ``end``, on every session in [start, end]."""
    codes = np.array([c for (c,) in con.execute(_CODES, [end]).fetchall()], dtype=object)
    dates = calendar.sessions(start, end)
    n_stocks, n_days = len(codes), len(dates)
    rows = con.sql(_ROWS, params=[start, end]).to_arrow_table()
    stock = np.searchsorted(codes, rows["Code"].to_numpy(zero_copy_only=False))
    day = dates.get_indexer(pd.DatetimeIndex(rows["Date"].to_numpy(zero_copy_only=False)))
    if (day < 0).any():
        raise ValueError(f"raw_quotes has dates in {start}..{end} that are not {calendar.name} sessions")

    present = np.zeros((n_stocks, n_days), dtype=bool)
    present[stock, day] = True
    raw = {}
    for name in (*PRICE_FIELDS, "volume", "turnover"):
        panel = np.full((n_stocks, n_days), np.nan)
        panel[stock, day] = rows[name].to_numpy()
        raw[name] = panel

    before = _last_close_before(con, codes, start)
    alive = _alive(con, codes, dates, present, end)
    cum = _cumulative_factors(con, codes, dates, start, end)
    last_seen = _carry_index(present)
    for name in PRICE_FIELDS:
        # A halt day shows the last traded close as a flat bar; before the window that close comes from
        # the row loaded separately, so the carry does not depend on where the window starts.
        carried = np.take_along_axis(raw["close"], np.maximum(last_seen, 0), axis=1)
        carried[last_seen < 0] = np.broadcast_to(before[:, None], carried.shape)[last_seen < 0]
        raw[name] = np.where(present, raw[name], carried)
    for name in ("volume", "turnover"):
        raw[name] = np.where(present, raw[name], 0.0)
    prices = {name: np.where(alive, raw[name] / cum, np.nan) for name in PRICE_FIELDS}
    return MarketPanel(
        codes=codes,
        dates=dates,
        present=present,
        alive=alive,
        volume=np.where(alive, raw["volume"] * cum, np.nan),
        turnover=np.where(alive, raw["turnover"], np.nan),
        sector=sector_panel(con, codes, dates) if sectors else None,
        **prices,
    )


_CODES = "SELECT DISTINCT Code FROM raw_quotes WHERE Date <= ? ORDER BY Code"
# TurnoverValue is missing in sources that do not carry it (e.g. the S&P file): typical price x volume
# stands in, in the same currency units.
_ROWS = """
    SELECT Code, Date, Open AS open, High AS high, Low AS low, Close AS close, Volume AS volume,
           coalesce(TurnoverValue, (Open + High + Low + Close) / 4 * Volume) AS turnover
    FROM raw_quotes WHERE Date BETWEEN ? AND ?
"""


def _carry_index(present: np.ndarray) -> np.ndarray:
    """For each day, the index of the latest day <= it with a row (-1 if none in the window)."""
    idx = np.where(present, np.arange(present.shape[1]), -1)
    return np.maximum.accumulate(idx, axis=1)


def _last_close_before(con: duckdb.DuckDBPyConnection, codes: np.ndarray, start: date) -> np.ndarray:
    rows = con.execute("SELECT Code, arg_max(Close, Date) FROM raw_quotes WHERE Date < ? GROUP BY Code", [start])
    out = np.full(len(codes), np.nan)
    for code, close in rows.fetchall():
        out[np.searchsorted(codes, code)] = close
    return out


def _alive(
    con: duckdb.DuckDBPyConnection, codes: np.ndarray, dates: pd.DatetimeIndex, present: np.ndarray, end: date
) -> np.ndarray:
    """Between a stock's first and last row up to ``end``, looking beyond the window on both sides."""
    spans = con.execute("SELECT Code, min(Date), max(Date) FROM raw_quotes WHERE Date <= ? GROUP BY Code", [end])
    first = np.full(len(codes), np.datetime64("NaT"), dtype="datetime64[ns]")
    last = first.copy()
    for code, lo, hi in spans.fetchall():
        i = np.searchsorted(codes, code)
        first[i], last[i] = np.datetime64(lo, "ns"), np.datetime64(hi, "ns")
    days = dates.to_numpy()
    return (days[None, :] >= first[:, None]) & (days[None, :] <= last[:, None]) | present


def _cumulative_factors(
    con: duckdb.DuckDBPyConnection, codes: np.ndarray, dates: pd.DatetimeIndex, start: date, end: date
) -> np.ndarray:
    """Product of AdjustmentFactor up to each day, multiplied in date order from the stock's first row."""
    cum = np.ones((len(codes), len(dates)))
    events = con.execute(
        "SELECT Code, Date, AdjustmentFactor FROM raw_quotes WHERE AdjustmentFactor <> 1 AND Date <= ? "
        "ORDER BY Code, Date",
        [end],
    ).fetchall()
    running = np.ones(len(codes))
    for code, day, factor in events:
        i = np.searchsorted(codes, code)
        running[i] *= factor
        if day >= start:
            cum[i, dates.get_loc(pd.Timestamp(day)) :] = running[i]
        else:
            cum[i, :] = running[i]
    return cum


def sector_panel(con: duckdb.DuckDBPyConnection, codes: np.ndarray, dates: pd.DatetimeIndex) -> np.ndarray:
    """Sector17Code in force on each day (point in time, from listed_info's validity ranges), as a dense id."""
    sector = np.full((len(codes), len(dates)), -1, dtype=np.int16)
    rows = con.execute(
        "SELECT Code, Sector17Code, ValidFrom, ValidTo FROM listed_info WHERE Sector17Code IS NOT NULL "
        "ORDER BY Code, ValidFrom"
    ).fetchall()
    ids = {name: i for i, name in enumerate(sorted({row[1] for row in rows}))}
    days = dates.to_numpy()
    for code, sector_code, valid_from, valid_to in rows:
        i = np.searchsorted(codes, code)
        if i == len(codes) or codes[i] != code:
            continue
        inside = days >= np.datetime64(valid_from, "ns")
        if valid_to is not None:
            inside &= days <= np.datetime64(valid_to, "ns")
        sector[i, inside] = ids[sector_code]
    return sector
