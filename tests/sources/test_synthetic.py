from __future__ import annotations

from datetime import date
from functools import cache

import numpy as np
import pandas as pd
import pytest

from atft.calendar import TradingCalendar
from atft.config import SyntheticSourceConfig
from atft.sources.base import LISTED_INFO_COLUMNS, ORACLE_COLUMNS
from atft.sources.synthetic import SECTOR33_TO_17, SyntheticSource
from schemas.columns import CANONICAL_QUOTE_COLUMNS

START, END = date(2023, 1, 4), date(2024, 3, 29)  # spans the 2024 New Year holidays
# Rare events made frequent enough that a 60-stock market shows each of them.
EVENTFUL = {
    "split_probability": 0.4,
    "late_listing_fraction": 0.15,
    "delisting_fraction": 0.15,
    "halt_probability": 0.01,
}


@cache
def calendar() -> TradingCalendar:
    return TradingCalendar("XTKS")


def make_source(**overrides: object) -> SyntheticSource:
    settings: dict[str, object] = {"n_stocks": 60, "start": START, "end": END, **EVENTFUL, **overrides}
    return SyntheticSource(SyntheticSourceConfig(kind="synthetic", **settings), calendar())


def collect(source: SyntheticSource, start: date = START, end: date = END) -> tuple[pd.DataFrame, pd.DataFrame]:
    chunks = list(source.quote_chunks(start, end))
    quotes = pd.concat([c.frame for c in chunks], ignore_index=True)
    oracle = pd.concat([c.oracle for c in chunks], ignore_index=True)
    return quotes, oracle


@cache
def eventful() -> tuple[SyntheticSource, pd.DataFrame, pd.DataFrame]:
    source = make_source()
    return (source, *collect(source))


def adjusted_close(quotes: pd.DataFrame) -> pd.Series:
    """Close times the product of the AdjustmentFactors strictly after each row (J-Quants convention)."""
    quotes = quotes.sort_values(["Code", "Date"])
    later = quotes.groupby("Code")["AdjustmentFactor"].transform(
        lambda f: f[::-1].cumprod()[::-1].shift(-1, fill_value=1.0)
    )
    return quotes["Close"] * later


def next_day_returns(quotes: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(return on t, return on t+1) as Date x Code tables, NaN across gaps in a stock's rows."""
    prices = quotes.assign(adj=adjusted_close(quotes)).pivot(index="Date", columns="Code", values="adj")
    today = prices.pct_change(fill_method=None)
    return today, today.shift(-1)


def mean_daily_ic(signal: pd.DataFrame, target: pd.DataFrame) -> float:
    """Cross-sectional Pearson correlation per day, averaged over days."""
    signal, target = signal.align(target, join="inner")
    return float(signal.T.corrwith(target.T).dropna().mean())


def test_same_seed_gives_identical_frames_and_another_seed_differs() -> None:
    quotes_a, oracle_a = collect(make_source(seed=11))
    quotes_b, oracle_b = collect(make_source(seed=11))
    pd.testing.assert_frame_equal(quotes_a, quotes_b)
    pd.testing.assert_frame_equal(oracle_a, oracle_b)
    quotes_c, _ = collect(make_source(seed=12))
    assert set(quotes_c["Code"]) != set(quotes_a["Code"])


def test_data_do_not_depend_on_chunk_size() -> None:
    small, large = make_source(chunk_stocks=7), make_source(chunk_stocks=300)
    chunks = list(small.quote_chunks(START, END))
    assert len(chunks) == 9
    assert all(c.frame["Code"].nunique() <= 7 for c in chunks)
    assert chunks[1].origin == "synthetic seed=7 stocks 7-13"
    for got, want in zip(collect(small), collect(large), strict=True):
        pd.testing.assert_frame_equal(got, want)


def test_chunk_frames_have_canonical_columns_and_types() -> None:
    source = eventful()[0]
    chunk = next(source.quote_chunks(START, END))
    frame, oracle = chunk.frame, chunk.oracle
    assert tuple(frame.columns) == CANONICAL_QUOTE_COLUMNS
    assert isinstance(frame.index, pd.RangeIndex) and frame.index[0] == 0
    assert all(isinstance(code, str) for code in frame["Code"])
    assert frame["Date"].dtype == "datetime64[ns]"
    assert (frame["Date"] == frame["Date"].dt.normalize()).all()
    assert (frame.dtypes.iloc[2:] == "float64").all()
    assert oracle is not None and tuple(oracle.columns) == ORACLE_COLUMNS
    pd.testing.assert_frame_equal(oracle[["Code", "Date"]], frame[["Code", "Date"]])
    assert not oracle.isna().any().any()


def test_dates_are_jpx_sessions() -> None:
    source, quotes, _ = eventful()
    dates = pd.DatetimeIndex(quotes["Date"].unique())
    assert dates.isin(calendar().sessions(START, END)).all()
    assert not dates.isin(pd.date_range("2024-01-01", "2024-01-03")).any()
    assert (dates.day_of_week < 5).all()
    assert source.default_window() == (START, END)
    assert make_source(start=date(2023, 1, 1)).default_window()[0] == date(2023, 1, 4)


def test_listed_info_matches_the_quotes() -> None:
    source, quotes, _ = eventful()
    info = source.listed_info(END)
    assert tuple(info.columns) == LISTED_INFO_COLUMNS
    assert info["Code"].str.fullmatch(r"[1-9]\d{3}").all() and info["Code"].is_unique
    assert set(info["Code"]) == set(quotes["Code"])
    assert info["Sector17Code"].nunique() == 17
    assert (info["Sector33Code"].map(SECTOR33_TO_17) == info["Sector17Code"]).all()
    assert set(info["MarketCode"]) <= {"0111", "0112", "0113"}
    assert (info["CompanyName"] == "Synthetic " + info["Code"] + " Co.").all()
    assert info["ValidFrom"].dtype == info["ValidTo"].dtype == "datetime64[ns]"

    span = quotes.groupby("Code")["Date"].agg(["min", "max"])
    info = info.set_index("Code").join(span)
    assert (info["ValidFrom"] == info["min"]).all()
    delisted = info["ValidTo"].notna()
    assert (info.loc[delisted, "ValidTo"] == info.loc[delisted, "max"]).all()
    assert (info.loc[~delisted, "max"] == pd.Timestamp(END)).all()

    # Earlier knowledge: fewer listings, and delistings that have not happened yet are unknown.
    as_of = date(2023, 6, 30)
    early = source.listed_info(as_of)
    assert set(early["Code"]) == set(info.index[info["ValidFrom"] <= pd.Timestamp(as_of)])
    assert len(early) < len(info)
    assert (early["ValidTo"].dropna() <= pd.Timestamp(as_of)).all()


def test_every_row_is_a_valid_ohlcv_bar() -> None:
    quotes = eventful()[1]
    assert not quotes.isna().any().any()
    assert not quotes.duplicated(["Code", "Date"]).any()
    prices = quotes[["Open", "High", "Low", "Close"]]
    assert (prices > 0).all().all()
    assert (prices == prices.round()).all().all()  # 1-yen ticks
    assert (quotes["High"] >= quotes[["Open", "Close"]].max(axis=1)).all()
    assert (quotes["Low"] <= quotes[["Open", "Close"]].min(axis=1)).all()
    assert (quotes["Volume"] >= 0).all() and (quotes["Volume"] % 100 == 0).all()
    mid = (quotes["Open"] + quotes["High"] + quotes["Low"] + quotes["Close"]) / 4
    np.testing.assert_allclose(quotes["TurnoverValue"], quotes["Volume"] * mid)


def test_splits_follow_the_jquants_adjustment_convention() -> None:
    quotes = eventful()[1].sort_values(["Code", "Date"], ignore_index=True)
    ex_rows = quotes.index[quotes["AdjustmentFactor"] != 1.0]
    assert len(ex_rows) >= 5
    assert quotes["AdjustmentFactor"].isin([1.0, 1 / 2, 1 / 3, 1 / 5, 1 / 10]).all()
    assert quotes.loc[ex_rows, "Code"].is_unique  # one split per stock at most

    adjusted = adjusted_close(quotes)
    for row in ex_rows:
        code, factor = quotes.at[row, "Code"], quotes.at[row, "AdjustmentFactor"]
        assert quotes.at[row - 1, "Code"] == code  # the ex-date is not a stock's first row
        assert quotes.at[row, "Close"] / quotes.at[row - 1, "Close"] < 0.7  # raw prices drop
        assert 0.7 < adjusted[row] / adjusted[row - 1] < 1.3  # adjusted prices do not
        # Raw volume is in post-split shares from the ex-date on.
        stock = quotes[quotes["Code"] == code]
        before = np.log(stock.loc[row - 20 : row - 1, "Volume"]).median()
        after = np.log(stock.loc[row : row + 19, "Volume"]).median()
        if min((stock.index < row).sum(), (stock.index >= row).sum()) >= 10:
            assert abs(after - before - np.log(1 / factor)) < 0.5

    # No adjusted 1-day move (between consecutive sessions) beyond the daily price limit.
    today, _ = next_day_returns(quotes)
    assert (today.abs().max() < 0.35).all()


def test_late_listings_delistings_and_halts_exist() -> None:
    quotes = eventful()[1]
    sessions = calendar().sessions(START, END)
    span = quotes.groupby("Code")["Date"].agg(["min", "max", "size"])
    assert (span["min"] > sessions[0]).sum() >= 3
    assert (span["max"] < sessions[-1]).sum() >= 3
    sessions_in_life = [sessions.slice_indexer(lo, hi) for lo, hi in zip(span["min"], span["max"], strict=True)]
    expected = np.array([s.stop - s.start for s in sessions_in_life])
    halted = expected - span["size"].to_numpy()
    assert (halted >= 0).all()
    assert (halted > 0).sum() >= 10
    assert 0.002 < halted.sum() / expected.sum() < 0.03


def test_quote_chunks_honour_the_window() -> None:
    source, quotes, oracle = eventful()
    lo, hi = date(2023, 3, 1), date(2023, 8, 31)
    window_quotes, window_oracle = collect(source, lo, hi)
    inside = quotes["Date"].between(pd.Timestamp(lo), pd.Timestamp(hi))
    pd.testing.assert_frame_equal(window_quotes, quotes[inside].reset_index(drop=True))
    pd.testing.assert_frame_equal(window_oracle, oracle[inside].reset_index(drop=True))
    assert list(source.quote_chunks(date(2022, 1, 4), date(2022, 12, 30))) == []


@pytest.mark.parametrize(("strength", "low", "high"), [(1.0, 0.08, 0.15), (0.0, -0.02, 0.02)])
def test_oracle_predicts_next_day_returns_as_planted(strength: float, low: float, high: float) -> None:
    quotes, oracle = collect(make_source(n_stocks=120, signal_strength=strength, **dict.fromkeys(EVENTFUL, 0.0)))
    _, tomorrow = next_day_returns(quotes)
    ic = mean_daily_ic(oracle.pivot(index="Date", columns="Code", values="oracle_1d"), tomorrow)
    assert low < ic < high


def test_followers_lag_their_sector_leaders() -> None:
    """Today's mean return of a sector's leaders predicts tomorrow's return of its other stocks."""
    # The one-day lead-lag IC is about 0.03, so it takes a few years of sessions to measure.
    window = {"start": date(2021, 1, 4), "end": END, "n_stocks": 120, **dict.fromkeys(EVENTFUL, 0.0)}

    def lead_lag_ic(source: SyntheticSource) -> float:
        today, tomorrow = next_day_returns(collect(source, window["start"], END)[0])
        sector = source.listed_info(END).set_index("Code")["Sector17Code"]
        leaders = list(source.leader_codes)
        followers = [c for c in today.columns if c not in source.leader_codes]
        assert 0 < len(leaders) < len(followers)
        leader_mean = today[leaders].T.groupby(sector[leaders]).mean().T  # Date x sector
        lagged = leader_mean[sector[followers].to_numpy()].set_axis(followers, axis=1)
        return mean_daily_ic(lagged, tomorrow[followers])

    assert lead_lag_ic(make_source(**window)) > 0.015
    assert abs(lead_lag_ic(make_source(signal_strength=0.0, **window))) < 0.015


def test_the_market_regime_flips_the_sign_of_reversal() -> None:
    """Part 4 alone: after a market rally past 5-day winners lag tomorrow; after a sell-off they lead."""
    only_regime = {"reversal": 0.0, "volume": 0.0, "lead_lag": 0.0, "regime": 1.0}
    window = {"start": date(2021, 1, 4), "end": END, "n_stocks": 120, **dict.fromkeys(EVENTFUL, 0.0)}
    today, tomorrow = next_day_returns(collect(make_source(signal_mix=only_regime, **window), window["start"])[0])
    past_week = np.log1p(today).rolling(5).sum()
    market_week = past_week.mean(axis=1)
    relative = past_week.sub(market_week, axis=0)
    after_rally = market_week > market_week.median()
    after_sell_off = ~after_rally & market_week.notna()
    assert mean_daily_ic(relative[after_rally], tomorrow[after_rally]) < -0.02
    assert mean_daily_ic(relative[after_sell_off], tomorrow[after_sell_off]) > 0.02
