from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atft.calendar import TradingCalendar
from atft.config import (
    PipelineConfig,
    SyntheticSourceConfig,
    UniverseConfig,
    ValidationConfig,
    WarehouseConfig,
    load_config,
)
from atft.ingest import IngestAborted, ingest
from atft.sources.base import QuoteChunk, SourceError
from atft.sources.synthetic import SyntheticSource
from atft.warehouse import DATA_TABLES, Warehouse
from schemas.raw_quotes import StructuralError

START, END = date(2023, 1, 4), date(2023, 12, 28)
MID = date(2023, 6, 30)  # a Friday and an XTKS session
REPO = Path(__file__).resolve().parents[2]
SP500 = REPO.parent / "shared" / "data" / "sp500_2013_2018.parquet"
JUMPS_FLAGGED = 24  # one-way day-over-day moves beyond 0.4 in Open or Close (VRTX, 2013-04-19, +62%, and so on)


def synthetic(**settings) -> SyntheticSourceConfig:
    return SyntheticSourceConfig(kind="synthetic", **{"n_stocks": 40, "start": START, "end": END, **settings})


def make_config(path: Path, calendar: str = "XTKS", codes=None, **validation) -> PipelineConfig:
    return PipelineConfig(
        name="t",
        source=synthetic(chunk_stocks=15),  # three chunks
        universe=UniverseConfig(code_pattern=r"^\d{4}$", codes=codes),
        calendar=calendar,
        warehouse=WarehouseConfig(path=path),
        validation=ValidationConfig(**validation),
    )


@pytest.fixture
def config(tmp_path) -> PipelineConfig:
    return make_config(tmp_path / "w.duckdb")


def synthetic_source(config: PipelineConfig) -> SyntheticSource:
    # Always on the JPX calendar, whatever the pipeline config says: that is what the market is.
    return SyntheticSource(config.source, TradingCalendar("XTKS"))


class Wrapped:
    """A MarketSource that delegates to ``inner`` and rewrites each chunk with ``edit(chunk_number, frame)``.

    ``fail_after`` raises a SourceError once that many chunks were yielded; ``repeat_first`` yields the
    first chunk once more at the end.
    """

    name = "wrapped"

    def __init__(
        self,
        inner,
        edit: Callable[[int, pd.DataFrame], pd.DataFrame] | None = None,
        fail_after: int | None = None,
        repeat_first: bool = False,
    ) -> None:
        self.inner = inner
        self.edit = edit
        self.fail_after = fail_after
        self.repeat_first = repeat_first
        self.yielded: list[QuoteChunk] = []

    def default_window(self):
        return self.inner.default_window()

    def listed_info(self, as_of):
        return self.inner.listed_info(as_of)

    def quote_chunks(self, start, end) -> Iterator[QuoteChunk]:
        for number, chunk in enumerate(self.inner.quote_chunks(start, end)):
            if self.fail_after is not None and number == self.fail_after:
                raise SourceError("connection dropped after page 1")
            frame = chunk.frame if self.edit is None else self.edit(number, chunk.frame.copy())
            chunk = QuoteChunk(frame=frame, origin=chunk.origin, oracle=chunk.oracle)
            self.yielded.append(chunk)
            yield chunk
        if self.repeat_first:
            yield self.yielded[0]


def raise_close(every: int, factor: float = 1.01, chunks=None):
    """An edit that raises Close (and High where needed, so the row stays valid) on every ``every``-th row."""

    def edit(number: int, frame: pd.DataFrame) -> pd.DataFrame:
        if chunks is None or number in chunks:
            rows = frame.index[::every]
            frame.loc[rows, "Close"] = frame.loc[rows, "Close"] * factor
            frame.loc[rows, "High"] = np.maximum(frame.loc[rows, "High"], frame.loc[rows, "Close"])
        return frame

    return edit


def close_above_high(rows_per_chunk: int, chunks=None, day: date | None = None):
    """An edit that makes the first ``rows_per_chunk`` rows of a chunk (on ``day`` only, if given) anomalous:
    Close > High. With ``day`` the same keys are hit whatever the window."""

    def edit(number: int, frame: pd.DataFrame) -> pd.DataFrame:
        if chunks is None or number in chunks:
            candidates = frame.index if day is None else frame.index[frame["Date"] == pd.Timestamp(day)]
            rows = candidates[:rows_per_chunk]
            frame.loc[rows, "Close"] = frame.loc[rows, "High"] + 1.0
        return frame

    return edit


def fingerprints(path: Path) -> dict[str, str]:
    with Warehouse(path, read_only=True) as wh:
        return {table: wh.fingerprint(table) for table in DATA_TABLES}


def counts(path: Path) -> dict[str, int]:
    with Warehouse(path, read_only=True) as wh:
        return {table: wh.row_count(table) for table in DATA_TABLES}


def log(path: Path):
    with Warehouse(path, read_only=True) as wh:
        return wh.log_entries()


def query(path: Path, sql: str) -> list[tuple]:
    with Warehouse(path, read_only=True) as wh:
        return wh.con.execute(sql).fetchall()


def full_reference(tmp_path: Path, name: str = "full.duckdb"):
    """A single full ingest of the default market into a fresh warehouse."""
    config = make_config(tmp_path / name)
    return ingest(config), config.warehouse.path


# -- idempotency and determinism -------------------------------------------------------------------------


def test_ingest_into_an_empty_warehouse(config):
    report = ingest(config)
    path = config.warehouse.path
    assert report.status == "succeeded"
    assert (report.start, report.end) == (START, END)  # the source's default window
    assert (report.first_date, report.last_date) == (START, END)
    assert report.codes == 40
    assert report.rows_inserted == report.rows_received > 5000
    assert (report.rows_updated, report.rows_unchanged, report.rows_rejected) == (0, 0, 0)
    assert report.listed_inserted == 40
    found = counts(path)
    assert found["raw_quotes"] == found["synthetic_oracle"] == report.rows_inserted
    assert found["listed_info"] == 40
    assert report.content_hash == fingerprints(path)["raw_quotes"]
    assert query(path, "SELECT count(DISTINCT Code), min(Date), max(Date) FROM raw_quotes") == [(40, START, END)]
    (entry,) = log(path)
    assert (entry.status, entry.rows_inserted, entry.content_hash) == (
        "succeeded",
        report.rows_inserted,
        report.content_hash,
    )
    assert entry.source == "synthetic"
    assert entry.message is None
    assert f"raw_quotes inserted {report.rows_inserted:,}" in report.summary()


@pytest.mark.parametrize("second_start", [None, START], ids=["incremental", "full-window"])
def test_ingesting_twice_changes_nothing(config, second_start):
    path = config.warehouse.path
    # A few anomalies, so that the quarantine is exercised too (far below the 1% guard).
    bad = close_above_high(1, day=date(2023, 3, 1))
    first = ingest(config, source=Wrapped(synthetic_source(config), bad))
    assert first.rows_rejected == 3
    before = fingerprints(path)

    second = ingest(config, start=second_start, source=Wrapped(synthetic_source(config), bad))
    assert second.status == "succeeded"
    assert (second.rows_inserted, second.rows_updated) == (0, 0)
    assert second.rows_unchanged == second.rows_received - second.rows_rejected > 0
    assert second.content_hash == first.content_hash
    assert fingerprints(path) == before
    assert counts(path)["rejected_rows"] == 3
    if second_start is None:
        assert second.start == END  # re-reads the last ingested day only
    else:
        assert second.rows_unchanged == first.rows_inserted
        assert second.rows_rejected == 3  # read again, and kept once
    entries = log(path)
    assert [e.status for e in entries] == ["succeeded", "succeeded"]
    assert entries[0].content_hash == entries[1].content_hash == first.content_hash
    assert [e.rows_inserted for e in entries] == [first.rows_inserted, 0]


def test_synthetic_market_is_deterministic_end_to_end(tmp_path):
    def run(name: str, seed: int):
        path = tmp_path / name
        config = make_config(path).model_copy(update={"source": synthetic(seed=seed)})
        return ingest(config), fingerprints(path)

    a, a_tables = run("a.duckdb", 7)
    b, b_tables = run("b.duckdb", 7)
    c, c_tables = run("c.duckdb", 8)
    assert a.content_hash == b.content_hash
    assert a_tables == b_tables
    assert c.content_hash != a.content_hash
    assert c_tables["raw_quotes"] != a_tables["raw_quotes"]
    assert c_tables["synthetic_oracle"] != a_tables["synthetic_oracle"]


def test_chunk_size_does_not_change_the_content(tmp_path):
    reference, _ = full_reference(tmp_path)
    config = make_config(tmp_path / "big-chunks.duckdb").model_copy(update={"source": synthetic(chunk_stocks=40)})
    assert ingest(config).content_hash == reference.content_hash


# -- updates ---------------------------------------------------------------------------------------------


def test_changed_values_are_counted_as_updates_and_replace_the_old_ones(config):
    path = config.warehouse.path
    first = ingest(config)
    before = fingerprints(path)

    source = Wrapped(synthetic_source(config), raise_close(every=50))
    second = ingest(config, start=START, source=source)
    changed = pd.concat([c.frame.iloc[::50] for c in source.yielded])
    assert len(changed) > 50
    assert second.rows_inserted == 0
    assert second.rows_updated == len(changed)
    assert second.rows_unchanged == first.rows_inserted - len(changed)
    assert second.content_hash != first.content_hash
    after = fingerprints(path)
    assert after["raw_quotes"] != before["raw_quotes"]
    assert after["synthetic_oracle"] == before["synthetic_oracle"]
    assert counts(path)["raw_quotes"] == first.rows_inserted

    stored = pd.DataFrame(
        query(path, "SELECT Code, Date, High, Close FROM raw_quotes"), columns=["Code", "Date", "High", "Close"]
    ).assign(Date=lambda f: pd.to_datetime(f["Date"]).dt.as_unit("ns"))
    joined = changed.merge(stored, on=["Code", "Date"], suffixes=("", "_stored"))
    assert len(joined) == len(changed)
    np.testing.assert_array_equal(joined["Close_stored"], joined["Close"])
    np.testing.assert_array_equal(joined["High_stored"], joined["High"])

    # Ingesting the original again restores the original content.
    restore = ingest(config, start=START)
    assert restore.rows_updated == len(changed)
    assert restore.content_hash == first.content_hash


# -- incremental -----------------------------------------------------------------------------------------


def test_incremental_ingest_continues_from_the_last_trading_day(tmp_path, config):
    path = config.warehouse.path
    first = ingest(config, end=MID)
    assert first.last_date == MID
    with Warehouse(path, read_only=True) as wh:
        assert wh.last_quote_date() == MID

    second = ingest(config)
    assert second.start == MID  # inclusive: the last day is read again
    assert second.end == END  # the source's default end
    assert second.first_date == MID
    mid_rows = query(path, f"SELECT count(*) FROM raw_quotes WHERE Date = DATE '{MID}'")[0][0]
    assert second.rows_unchanged == mid_rows > 0
    assert second.rows_updated == 0

    reference, reference_path = full_reference(tmp_path)
    assert first.rows_inserted + second.rows_inserted == reference.rows_inserted
    assert counts(path) == counts(reference_path)
    assert second.content_hash == reference.content_hash
    assert fingerprints(path) == fingerprints(reference_path)
    assert [(e.start_date, e.end_date) for e in log(path)] == [(START, MID), (MID, END)]


def test_up_to_date_when_start_is_after_end(config):
    path = config.warehouse.path
    ingest(config, end=MID)
    before = fingerprints(path)
    report = ingest(config, start=date(2023, 7, 3), end=MID)
    assert report.status == "up_to_date"
    assert (report.rows_received, report.rows_inserted, report.rows_updated) == (0, 0, 0)
    assert report.content_hash == before["raw_quotes"]
    assert fingerprints(path) == before
    assert [e.status for e in log(path)] == ["succeeded", "up_to_date"]


# -- failures leave the data as it was ---------------------------------------------------------------------


@pytest.fixture
def half_loaded(config):
    """A warehouse holding the first half of the year, and its fingerprints."""
    ingest(config, end=MID)
    return config.warehouse.path, fingerprints(config.warehouse.path)


def assert_failed_and_untouched(path: Path, before: dict[str, str], message: str) -> None:
    assert fingerprints(path) == before
    entries = log(path)
    assert [e.status for e in entries] == ["succeeded", "failed"]
    failed = entries[-1]
    assert message in failed.message
    assert (failed.rows_inserted, failed.content_hash) == (0, None)


def test_source_error_after_a_good_chunk_leaves_the_data_unchanged(config, half_loaded):
    path, before = half_loaded
    source = Wrapped(synthetic_source(config), fail_after=1)
    with pytest.raises(SourceError, match="connection dropped after page 1"):
        ingest(config, start=START, source=source)
    assert len(source.yielded) == 1  # one chunk was read and staged before the failure
    assert_failed_and_untouched(path, before, "SourceError: connection dropped after page 1")


@pytest.mark.parametrize("step", ["merge_staged_oracle", "merge_listed_info", "quarantine"])
def test_failure_after_quotes_were_merged_leaves_the_data_unchanged(config, half_loaded, monkeypatch, step):
    path, before = half_loaded
    original = getattr(Warehouse, step)
    merged: list[int] = []

    def write_then_fail(self, *args, **kwargs):
        # The quotes are in raw_quotes by now (inside the transaction), and this step writes too.
        merged.append(self.row_count("raw_quotes"))
        original(self, *args, **kwargs)
        raise OSError(f"disk full during {step}")

    monkeypatch.setattr(Warehouse, step, write_then_fail)
    # Anomalies, so that the quarantine step runs; new rows and updated rows, so that the merge writes.
    source = Wrapped(synthetic_source(config), close_above_high(1))
    with pytest.raises(OSError, match=f"disk full during {step}"):
        ingest(config, start=START, source=source)
    assert merged and merged[0] > counts(path)["raw_quotes"]
    assert_failed_and_untouched(path, before, f"OSError: disk full during {step}")


def test_structural_error_in_the_second_chunk_leaves_the_data_unchanged(config, half_loaded):
    path, before = half_loaded

    def duplicate_a_row(number: int, frame: pd.DataFrame) -> pd.DataFrame:
        if number == 1:
            frame = pd.concat([frame, frame.iloc[[3]]], ignore_index=True)
        return frame

    source = Wrapped(synthetic_source(config), duplicate_a_row)
    with pytest.raises(StructuralError) as info:
        ingest(config, start=START, source=source)
    chunk = source.yielded[1]
    code, day = chunk.frame.loc[3, "Code"], chunk.frame.loc[3, "Date"].date()
    last = len(chunk.frame) - 1
    expected = f"duplicate (Code, Date) keys in 2 rows: row 3 ({code} {day}), row {last} ({code} {day})"
    assert str(info.value) == f"{chunk.origin}: {expected}"
    assert_failed_and_untouched(path, before, f"StructuralError: {chunk.origin}: {expected}")


def test_failure_in_the_first_ingest_leaves_an_empty_warehouse(config):
    path = config.warehouse.path
    with pytest.raises(SourceError):
        ingest(config, source=Wrapped(synthetic_source(config), fail_after=2))
    assert counts(path) == dict.fromkeys(DATA_TABLES, 0)
    assert [e.status for e in log(path)] == ["failed"]


# -- validation policies ---------------------------------------------------------------------------------


def test_abort_policy_stops_at_the_first_anomalous_row(tmp_path):
    path = tmp_path / "abort.duckdb"
    strict = make_config(path, row_anomalies="abort")
    source = Wrapped(synthetic_source(strict), close_above_high(1, chunks={1}))
    with pytest.raises(IngestAborted) as info:
        ingest(strict, source=source)
    chunk = source.yielded[1]
    row = chunk.frame.iloc[0]
    reason = f"Close {row['Close']:g} outside [Low {row['Low']:g}, High {row['High']:g}]"
    message = str(info.value)
    assert message.startswith(
        f"{chunk.origin}: 1 row(s) failed row checks and validation.row_anomalies is 'abort'; nothing was written."
    )
    assert f"row {chunk.frame.index[0]} ({row['Code']} {row['Date'].date()}): {reason}" in message
    assert len(source.yielded) == 2  # stopped at the chunk with the anomaly
    assert counts(path) == dict.fromkeys(DATA_TABLES, 0)
    (entry,) = log(path)
    assert entry.status == "failed"
    assert entry.message.startswith("IngestAborted: ")
    assert reason in entry.message


def test_too_many_rejected_rows_abort_with_the_percentage(config, half_loaded):
    path, before = half_loaded
    source = Wrapped(synthetic_source(config), close_above_high(40))  # 120 rows
    with pytest.raises(IngestAborted) as info:
        ingest(config, start=START, source=source)
    received = sum(len(c.frame) for c in source.yielded)
    fraction = 120 / received
    assert fraction > 0.01
    message = str(info.value)
    assert message.startswith(
        f"120 of {received:,} rows ({fraction:.1%}) failed row checks, above "
        "validation.max_rejected_fraction=0.01; nothing was written. First reasons: row "
    )
    assert message.endswith("; and 115 more")
    assert "outside [Low" in message
    assert_failed_and_untouched(path, before, f"({fraction:.1%}) failed row checks")


def test_rejected_rows_under_the_limit_are_quarantined_with_rule_and_reason(config):
    path = config.warehouse.path
    source = Wrapped(synthetic_source(config), close_above_high(2))
    report = ingest(config, source=source)
    bad = pd.concat([c.frame.iloc[:2].assign(origin=c.origin) for c in source.yielded])
    assert len(bad) == 6
    assert report.rows_rejected == 6
    assert report.rejected_by_rule == {"close_within_range": 6}
    assert report.rows_inserted == report.rows_received - 6
    assert "quarantined by rule: close_within_range 6" in report.summary()

    stored = query(
        path, "SELECT Code, Date, rule, reason, origin, source_row, run_id FROM rejected_rows ORDER BY Code, Date"
    )
    expected = sorted(
        (
            r.Code,
            r.Date.date(),
            "close_within_range",
            f"Close {r.Close:g} outside [Low {r.Low:g}, High {r.High:g}]",
            r.origin,
            int(r.Index),
            report.run_id,
        )
        for r in bad.itertuples()
    )
    assert stored == expected
    # Quarantined rows are kept out of raw_quotes.
    keys = query(path, "SELECT Code, Date FROM raw_quotes")
    assert not {(r[0], r[1]) for r in stored} & set(keys)


def test_the_wrong_calendar_is_caught_by_the_fraction_guard(tmp_path):
    path = tmp_path / "nyse.duckdb"
    config = make_config(path, calendar="XNYS")
    source = synthetic_source(config)  # the Tokyo market, validated against New York sessions
    with pytest.raises(IngestAborted) as info:
        ingest(config, source=source)
    message = str(info.value)
    assert re.search(
        r"^[\d,]+ of [\d,]+ rows \(\d+\.\d%\) failed row checks, above validation.max_rejected_fraction", message
    )
    assert "is not a XNYS trading day" in message
    assert counts(path) == dict.fromkeys(DATA_TABLES, 0)
    assert [e.status for e in log(path)] == ["failed"]


def test_universe_codes_restrict_the_ingest(tmp_path):
    listing = SyntheticSource(synthetic(), TradingCalendar("XTKS")).listed_info(END)
    codes = sorted(listing["Code"])[3:6]
    path = tmp_path / "three.duckdb"
    report = ingest(make_config(path, codes=codes))
    assert report.codes == 3
    for table in ("raw_quotes", "listed_info", "synthetic_oracle"):
        assert [r[0] for r in query(path, f"SELECT DISTINCT Code FROM {table} ORDER BY Code")] == codes, table
    assert report.rows_received == counts(path)["raw_quotes"] > 0
    assert report.listed_inserted == 3


def test_duplicates_across_chunks_abort_naming_the_keys(config):
    path = config.warehouse.path
    source = Wrapped(synthetic_source(config), repeat_first=True)
    with pytest.raises(IngestAborted) as info:
        ingest(config, source=source)
    first = source.yielded[0].frame.sort_values(["Code", "Date"])
    shown = ", ".join(f"{r.Code} {r.Date.date()} (2 times)" for r in first.head(5).itertuples())
    assert str(info.value) == f"duplicate (Code, Date) keys across the source's files or pages: {shown}"
    assert counts(path) == dict.fromkeys(DATA_TABLES, 0)
    assert "IngestAborted: duplicate (Code, Date) keys" in log(path)[-1].message


def test_a_good_and_a_quarantined_copy_of_a_row_in_two_chunks_are_duplicates(config):
    class BadCopyAtEnd(Wrapped):
        def quote_chunks(self, start, end):
            yield from super().quote_chunks(start, end)
            bad = self.yielded[0].frame.head(1).copy()
            bad["Close"] = bad["High"] + 1.0
            yield QuoteChunk(frame=bad, origin="late-file.csv")

    source = BadCopyAtEnd(synthetic_source(config))
    with pytest.raises(IngestAborted) as info:
        ingest(config, source=source)
    first = source.yielded[0].frame.iloc[0]
    assert f"{first.Code} {first.Date.date()} (2 times)" in str(info.value)
    assert counts(config.warehouse.path) == dict.fromkeys(DATA_TABLES, 0)


def test_reingesting_an_old_window_keeps_known_delistings(config):
    config = config.model_copy(update={"source": synthetic(chunk_stocks=15, delisting_fraction=0.3)})
    path = config.warehouse.path
    ingest(config)
    closed = query(path, "SELECT Code, ValidTo FROM listed_info WHERE ValidTo IS NOT NULL ORDER BY Code")
    assert len(closed) >= 3
    before = fingerprints(path)
    ingest(config, start=START, end=date(2023, 3, 31))
    assert query(path, "SELECT Code, ValidTo FROM listed_info WHERE ValidTo IS NOT NULL ORDER BY Code") == closed
    assert fingerprints(path) == before


# -- real data -------------------------------------------------------------------------------------------


def expected_sp500_rejects() -> pd.DataFrame:
    """Rows of the S&P file that fail a row check, found with plain pandas."""
    raw = pd.read_parquet(SP500)
    prices = raw[["open", "high", "low", "close"]]
    bad = prices.isna().any(axis=1) | (raw["high"] < raw["low"]) | ~raw["close"].between(raw["low"], raw["high"])
    return raw[bad].assign(source_row=raw.index[bad] + 1)


@pytest.mark.skipif(not SP500.exists(), reason=f"{SP500} is not available")
def test_sp500_file_loads_with_exactly_the_known_bad_rows_quarantined(tmp_path):
    path = tmp_path / "sp500.duckdb"
    config = load_config(REPO / "deployments" / "sp500.yaml", {"warehouse.path": str(path), "source.path": str(SP500)})
    report = ingest(config)
    assert report.rows_received == 619_040
    assert report.rows_inserted == 619_018
    assert report.rows_rejected == 22
    assert report.codes == 505
    assert (report.first_date, report.last_date) == (date(2013, 2, 8), date(2018, 2, 7))
    assert report.rejected_by_rule == {"not_nullable": 11, "high_ge_low": 1, "close_within_range": 9, "bad_tick": 2}
    found = counts(path)
    assert found["raw_quotes"] == 619_018
    assert found["rejected_rows"] == 22
    assert query(path, "SELECT count(DISTINCT Code) FROM raw_quotes") == [(505,)]
    assert query(path, "SELECT count(*) FROM raw_quotes WHERE AdjustmentFactor = 1.0") == [(619_018,)]

    # Two bars that pass every row check but jump and come straight back: a 2017-09-14 bar of NWL 30% off
    # its neighbours on all four prices, and a CHD open at half its range.
    ticks = query(path, "SELECT Code, Date, reason, source_row FROM rejected_rows WHERE rule = 'bad_tick' ORDER BY 2")
    tick_keys = {("CHD", "2014-05-19"), ("NWL", "2017-09-14")}
    assert [(code, str(day)) for code, day, _, _ in ticks] == sorted(tick_keys, key=lambda k: k[1])
    raw = pd.read_parquet(SP500, columns=["Name", "date"])
    for code, day, _, source_row in ticks:
        assert tuple(raw.iloc[source_row - 1]) == (code, str(day))
    assert ticks[0][2] == (
        "suspected bad tick: Open 33.715 -> 18.77 -> 33.89: a 1.8x move taken back the next day, beyond Open bound 0.4"
    )
    # One-way jumps are kept and flagged for a person to judge.
    assert len(report.jumps) == JUMPS_FLAGGED
    assert {(j["Code"], str(j["Date"])) for j in report.jumps}.isdisjoint(tick_keys)

    expected = expected_sp500_rejects()
    assert len(expected) == 20
    rejected = pd.DataFrame(
        query(path, "SELECT Code, Date, rule, reason, source_row FROM rejected_rows WHERE rule <> 'bad_tick'"),
        columns=["Code", "Date", "rule", "reason", "source_row"],
    )
    assert set(zip(rejected["Code"], rejected["Date"].astype(str), strict=True)) == set(
        zip(expected["Name"], expected["date"], strict=True)
    )
    # The README's breakdown: 11 missing open (8 of them also missing high/low), 1 high < low, 8 close < low.
    by_key = rejected.set_index(["Code", rejected["Date"].astype(str)])
    missing_open = expected[expected["open"].isna()]
    assert len(missing_open) == 11
    missing_hl = expected[expected["high"].isna()]
    assert len(missing_hl) == 8
    for r in missing_open.itertuples():
        reason = by_key.loc[(r.Name, r.date), "reason"]
        assert by_key.loc[(r.Name, r.date), "rule"] == "not_nullable"
        # Each reason names the file's own column beside the canonical one.
        open_missing = "Open (file column 'open') is missing"
        high_low_missing = "; High (file column 'high') is missing; Low (file column 'low') is missing"
        assert reason == (open_missing + high_low_missing if pd.isna(r.high) else open_missing)
    aos = by_key.loc[("AOS", "2014-05-19")]
    assert aos["rule"] == "high_ge_low,close_within_range"
    high, low, close = "High (file column 'high')", "Low (file column 'low')", "Close (file column 'close')"
    assert aos["reason"] == f"{high} 23.595 < {low} 23.85; {close} 24.445 outside [{low} 23.85, {high} 23.595]"
    close_below_low = expected[expected["close"] < expected["low"]]
    assert len(close_below_low) == 8
    for r in close_below_low.itertuples():
        assert by_key.loc[(r.Name, r.date), "rule"] == "close_within_range"
        assert by_key.loc[(r.Name, r.date), "reason"].startswith(f"{close} {r.close:g} outside [{low} {r.low:g}, ")
    # source_row points at the 1-based row of the file.
    assert dict(zip(by_key.index, by_key["source_row"], strict=True)) == dict(
        zip(zip(expected["Name"], expected["date"], strict=True), expected["source_row"], strict=True)
    )

    # Re-ingesting the whole file changes nothing: same quotes, the same 22 rows quarantined once.
    before = fingerprints(path)
    again = ingest(config, start=date(2013, 1, 1))
    assert (again.rows_inserted, again.rows_updated, again.rows_unchanged) == (0, 0, 619_018)
    assert again.rows_rejected == 22
    assert again.content_hash == report.content_hash
    assert fingerprints(path) == before
