from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from atft.calendar import TradingCalendar
from schemas.columns import CANONICAL_QUOTE_COLUMNS
from schemas.raw_quotes import REJECTED_COLUMNS, StructuralError, raw_quotes_schema, validate_quotes

CANONICAL = list(CANONICAL_QUOTE_COLUMNS)


@pytest.fixture(scope="module")
def schema(xtks_calendar):
    sessions = xtks_calendar.sessions(xtks_calendar.first_session, xtks_calendar.last_session)
    return raw_quotes_schema(sessions, "XTKS", r"^\d{4}$")


def rejected_one(schema, make_quotes, bad: dict) -> pd.Series:
    """Validate a clean row (1) and a bad row (2); the bad one must be the only one quarantined."""
    checked = validate_quotes(make_quotes({"Code": "1305"}, bad), "test.csv", schema)
    assert list(checked.valid.index) == [1]
    assert list(checked.valid["Code"]) == ["1305"]
    assert len(checked.rejected) == 1
    row = checked.rejected.iloc[0]
    assert row["source_row"] == 2
    return row


# -- clean input -----------------------------------------------------------------------------------------


def test_clean_frame_passes_with_canonical_dtypes(schema, make_quotes):
    frame = make_quotes({}, {"Code": "1302", "TurnoverValue": np.nan})
    # Text and integers coerce to the canonical types.
    frame = frame.astype({"Open": str, "Volume": "int64"})
    checked = validate_quotes(frame, "test.csv", schema)
    assert list(checked.valid.columns) == CANONICAL
    assert list(checked.valid.index) == [1, 2]
    assert checked.valid["Code"].tolist() == ["1301", "1302"]
    assert checked.valid["Date"].dtype == "datetime64[ns]"
    for column in CANONICAL[2:]:
        assert checked.valid[column].dtype == np.float64, column
    assert checked.valid["Open"].tolist() == [100.0, 100.0]
    assert pd.isna(checked.valid.loc[2, "TurnoverValue"])  # the one nullable column
    assert checked.rejected.empty
    assert list(checked.rejected.columns) == list(REJECTED_COLUMNS)


# -- row rules -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "rule", "reason"),
    [
        ({"Open": np.nan}, "not_nullable", "Open is missing"),
        ({"Close": np.nan}, "not_nullable", "Close is missing"),
        ({"Volume": np.nan}, "not_nullable", "Volume is missing"),
        ({"AdjustmentFactor": np.nan}, "not_nullable", "AdjustmentFactor is missing"),
        ({"Code": None}, "not_nullable", "Code is missing"),
        ({"Date": None}, "not_nullable", "Date is missing"),
        (
            {"High": 90.0},
            "high_ge_low,close_within_range",
            "High 90 < Low 95; Close 105 outside [Low 95, High 90]",
        ),
        ({"Close": 120.0}, "close_within_range", "Close 120 outside [Low 95, High 110]"),
        ({"Close": 94.5}, "close_within_range", "Close 94.5 outside [Low 95, High 110]"),
        ({"Date": "2024-01-08"}, "trading_day", "Date 2024-01-08 is not a XTKS trading day"),
        ({"Date": "2024-01-06"}, "trading_day", "Date 2024-01-06 is not a XTKS trading day"),
        ({"Volume": -1.0}, "non_negative", "Volume -1 is not a finite value >= 0"),
        ({"TurnoverValue": -5.0}, "non_negative", "TurnoverValue -5 is not a finite value >= 0"),
        ({"Volume": np.inf}, "non_negative", "Volume inf is not a finite value >= 0"),
        ({"TurnoverValue": np.inf}, "non_negative", "TurnoverValue inf is not a finite value >= 0"),
        ({"Volume": -np.inf}, "non_negative", "Volume -inf is not a finite value >= 0"),
        ({"Code": "13A1"}, "code_format", r"Code '13A1' does not match ^\d{4}$"),
        ({"Code": "13010"}, "code_format", r"Code '13010' does not match ^\d{4}$"),
        ({"Open": 0.0}, "positive_price", "Open 0 is not a finite price > 0"),
        ({"Low": -1.0, "Close": 100.0}, "positive_price", "Low -1 is not a finite price > 0"),
        ({"Open": np.inf}, "positive_price", "Open inf is not a finite price > 0"),
        ({"AdjustmentFactor": 0.0}, "positive_factor", "AdjustmentFactor 0 is not > 0"),
    ],
)
def test_row_rule_quarantines_the_row_with_its_reason(schema, make_quotes, bad, rule, reason):
    row = rejected_one(schema, make_quotes, bad)
    assert row["rule"] == rule
    assert row["reason"] == reason


def test_high_below_low_also_puts_close_outside_the_range(schema, make_quotes):
    # With High < Low no Close lies in [Low, High], so both frame rules report the row.
    row = rejected_one(schema, make_quotes, {"High": 95.0, "Low": 96.0, "Close": 95.5, "Open": 95.5})
    assert row["rule"] == "high_ge_low,close_within_range"
    assert row["reason"] == "High 95 < Low 96; Close 95.5 outside [Low 96, High 95]"


def test_a_missing_price_is_reported_once_not_by_every_rule_that_reads_it(schema, make_quotes):
    row = rejected_one(schema, make_quotes, {"High": np.nan, "Low": np.nan})
    assert row["rule"] == "not_nullable"
    assert row["reason"] == "High is missing; Low is missing"


def test_a_row_failing_two_rules_gets_both_reasons(schema, make_quotes):
    row = rejected_one(schema, make_quotes, {"Open": np.nan, "Volume": -5.0})
    assert row["rule"] == "not_nullable,non_negative"
    assert row["reason"] == "Open is missing; Volume -5 is not a finite value >= 0"


def test_a_row_failing_a_column_and_a_frame_rule_gets_both_reasons(schema, make_quotes):
    row = rejected_one(schema, make_quotes, {"Date": "2024-01-08", "Close": 200.0})
    assert set(row["rule"].split(",")) == {"trading_day", "close_within_range"}
    assert "Date 2024-01-08 is not a XTKS trading day" in row["reason"]
    assert "Close 200 outside [Low 95, High 110]" in row["reason"]


def test_rejected_row_carries_key_and_the_original_record(schema, make_quotes):
    row = rejected_one(schema, make_quotes, {"Code": "1399", "Close": 120.0})
    assert row["Code"] == "1399"
    assert row["Date"] == pd.Timestamp("2024-01-04")
    record = json.loads(row["record"])
    assert record["Code"] == "1399"
    assert record["Close"] == 120.0
    assert record["Date"].startswith("2024-01-04")


def test_the_code_pattern_in_the_reason_is_the_schema_s(xtks_calendar, make_quotes):
    sessions = xtks_calendar.sessions(xtks_calendar.first_session, xtks_calendar.last_session)
    schema = raw_quotes_schema(sessions, "XTKS", r"^[0-9][0-9A-Z]{3}0$")
    checked = validate_quotes(make_quotes({"Code": "13010"}, {"Code": "1301"}), "x", schema)
    assert checked.rejected["reason"].tolist() == ["Code '1301' does not match ^[0-9][0-9A-Z]{3}0$"]


def test_the_calendar_in_the_reason_is_the_schema_s(make_quotes):
    xnys = TradingCalendar("XNYS")
    schema = raw_quotes_schema(xnys.sessions(xnys.first_session, xnys.last_session), "XNYS", r"^\d{4}$")
    # 2024-01-08 is a NYSE session; 2024-01-15 (MLK day) is not.
    checked = validate_quotes(make_quotes({"Date": "2024-01-08"}, {"Date": "2024-01-15"}), "x", schema)
    assert list(checked.valid.index) == [1]
    assert checked.rejected["reason"].tolist() == ["Date 2024-01-15 is not a XNYS trading day"]


def test_valid_rows_keep_their_source_row_numbers(schema, make_quotes):
    frame = make_quotes({"Code": "1301"}, {"Code": "1302", "Close": 999.0}, {"Code": "1303"})
    frame.index = pd.Index([10, 11, 12])
    checked = validate_quotes(frame, "x", schema)
    assert list(checked.valid.index) == [10, 12]
    assert checked.rejected["source_row"].tolist() == [11]


# -- structural errors -----------------------------------------------------------------------------------


def structural(schema, frame) -> StructuralError:
    with pytest.raises(StructuralError) as info:
        validate_quotes(frame, "prices.csv", schema)
    assert info.value.origin == "prices.csv"
    return info.value


def test_missing_column(schema, make_quotes):
    error = structural(schema, make_quotes().drop(columns="Volume"))
    assert str(error) == f"prices.csv: columns do not match raw_quotes: missing ['Volume']; expected {CANONICAL}"


def test_unexpected_column(schema, make_quotes):
    error = structural(schema, make_quotes().assign(Extra=1.0))
    assert str(error) == f"prices.csv: columns do not match raw_quotes: unexpected ['Extra']; expected {CANONICAL}"


def test_lowercase_code_is_a_case_only_difference(schema, make_quotes):
    error = structural(schema, make_quotes().rename(columns={"Code": "code"}))
    assert str(error) == (
        "prices.csv: columns do not match raw_quotes: 'code' found where 'Code' was expected "
        f"(names are case-sensitive); expected {CANONICAL}"
    )


def test_column_order_changed(schema, make_quotes):
    swapped = ["Date", "Code", *CANONICAL[2:]]
    error = structural(schema, make_quotes()[swapped])
    assert error.problems == [f"columns out of order: found {swapped}, expected {CANONICAL}"]


def test_uncoercible_dtype_names_column_row_and_value(schema, make_quotes):
    frame = make_quotes({}, {"Code": "1302"}, {"Code": "1303"}).astype({"Volume": object})
    frame.loc[2, "Volume"] = "abc"
    error = structural(schema, frame)
    assert str(error) == "prices.csv: column 'Volume': expected 'float64', cannot convert 1 value(s): row 2: 'abc'"


def test_uncoercible_values_are_listed_up_to_five(schema, make_quotes):
    frame = make_quotes(*({"Code": f"13{i:02d}"} for i in range(8))).astype({"Close": object})
    frame.loc[2:8, "Close"] = "n/a"
    error = structural(schema, frame)
    message = str(error)
    assert "column 'Close': expected 'float64', cannot convert 7 value(s): row 2: 'n/a'" in message
    assert "row 6: 'n/a' and 2 more" in message
    assert "row 7" not in message


def test_duplicate_keys_name_the_rows_and_keys(schema, make_quotes):
    frame = make_quotes({}, {"Code": "1302"}, {"Close": 106.0}, {"Date": "2024-01-05"})
    error = structural(schema, frame)
    assert str(error) == (
        "prices.csv: duplicate (Code, Date) keys in 2 rows: row 1 (1301 2024-01-04), row 3 (1301 2024-01-04)"
    )


def test_duplicate_keys_with_a_missing_code_or_date_are_reported(schema, make_quotes):
    # Found by tests/ingest/test_fuzz_quote_files.py (a Parquet file with an all-null code column): pandera counts
    # missing keys as equal, and writing the report raised TypeError, since astype(str) keeps a missing value missing.
    frame = make_quotes({"Code": None}, {"Code": None}, {"Date": None}, {"Date": None})
    error = structural(schema, frame)
    assert str(error) == (
        "prices.csv: duplicate (Code, Date) keys in 4 rows: row 1 (no code 2024-01-04), row 2 (no code 2024-01-04), "
        "row 3 (1301 no date), row 4 (1301 no date)"
    )


def test_structural_errors_win_over_row_anomalies(schema, make_quotes):
    # A duplicate key makes the chunk unusable even if another row would only be quarantined.
    frame = make_quotes({}, {"Close": np.nan, "Code": "1302"}, {})
    with pytest.raises(StructuralError, match=re.escape("duplicate (Code, Date) keys in 2 rows: row 1")):
        validate_quotes(frame, "prices.csv", schema)
