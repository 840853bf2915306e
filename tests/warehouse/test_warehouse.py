from __future__ import annotations

import re
from datetime import date

import duckdb
import numpy as np
import pandas as pd
import pytest

import atft.warehouse
from atft.sources.base import LISTED_INFO_COLUMNS, ORACLE_COLUMNS
from atft.warehouse import DATA_TABLES, MergeCounts, Warehouse, WarehouseError
from schemas.columns import CANONICAL_QUOTE_COLUMNS


@pytest.fixture
def wh(tmp_path):
    with Warehouse(tmp_path / "w.duckdb") as warehouse:
        yield warehouse


def columns_of(wh: Warehouse, table: str) -> list[str]:
    return [
        r[0]
        for r in wh.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
            [table],
        ).fetchall()
    ]


def merge(wh: Warehouse, frame: pd.DataFrame) -> MergeCounts:
    with wh.transaction():
        wh.create_staging()
        wh.stage_quotes(frame, "test")
        return wh.merge_staged_quotes()


def quotes_table(wh: Warehouse) -> pd.DataFrame:
    return wh.con.sql("SELECT * FROM raw_quotes ORDER BY Code, Date").df()


def listed(code="1301", valid_from="2024-01-04", valid_to=None, sector="3050", name="Alpha Co.") -> dict:
    return {
        "Code": code,
        "CompanyName": name,
        "Sector17Code": "1",
        "Sector33Code": sector,
        "MarketCode": "0111",
        "ValidFrom": pd.Timestamp(valid_from),
        "ValidTo": pd.NaT if valid_to is None else pd.Timestamp(valid_to),
    }


def listed_frame(*records: dict) -> pd.DataFrame:
    frame = pd.DataFrame(list(records), columns=list(LISTED_INFO_COLUMNS))
    return frame.astype({"ValidFrom": "datetime64[ns]", "ValidTo": "datetime64[ns]"})


def listed_table(wh: Warehouse) -> list[tuple]:
    return wh.con.sql(
        "SELECT Code, Sector33Code, CompanyName, ValidFrom, ValidTo FROM listed_info ORDER BY Code, ValidFrom"
    ).fetchall()


def rejected_frame(*rows: tuple) -> pd.DataFrame:
    """(Code, Date, rule, record) tuples -> the frame ``quarantine`` takes."""
    return pd.DataFrame(
        [
            {
                "origin": "q.csv",
                "source_row": i + 1,
                "Code": code,
                "Date": pd.Timestamp(day),
                "rule": rule,
                "reason": f"reason for {rule}",
                "record": record,
            }
            for i, (code, day, rule, record) in enumerate(rows)
        ]
    )


# -- schema ----------------------------------------------------------------------------------------------


def test_tables_use_j_quants_names_and_case(wh):
    tables = {r[0] for r in wh.con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert set(DATA_TABLES) | {"ingest_log"} <= tables
    assert columns_of(wh, "raw_quotes") == [
        "Code",
        "Date",
        "Open",
        "High",
        "Low",
        "Close",
        "Volume",
        "TurnoverValue",
        "AdjustmentFactor",
    ]
    assert columns_of(wh, "raw_quotes") == list(CANONICAL_QUOTE_COLUMNS)
    assert columns_of(wh, "listed_info") == list(LISTED_INFO_COLUMNS)
    assert columns_of(wh, "synthetic_oracle") == list(ORACLE_COLUMNS)
    # The names survive into what readers see (Arrow and pandas are case-sensitive).
    assert list(wh.con.sql("SELECT * FROM raw_quotes").df().columns) == list(CANONICAL_QUOTE_COLUMNS)


def test_raw_quotes_types(wh):
    sql = "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'raw_quotes'"
    types = dict(wh.con.execute(sql).fetchall())
    assert types["Code"] == "VARCHAR"
    assert types["Date"] == "DATE"
    assert {types[c] for c in CANONICAL_QUOTE_COLUMNS[2:]} == {"DOUBLE"}


def test_raw_quotes_primary_key_is_enforced(wh, make_quotes):
    merge(wh, make_quotes())
    with pytest.raises(duckdb.ConstraintException, match="violates primary key constraint"):
        wh.con.execute("INSERT INTO raw_quotes VALUES ('1301', DATE '2024-01-04', 1, 1, 1, 1, 1, NULL, 1)")
    # Same code on another day and another code on the same day are fine.
    wh.con.execute("INSERT INTO raw_quotes VALUES ('1301', DATE '2024-01-05', 1, 1, 1, 1, 1, NULL, 1)")
    wh.con.execute("INSERT INTO raw_quotes VALUES ('1302', DATE '2024-01-04', 1, 1, 1, 1, 1, NULL, 1)")
    assert wh.row_count("raw_quotes") == 3


def test_reopening_keeps_the_data(tmp_path, make_quotes):
    with Warehouse(tmp_path / "w.duckdb") as wh:
        merge(wh, make_quotes({}, {"Code": "1302"}))
        before = wh.fingerprint("raw_quotes")
    with Warehouse(tmp_path / "w.duckdb", read_only=True) as wh:
        assert wh.row_count("raw_quotes") == 2
        assert wh.fingerprint("raw_quotes") == before
        assert wh.last_quote_date() == date(2024, 1, 4)


def test_read_only_on_a_missing_file(tmp_path):
    path = tmp_path / "missing.duckdb"
    with (
        pytest.raises(WarehouseError, match=re.escape(f"warehouse {path} does not exist")),
        Warehouse(path, read_only=True),
    ):
        pass
    assert not path.exists()


def test_not_a_duckdb_file(tmp_path):
    path = tmp_path / "notes.duckdb"
    path.write_text("this is not a database\n" * 100)
    with pytest.raises(WarehouseError, match=re.escape(f"cannot open warehouse {path}")), Warehouse(path):
        pass


def test_closed_warehouse_and_unknown_table(tmp_path):
    warehouse = Warehouse(tmp_path / "w.duckdb")
    with pytest.raises(WarehouseError, match="warehouse is not open"):
        warehouse.row_count("raw_quotes")
    with warehouse as wh, pytest.raises(WarehouseError, match="unknown warehouse table 'raw_quotes; DROP'"):
        wh.fingerprint("raw_quotes; DROP")


# -- fingerprint -----------------------------------------------------------------------------------------


def sample_quotes(make_quotes) -> pd.DataFrame:
    return make_quotes(
        {"Code": "1301", "Date": "2024-01-04"},
        {"Code": "1301", "Date": "2024-01-05", "Close": 106.5},
        {"Code": "1302", "Date": "2024-01-04", "TurnoverValue": np.nan},
        {"Code": "1303", "Date": "2024-01-05", "Volume": 0.0},
    )


def test_fingerprint_is_deterministic_and_independent_of_insertion_order(tmp_path, make_quotes):
    frame = sample_quotes(make_quotes)
    with Warehouse(tmp_path / "a.duckdb") as a, Warehouse(tmp_path / "b.duckdb") as b:
        merge(a, frame)
        merge(b, frame.iloc[::-1])
        first = a.fingerprint("raw_quotes")
        assert re.fullmatch(r"[0-9a-f]{64}", first)
        assert a.fingerprint("raw_quotes") == first
        # Two separate DuckDB files holding the same rows, inserted in opposite order.
        assert b.fingerprint("raw_quotes") == first


def test_fingerprint_of_an_empty_table_differs_from_a_filled_one(wh, make_quotes):
    empty = wh.fingerprint("raw_quotes")
    assert empty == wh.fingerprint("raw_quotes")
    merge(wh, make_quotes())
    assert wh.fingerprint("raw_quotes") != empty


@pytest.mark.parametrize(
    "change",
    [
        {"Close": 105.00000001},
        {"Code": "1309"},
        {"Date": "2024-01-09"},
        {"TurnoverValue": np.nan},  # NULL is not 0 and not the old value
        {"AdjustmentFactor": 0.5},
    ],
)
def test_fingerprint_changes_when_a_single_value_changes(tmp_path, make_quotes, change):
    frame = sample_quotes(make_quotes)
    changed = frame.copy()
    for column, value in change.items():
        changed.loc[1, column] = pd.Timestamp(value) if column == "Date" else value
    with Warehouse(tmp_path / "a.duckdb") as a, Warehouse(tmp_path / "b.duckdb") as b:
        merge(a, frame)
        merge(b, changed)
        assert a.fingerprint("raw_quotes") != b.fingerprint("raw_quotes")


def test_fingerprint_tells_null_from_zero(tmp_path, make_quotes):
    with Warehouse(tmp_path / "a.duckdb") as a, Warehouse(tmp_path / "b.duckdb") as b:
        merge(a, make_quotes({"TurnoverValue": np.nan}))
        merge(b, make_quotes({"TurnoverValue": 0.0}))
        assert a.fingerprint("raw_quotes") != b.fingerprint("raw_quotes")


def test_fingerprint_tells_string_boundaries_apart(tmp_path):
    with Warehouse(tmp_path / "a.duckdb") as a, Warehouse(tmp_path / "b.duckdb") as b:
        insert = "INSERT INTO listed_info (Code, CompanyName, ValidFrom) VALUES (?, ?, DATE '2024-01-04')"
        a.con.executemany(insert, [("1301", "ab"), ("1302", "c")])
        b.con.executemany(insert, [("1301", "a"), ("1302", "bc")])
        assert a.fingerprint("listed_info") != b.fingerprint("listed_info")


def test_fingerprint_covers_every_table(wh):
    for table in (*DATA_TABLES, "ingest_log"):
        assert re.fullmatch(r"[0-9a-f]{64}", wh.fingerprint(table))
    # Same (empty) content, different tables: the table name is part of the hash.
    assert len({wh.fingerprint(t) for t in DATA_TABLES}) == len(DATA_TABLES)


# -- merging quotes --------------------------------------------------------------------------------------


def test_merge_counts_inserted_updated_unchanged(wh, make_quotes):
    first = make_quotes({"Code": "1301"}, {"Code": "1302"}, {"Code": "1303"})
    assert merge(wh, first) == MergeCounts(inserted=3, updated=0, unchanged=0)
    assert merge(wh, first) == MergeCounts(inserted=0, updated=0, unchanged=3)

    second = make_quotes(
        {"Code": "1301"},  # unchanged
        {"Code": "1302", "Close": 107.0},  # updated
        {"Code": "1303", "TurnoverValue": np.nan},  # updated: a value became NULL
        {"Code": "1304"},  # inserted
    )
    assert merge(wh, second) == MergeCounts(inserted=1, updated=2, unchanged=1)
    table = quotes_table(wh).set_index("Code")
    assert table.loc["1302", "Close"] == 107.0
    assert pd.isna(table.loc["1303", "TurnoverValue"])
    assert sorted(table.index) == ["1301", "1302", "1303", "1304"]
    # A NULL staying NULL is unchanged, not "updated" (IS DISTINCT FROM, not !=).
    assert merge(wh, second) == MergeCounts(inserted=0, updated=0, unchanged=4)


def test_merge_does_not_delete_rows_missing_from_the_stage(wh, make_quotes):
    merge(wh, make_quotes({"Code": "1301"}, {"Code": "1302"}))
    assert merge(wh, make_quotes({"Code": "1302"})) == MergeCounts(0, 0, 1)
    assert wh.row_count("raw_quotes") == 2


def test_staged_duplicates_and_summary(wh, make_quotes):
    with wh.transaction():
        wh.create_staging()
        wh.stage_quotes(make_quotes({"Code": "1301"}, {"Code": "1302", "Date": "2024-01-05"}), "test")
        wh.stage_quotes(make_quotes({"Code": "1301", "Close": 101.0}), "test")
        assert wh.staged_duplicates() == [("1301", date(2024, 1, 4), 2)]
        assert wh.staged_summary() == (3, 2, date(2024, 1, 4), date(2024, 1, 5))


def test_staging_is_emptied_by_create_staging(wh, make_quotes):
    with wh.transaction():
        wh.create_staging()
        wh.stage_quotes(make_quotes(), "test")
        wh.create_staging()
        assert wh.staged_summary() == (0, 0, None, None)


def test_many_staged_rows_are_visible_to_scans_after_the_merge(wh):
    # Regression: in DuckDB 2.0 a staging table made by CREATE TABLE AS ... LIMIT 0 inside a transaction lost
    # bulk-inserted rows (> ~200k) from its scans. create_staging declares its columns to avoid it.
    n_codes, n_days = 260, 1000  # 260,000 rows
    days = pd.bdate_range("2010-01-04", periods=n_days).as_unit("ns")
    close = np.tile(np.arange(n_days, dtype=float) + 1.0, n_codes) + np.repeat(np.arange(n_codes) / 1000, n_days)
    frame = pd.DataFrame(
        {
            "Code": np.repeat([f"{1300 + i}" for i in range(n_codes)], n_days),
            "Date": np.tile(days.values, n_codes),
            "Open": close,
            "High": close + 1.0,
            "Low": close - 0.5,
            "Close": close,
            "Volume": 100.0,
            "TurnoverValue": np.nan,
            "AdjustmentFactor": 1.0,
        }
    )
    with wh.transaction():
        wh.create_staging()
        wh.stage_quotes(frame.iloc[: len(frame) // 2], "test")
        wh.stage_quotes(frame.iloc[len(frame) // 2 :], "test")
        assert wh.staged_summary() == (len(frame), n_codes, days[0].date(), days[-1].date())
        counts = wh.merge_staged_quotes()
        inside = wh.con.execute("SELECT count(*), min(Date), max(Date), sum(Close) FROM raw_quotes").fetchall()[0]
    assert counts == MergeCounts(inserted=len(frame), updated=0, unchanged=0)
    expected = (len(frame), days[0].date(), days[-1].date())
    assert inside[:3] == expected
    assert inside[3] == pytest.approx(frame["Close"].sum(), rel=1e-12)
    after = wh.con.execute(
        "SELECT count(*), min(Date), max(Date), sum(Close), count(DISTINCT Code) FROM raw_quotes"
    ).fetchall()[0]
    assert after[:3] == expected
    assert after[3] == pytest.approx(frame["Close"].sum(), rel=1e-12)
    assert after[4] == n_codes
    assert wh.last_quote_date() == days[-1].date()


# -- listed_info history ---------------------------------------------------------------------------------


def merge_listed(wh: Warehouse, *records: dict) -> MergeCounts:
    with wh.transaction():
        return wh.merge_listed_info(listed_frame(*records))


def test_first_listing_is_inserted(wh):
    assert merge_listed(wh, listed("1301"), listed("1302")) == MergeCounts(inserted=2, updated=0, unchanged=0)
    assert listed_table(wh) == [
        ("1301", "3050", "Alpha Co.", date(2024, 1, 4), None),
        ("1302", "3050", "Alpha Co.", date(2024, 1, 4), None),
    ]


def test_identical_snapshot_on_a_later_day_changes_nothing(wh):
    merge_listed(wh, listed(valid_from="2024-01-04"))
    before = wh.fingerprint("listed_info")
    assert merge_listed(wh, listed(valid_from="2024-01-10")) == MergeCounts(inserted=0, updated=0, unchanged=1)
    assert wh.fingerprint("listed_info") == before
    # The very same record again is unchanged too.
    assert merge_listed(wh, listed(valid_from="2024-01-04")) == MergeCounts(0, 0, 1)
    assert wh.fingerprint("listed_info") == before


def test_changed_sector_on_a_later_day_closes_the_previous_record(wh):
    merge_listed(wh, listed(valid_from="2024-01-04"), listed("1302", valid_from="2024-01-04"))
    counts = merge_listed(wh, listed(valid_from="2024-02-01", sector="3100"), listed("1302", valid_from="2024-02-01"))
    assert counts == MergeCounts(inserted=1, updated=0, unchanged=1)
    assert listed_table(wh) == [
        ("1301", "3050", "Alpha Co.", date(2024, 1, 4), date(2024, 1, 31)),
        ("1301", "3100", "Alpha Co.", date(2024, 2, 1), None),
        ("1302", "3050", "Alpha Co.", date(2024, 1, 4), None),
    ]
    # The next day's identical snapshot of the new sector changes nothing.
    assert merge_listed(wh, listed(valid_from="2024-02-02", sector="3100")) == MergeCounts(0, 0, 1)
    assert len(listed_table(wh)) == 3


def test_corrected_attributes_for_the_same_key_update_the_record(wh):
    merge_listed(wh, listed(valid_from="2024-01-04", name="Alpha Co"))
    assert merge_listed(wh, listed(valid_from="2024-01-04", name="Alpha Co.")) == MergeCounts(0, 1, 0)
    assert listed_table(wh) == [("1301", "3050", "Alpha Co.", date(2024, 1, 4), None)]


def test_an_end_date_for_the_same_key_updates_the_record(wh):
    merge_listed(wh, listed(valid_from="2024-01-04"))
    assert merge_listed(wh, listed(valid_from="2024-01-04", valid_to="2024-03-29")) == MergeCounts(0, 1, 0)
    assert listed_table(wh) == [("1301", "3050", "Alpha Co.", date(2024, 1, 4), date(2024, 3, 29))]


# -- quarantine ------------------------------------------------------------------------------------------


def test_quarantine_keeps_identical_rejected_rows_once(wh):
    rows = (
        ("1301", "2024-01-04", "not_nullable", '{"Open": null}'),
        ("1302", "2024-01-04", "close_within_range", '{"Close": 200}'),
    )
    with wh.transaction():
        assert wh.quarantine(rejected_frame(*rows), "run-1") == 2
    first = wh.fingerprint("rejected_rows")
    with wh.transaction():
        assert wh.quarantine(rejected_frame(*rows), "run-2") == 0
    assert wh.row_count("rejected_rows") == 2
    assert wh.fingerprint("rejected_rows") == first
    sql = "SELECT run_id, origin, source_row, Code, Date, rule, reason FROM rejected_rows ORDER BY Code"
    stored = wh.con.sql(sql).fetchall()
    assert stored == [
        ("run-1", "q.csv", 1, "1301", date(2024, 1, 4), "not_nullable", "reason for not_nullable"),
        ("run-1", "q.csv", 2, "1302", date(2024, 1, 4), "close_within_range", "reason for close_within_range"),
    ]


def test_quarantine_keeps_identical_rows_of_one_run_once(wh):
    row = ("1301", "2024-01-04", "not_nullable", '{"Open": null}')
    with wh.transaction():
        assert wh.quarantine(rejected_frame(row, row), "run-1") == 1


def test_quarantine_keeps_rows_that_differ_in_content_or_rule(wh):
    with wh.transaction():
        wh.quarantine(rejected_frame(("1301", "2024-01-04", "not_nullable", '{"Open": null}')), "run-1")
    with wh.transaction():
        added = wh.quarantine(
            rejected_frame(
                ("1301", "2024-01-04", "not_nullable", '{"Open": null, "Close": 1}'),  # other content
                ("1301", "2024-01-04", "trading_day", '{"Open": null}'),  # other rule
                ("1301", "2024-01-05", "not_nullable", '{"Open": null}'),  # other day
            ),
            "run-2",
        )
    assert added == 3
    assert wh.row_count("rejected_rows") == 4


def test_quarantine_dedups_rows_without_a_date(wh):
    frame = rejected_frame(("1301", "2024-01-04", "not_nullable", '{"Date": null}'))
    frame["Date"] = pd.NaT
    with wh.transaction():
        assert wh.quarantine(frame, "run-1") == 1
    with wh.transaction():
        assert wh.quarantine(frame, "run-2") == 0


# -- transactions ----------------------------------------------------------------------------------------


def test_transaction_rolls_back_everything_on_an_exception(wh, make_quotes):
    merge(wh, make_quotes({"Code": "1301"}))
    merge_listed(wh, listed("1301"))
    before = {t: wh.fingerprint(t) for t in DATA_TABLES}

    with pytest.raises(RuntimeError, match="boom"), wh.transaction():
        wh.create_staging()
        wh.stage_quotes(make_quotes({"Code": "1301", "Close": 109.0}, {"Code": "1302"}), "test")
        wh.stage_oracle(
            pd.DataFrame([["1302", pd.Timestamp("2024-01-04"), 0.1, 0.2, 0.3, 0.4]], columns=list(ORACLE_COLUMNS))
        )
        assert wh.merge_staged_quotes() == MergeCounts(inserted=1, updated=1, unchanged=0)
        wh.merge_staged_oracle()
        wh.merge_listed_info(listed_frame(listed("1301", valid_from="2024-02-01", sector="3100")))
        wh.quarantine(rejected_frame(("1303", "2024-01-04", "not_nullable", "{}")), "run-x")
        # Everything is visible inside the transaction ...
        assert wh.row_count("raw_quotes") == 2
        assert wh.row_count("synthetic_oracle") == 1
        raise RuntimeError("boom")

    # ... and nothing after the rollback.
    assert {t: wh.fingerprint(t) for t in DATA_TABLES} == before
    assert quotes_table(wh)["Close"].tolist() == [105.0]
    assert wh.row_count("synthetic_oracle") == 0
    assert wh.row_count("rejected_rows") == 0
    # The connection is usable again: a new transaction commits.
    assert merge(wh, make_quotes({"Code": "1302"})) == MergeCounts(1, 0, 0)


def test_an_error_while_reading_a_result_still_rolls_back_and_surfaces(wh, make_quotes, monkeypatch):
    """DuckDB 2.0 refuses ROLLBACK while a result is open; the original error must not be masked by that."""

    def broken(column):
        raise WarehouseError("cannot fingerprint this column")

    monkeypatch.setattr(atft.warehouse, "_column_bytes", broken)
    with pytest.raises(WarehouseError, match="cannot fingerprint this column"), wh.transaction():
        wh.create_staging()
        wh.stage_quotes(make_quotes({}, {"Code": "1302"}), "test")
        wh.merge_staged_quotes()
        wh.fingerprint("raw_quotes")
    assert wh.row_count("raw_quotes") == 0


def test_transaction_commits_when_the_block_ends(tmp_path, make_quotes):
    with Warehouse(tmp_path / "w.duckdb") as wh:
        merge(wh, make_quotes())
    with Warehouse(tmp_path / "w.duckdb", read_only=True) as wh:
        assert wh.row_count("raw_quotes") == 1


def test_oracle_merge_replaces_by_key(wh):
    def oracle(value: float) -> pd.DataFrame:
        return pd.DataFrame([["1301", pd.Timestamp("2024-01-04"), value, 0.0, 0.0, 0.0]], columns=list(ORACLE_COLUMNS))

    for value in (0.1, 0.2):
        with wh.transaction():
            wh.create_staging()
            wh.stage_oracle(oracle(value))
            wh.merge_staged_oracle()
    assert wh.con.sql("SELECT Code, oracle_1d FROM synthetic_oracle").fetchall() == [("1301", 0.2)]
