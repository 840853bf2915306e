"""Shared fixtures. Data-layer helpers only; keep this small."""

from __future__ import annotations

import pandas as pd
import pytest

from atft.calendar import TradingCalendar
from schemas.columns import CANONICAL_QUOTE_COLUMNS

# One valid J-Quants-shaped row on an XTKS session; tests override single values.
BASE_QUOTE = {
    "Code": "1301",
    "Date": "2024-01-04",
    "Open": 100.0,
    "High": 110.0,
    "Low": 95.0,
    "Close": 105.0,
    "Volume": 1000.0,
    "TurnoverValue": 100_000.0,
    "AdjustmentFactor": 1.0,
}


@pytest.fixture(scope="session")
def xtks_calendar() -> TradingCalendar:
    return TradingCalendar("XTKS")


@pytest.fixture
def make_quotes():
    """Factory: ``make_quotes({"Code": "1302"}, {"High": 90.0})`` -> canonical frame, one row per dict of
    overrides of ``BASE_QUOTE``, index 1..n (the source row numbers), Date as datetime64[ns]."""

    def build(*overrides: dict) -> pd.DataFrame:
        rows = [{**BASE_QUOTE, **o} for o in (overrides or ({},))]
        frame = pd.DataFrame(rows, columns=list(CANONICAL_QUOTE_COLUMNS))
        frame["Date"] = pd.to_datetime(frame["Date"]).dt.as_unit("ns")
        frame.index = pd.RangeIndex(1, len(frame) + 1)
        return frame

    return build
