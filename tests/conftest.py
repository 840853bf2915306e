"""Shared fixtures: data-layer helpers and the small synthetic market most stage tests run on; keep this small."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

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


@pytest.fixture(scope="session")
def small_market():
    """``small_market(tmp, name, **sections)``: writes ``tmp/<name>.yaml`` for a 30-stock synthetic year and a tiny
    one-epoch model, all files under ``tmp``; each keyword updates that config section. Returns the path."""

    def write(tmp: Path, name: str, **sections: dict) -> str:
        config = {
            "name": name,
            "source": {"kind": "synthetic", "seed": 4, "n_stocks": 30, "start": "2022-01-04", "end": "2022-12-28"},
            "universe": {"code_pattern": r"^\d{4}$"},
            "warehouse": {"path": str(tmp / "market.duckdb")},
            "features": {"cs_z": {"min_stocks": 10}, "manifest_dir": str(tmp / "manifests")},
            "model": {"lookback": 8, "hidden": 16, "var_hidden": 2, "fan_window": 4},
            "train": {"epochs": 1, "days_per_batch": 8, "staging_dir": str(tmp / "staging")},
            "registry": {"path": str(tmp / "registry")},
        }
        for section, values in sections.items():
            config[section] = {**config.get(section, {}), **values}
        path = tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        return str(path)

    return write
