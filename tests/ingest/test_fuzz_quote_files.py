"""Fuzzing the files source: valid CSV and Parquet quote files, corrupted at random, ingested (issue 14).

Each example copies a warehouse that already holds one good ingest, corrupts a valid quote file and ingests
it. The property: the ingest either

- succeeds, and then every row of ``raw_quotes`` passes the row checks again and every row of ``rejected_rows``
  says which rule it broke and why; or
- raises ``SourceError``, ``StructuralError`` or ``IngestAborted``, never another exception, and then
  ``raw_quotes``, ``listed_info`` and ``rejected_rows`` are exactly as before: nothing is half-written.

Corruptions: cell values (random and unicode text, empty, huge, negative, inf and nan numbers), types (a
numeric column as text, dates in odd formats, zoned timestamps, times of day), rows (deleted, duplicated,
shuffled, extra or missing fields, blank or garbage lines), headers (renamed, case-changed, dropped,
duplicated, an extra column), encodings (latin-1, UTF-16, a BOM, invalid UTF-8 bytes, gzip) and truncation at
a random byte. Parquet frames are corrupted before writing (dtypes, values, column names, tz-aware
timestamps) and their bytes after (truncated, overwritten, replaced by garbage).

The default profile runs a fixed, derandomized set of examples, so that CI is reproducible; the nightly
profile explores 2,000 new examples per test and keeps failures in ``.hypothesis/`` to replay them:

    HYPOTHESIS_PROFILE=nightly .venv/bin/python -m pytest tests/ingest/test_fuzz_quote_files.py
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from hypothesis.strategies import DrawFn

from atft.calendar import TradingCalendar
from atft.config import FilesSourceConfig, PipelineConfig, UniverseConfig, ValidationConfig, WarehouseConfig
from atft.ingest import IngestAborted, ingest
from atft.sources.base import SourceError
from atft.warehouse import Warehouse
from schemas.raw_quotes import StructuralError

# The default run is sized to stay under a minute on two cores (measured: see the README's testing section).
settings.register_profile("default", max_examples=200, derandomize=True)
settings.register_profile("nightly", max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
# An example is one ingest (about 0.15 s); slow draws and large files are the point here, not a problem.
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# Dates in odd formats are the point: pandas warning that it parses them one by one is expected, not news.
pytestmark = pytest.mark.filterwarnings("ignore:Could not infer format:UserWarning")

MAPPING = {
    "ticker": "Code",
    "date": "Date",
    "open": "Open",
    "high": "High",
    "low": "Low",
    "close": "Close",
    "volume": "Volume",
    "turnover": "TurnoverValue",
    "factor": "AdjustmentFactor",
}
IGNORED = "note"  # listed in source.ignore_columns: an extra column of that name is allowed
NUMERIC = ("open", "high", "low", "close", "volume", "turnover", "factor")
CODE_PATTERN = r"^[A-Z]{1,5}$"
XNYS = TradingCalendar("XNYS")
DAYS = [d.date() for d in XNYS.sessions(date(2018, 1, 2), date(2018, 1, 11))]
PREPARED_DAYS = DAYS[:5]  # the warehouse holds these; a fuzzed file both updates them and adds the rest
TABLES = ("raw_quotes", "listed_info", "rejected_rows")
NY = ZoneInfo("America/New_York")
ZONES = (UTC, NY, ZoneInfo("Asia/Tokyo"))


def quote_rows(days: list[date]) -> list[list[str]]:
    """Valid rows as CSV text: steady prices (no jump), High >= Close >= Low > 0."""
    rows = []
    for code, base in (("AAA", 10.0), ("BBB", 20.0), ("CCC", 30.0)):
        for i, day in enumerate(days):
            close = base + 0.1 * i
            high, low = round(close * 1.02, 4), round(close * 0.98, 4)
            rows.append([code, day.isoformat(), str(close), str(high), str(low), str(close), str(1000 + i), "", "1"])
    return rows


ROWS = quote_rows(DAYS)


def pipeline(quotes: Path, db: Path, validation: ValidationConfig) -> PipelineConfig:
    return PipelineConfig(
        name="fuzz",
        calendar="XNYS",
        source=FilesSourceConfig(kind="files", path=quotes, columns=MAPPING, ignore_columns=[IGNORED]),
        universe=UniverseConfig(code_pattern=CODE_PATTERN),
        warehouse=WarehouseConfig(path=db, lock_timeout_s=5),
        validation=validation,
    )


def _quiet(_: str) -> None:
    """Progress lines of hundreds of ingests would only bury a failure's report."""


def fingerprints(db: Path) -> dict[str, str]:
    with Warehouse(db, read_only=True) as wh:
        return {table: wh.fingerprint(table) for table in TABLES}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse after one good ingest of the first days, with one row quarantined, so that "unchanged" is
    a claim about content. Examples copy the DuckDB file only: the lock files beside it belong to this one."""
    folder = tmp_path_factory.mktemp("prepared")
    quotes = folder / "quotes.csv"
    bad = ["DDD", DAYS[0].isoformat(), "10", "11", "9", "12", "100", "", "1"]  # Close above High
    write_csv(quotes, list(MAPPING), [*quote_rows(PREPARED_DAYS), bad])
    db = folder / "w.duckdb"
    report = ingest(pipeline(quotes, db, ValidationConfig(max_rejected_fraction=0.5)), on_progress=_quiet)
    assert (report.rows_inserted, report.rows_rejected) == (len(PREPARED_DAYS) * 3, 1)
    return db


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


# -- the property ----------------------------------------------------------------------------------------

SESSIONS = XNYS.sessions(XNYS.first_session, XNYS.last_session)


def assert_warehouse_valid(db: Path) -> None:
    """Every stored quote passes the row checks again; every quarantined row names its rule and reason."""
    with Warehouse(db, read_only=True) as wh:
        quotes = wh.con.sql("SELECT * FROM raw_quotes").df()
        rejected = wh.con.sql("SELECT rule, reason FROM rejected_rows").df()
    prices = quotes[["Open", "High", "Low", "Close"]]
    checks = {
        "code": quotes["Code"].str.fullmatch(CODE_PATTERN),
        "trading day": pd.to_datetime(quotes["Date"]).isin(SESSIONS),
        "finite positive prices": (np.isfinite(prices) & (prices > 0)).all(axis=1),
        "High >= Low": quotes["High"] >= quotes["Low"],
        "Close within [Low, High]": quotes["Close"].between(quotes["Low"], quotes["High"]),
        "finite Volume >= 0": np.isfinite(quotes["Volume"]) & (quotes["Volume"] >= 0),
        "finite TurnoverValue >= 0 or none": quotes["TurnoverValue"].isna()
        | (np.isfinite(quotes["TurnoverValue"]) & (quotes["TurnoverValue"] >= 0)),
        "finite AdjustmentFactor > 0": np.isfinite(quotes["AdjustmentFactor"]) & (quotes["AdjustmentFactor"] > 0),
    }
    for name, ok in checks.items():
        assert ok.all(), f"raw_quotes holds rows that fail {name}:\n{quotes[~ok]}"
    unexplained = rejected[(rejected["rule"].str.strip() == "") | (rejected["reason"].str.strip() == "")]
    assert unexplained.empty, f"quarantined rows without a rule or reason:\n{unexplained}"


def check_ingest(prepared: Path, name: str, content: bytes, validation: ValidationConfig, start: date | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "w.duckdb"
        shutil.copyfile(prepared, db)
        quotes = Path(tmp) / name
        quotes.write_bytes(content)
        before = fingerprints(db)
        try:
            report = ingest(pipeline(quotes, db, validation), start=start, on_progress=_quiet)
        except (SourceError, StructuralError, IngestAborted) as exc:
            event(f"refused: {type(exc).__name__}")  # --hypothesis-show-statistics: how examples ended
            note(f"refused: {type(exc).__name__}: {exc}")
            assert fingerprints(db) == before, f"a failed ingest changed the warehouse ({type(exc).__name__}: {exc})"
            return
        event("loaded" + (", some rows quarantined" if report.rows_rejected else ""))
        note(f"loaded: {report.summary()}")
        assert_warehouse_valid(db)


validations = st.builds(
    ValidationConfig,
    row_anomalies=st.sampled_from(["quarantine", "abort"]),
    max_rejected_fraction=st.sampled_from([0.5, 0.01, 1.0]),
)
# An explicit start re-reads every day, so that a corrupted early row is validated; None is the incremental run.
starts = st.sampled_from([DAYS[0], None])


# -- values ----------------------------------------------------------------------------------------------

ODD_NUMBERS = (
    *("1e308", "1e309", "-1e309", "-1", "-0.0", "0", "1e-320", "99999999999999999999999"),
    *("inf", "-inf", "Infinity", "nan", "NaN", "NA", "null", "None", "N/A", "-"),
    *("1,5", "1 000", "1_000", "0x1A", "+3", " 12 ", "12.5.1", "１２", "٣٫٥", "true", "$10", "10 USD"),
)
numbers = st.one_of(
    st.sampled_from(ODD_NUMBERS),
    st.floats().map(repr),  # nan, inf, subnormals, 1e+300 and their negatives
    st.integers(-(10**30), 10**30).map(str),
)
codes = st.one_of(st.sampled_from(["aaa", "AAAAAA", "A1", "ÄBC", " AAA", "AA A", "ZZZ"]), st.text(max_size=6))
# Each is a valid day written another way, or a time of day that is not a daily bar.
DATE_FORMATS = (
    *("%d/%m/%Y", "%m/%d/%Y", "%Y%m%d", "%d %b %Y", "%b %d, %Y", "%Y/%m/%d", "%d.%m.%Y", "%Y-%m"),
    *("%Y-%m-%dT00:00:00", "%Y-%m-%d 09:30", "%Y-%m-%dT16:00:00.000", "%H:%M:%S", "%Y-%m-%d %I:%M %p"),
)
TIMES_OF_DAY = (time(0), time(16), time(9, 30), time(23, 59), time(12))


@st.composite
def day_text(draw: DrawFn, day: date) -> str:
    """``day`` in an odd format, as a zoned timestamp, or any datetime at all."""
    kind = draw(st.sampled_from(["format", "zoned", "epoch", "any"]))
    if kind == "format":
        return day.strftime(draw(st.sampled_from(DATE_FORMATS)))
    if kind == "zoned":  # a New York time of day on ``day``, written in some zone
        local = datetime.combine(day, draw(st.sampled_from(TIMES_OF_DAY)), tzinfo=NY)
        return local.astimezone(draw(st.sampled_from(ZONES))).isoformat()
    if kind == "epoch":
        return str(int(datetime.combine(day, time(0), tzinfo=UTC).timestamp()))
    return draw(st.datetimes(timezones=st.none() | st.sampled_from(ZONES))).isoformat()


Corruption = TypeVar("Corruption", bound=Callable[..., object])


def draw_corruptions(draw: DrawFn, values: tuple[Corruption, ...], shapes: tuple[Corruption, ...]) -> list[Corruption]:
    """Up to three corruptions of values and at most one of shape, in any order. Most shape corruptions make a
    file unreadable, so at most one keeps the examples that load, and test the stored rows, frequent."""
    chosen = draw(st.lists(st.sampled_from(values), max_size=3)) + draw(st.lists(st.sampled_from(shapes), max_size=1))
    chosen = draw(st.permutations(chosen))
    note("corruptions: " + (", ".join(c.__name__ for c in chosen) or "none"))
    return chosen


def value_for(draw: DrawFn, column: str, day: date) -> str:
    """A corrupt value of the kind ``column`` holds, or any text at all."""
    kind = {"date": day_text(day), "ticker": codes}.get(column, numbers)
    return draw(st.one_of(kind, st.just(""), st.text(max_size=12)))


def _day_of(row: list[str]) -> date:
    try:
        return date.fromisoformat(row[1])
    except (IndexError, ValueError):  # an earlier corruption already changed or removed the date
        return DAYS[0]


# -- CSV corruptions: each takes and returns (header, rows) as text ----------------------------------------

Table = tuple[list[str], list[list[str]]]


def set_cell(draw: DrawFn, header: list[str], rows: list[list[str]]) -> Table:
    if rows:
        i = draw(st.integers(0, len(rows) - 1))
        if rows[i]:
            j = draw(st.integers(0, len(rows[i]) - 1))
            column = header[j] if j < len(header) else ""
            rows[i][j] = value_for(draw, column, _day_of(rows[i]))
    return header, rows


TEXT_STYLES: dict[str, Callable[[str], str]] = {
    "currency": lambda v: f"${v}",
    "unit": lambda v: f"{v} USD",
    "quoted": lambda v: f"'{v}'",
    "decimal comma": lambda v: v.replace(".", ","),
    "percent": lambda v: f"{v}%",
    "words": lambda v: "about " + v,
}


def column_as_text(draw: DrawFn, header: list[str], rows: list[list[str]]) -> Table:
    """A numeric column written as text: units, currency, a decimal comma."""
    present = [j for j, name in enumerate(header) if name in NUMERIC]
    if present:
        j = draw(st.sampled_from(present))
        style = TEXT_STYLES[draw(st.sampled_from(sorted(TEXT_STYLES)))]
        for row in rows:
            if j < len(row):
                row[j] = style(row[j])
    return header, rows


def reformat_dates(draw: DrawFn, header: list[str], rows: list[list[str]]) -> Table:
    """Every date in one other form: an odd format, a zoned timestamp, a time of day."""
    if "date" in header:
        j = header.index("date")
        style = draw(st.sampled_from(["format", "zoned"]))
        fmt = draw(st.sampled_from(DATE_FORMATS))
        at, zone = draw(st.sampled_from(TIMES_OF_DAY)), draw(st.sampled_from(ZONES))
        for row in rows:
            if j < len(row):
                day = _day_of(row)
                local = datetime.combine(day, at, tzinfo=NY).astimezone(zone).isoformat()
                row[j] = day.strftime(fmt) if style == "format" else local
    return header, rows


def delete_row(draw: DrawFn, header: list[str], rows: list[list[str]]) -> Table:
    if rows:
        del rows[draw(st.integers(0, len(rows) - 1))]
    return header, rows


def duplicate_row(draw: DrawFn, header: list[str], rows: list[list[str]]) -> Table:
    if rows:
        row = list(rows[draw(st.integers(0, len(rows) - 1))])
        rows.insert(draw(st.integers(0, len(rows))), row)
    return header, rows


def shuffle_rows(draw: DrawFn, header: list[str], rows: list[list[str]]) -> Table:
    return header, draw(st.permutations(rows))


def delete_all_rows(draw: DrawFn, header: list[str], rows: list[list[str]]) -> Table:
    return header, []


def missing_field(draw: DrawFn, header: list[str], rows: list[list[str]]) -> Table:
    if rows:
        row = rows[draw(st.integers(0, len(rows) - 1))]
        if row:
            del row[draw(st.integers(0, len(row) - 1))]
    return header, rows


def extra_field(draw: DrawFn, header: list[str], rows: list[list[str]]) -> Table:
    if rows:
        row = rows[draw(st.integers(0, len(rows) - 1))]
        row.insert(draw(st.integers(0, len(row))), value_for(draw, "", DAYS[0]))
    return header, rows


def odd_line(draw: DrawFn, header: list[str], rows: list[list[str]]) -> Table:
    """A blank line, a line of empty fields, or a line of prose."""
    line = draw(st.sampled_from([[], [""] * len(header), ["the end"]]) | st.lists(st.text(max_size=8), max_size=3))
    rows.insert(draw(st.integers(0, len(rows))), line)
    return header, rows


HEADER_VARIANTS: dict[str, Callable[[str], str]] = {
    "upper": str.upper,
    "title": str.title,
    "padded": lambda name: f" {name} ",
    "prefixed": lambda name: f"_{name}",
    "accented": lambda name: name.replace("e", "é").replace("o", "ö"),
}


def rename_header(draw: DrawFn, header: list[str], rows: list[list[str]]) -> Table:
    """A column renamed: case changed, padded, accented, or any text."""
    if header:
        j = draw(st.integers(0, len(header) - 1))
        variant = draw(st.sampled_from(sorted(HEADER_VARIANTS)) | st.just("any"))
        header[j] = draw(st.text(max_size=8)) if variant == "any" else HEADER_VARIANTS[variant](header[j])
    return header, rows


def drop_header_name(draw: DrawFn, header: list[str], rows: list[list[str]]) -> Table:
    """The header loses a name; the rows keep all their values."""
    if header:
        del header[draw(st.integers(0, len(header) - 1))]
    return header, rows


def drop_column(draw: DrawFn, header: list[str], rows: list[list[str]]) -> Table:
    if header:
        j = draw(st.integers(0, len(header) - 1))
        del header[j]
        for row in rows:
            if j < len(row):
                del row[j]
    return header, rows


def duplicate_header(draw: DrawFn, header: list[str], rows: list[list[str]]) -> Table:
    """Two columns of the same name: one column's values under another's name, or a copy of it."""
    if header:
        i, j = draw(st.integers(0, len(header) - 1)), draw(st.integers(0, len(header) - 1))
        if draw(st.booleans()):
            header[i] = header[j]
        else:
            header.insert(i, header[j])
            for row in rows:
                if j < len(row):
                    row.insert(i, row[j])
    return header, rows


def extra_column(draw: DrawFn, header: list[str], rows: list[list[str]]) -> Table:
    """An extra column, named as the ignored one or anything else, holding anything."""
    j = draw(st.integers(0, len(header)))
    header.insert(j, draw(st.sampled_from([IGNORED, "adj_close", "Close"]) | st.text(max_size=6)))
    values = draw(st.sampled_from(["numbers", "empty", "text"]))
    for row in rows:
        row.insert(j, {"numbers": "1.5", "empty": "", "text": "x,y"}[values])
    return header, rows


def swap_columns(draw: DrawFn, header: list[str], rows: list[list[str]]) -> Table:
    """Two columns swapped, with their names (a valid file) or without them (values under the wrong name)."""
    if header:
        i, j = draw(st.integers(0, len(header) - 1)), draw(st.integers(0, len(header) - 1))
        header[i], header[j] = header[j], header[i]
        if draw(st.booleans()):
            for row in rows:
                if max(i, j) < len(row):
                    row[i], row[j] = row[j], row[i]
    return header, rows


CsvCorruption = Callable[[DrawFn, list[str], list[list[str]]], Table]
# Corruptions of values and row order leave a file that can still load; the others mostly make it unreadable.
CSV_VALUE_CORRUPTIONS: tuple[CsvCorruption, ...] = (
    set_cell,
    column_as_text,
    reformat_dates,
    delete_row,
    duplicate_row,
    shuffle_rows,
    swap_columns,
)
CSV_SHAPE_CORRUPTIONS: tuple[CsvCorruption, ...] = (
    delete_all_rows,
    missing_field,
    extra_field,
    odd_line,
    rename_header,
    drop_header_name,
    drop_column,
    duplicate_header,
    extra_column,
)
ENCODINGS = ("utf-8", "utf-8", "utf-8", "utf-8-sig", "latin-1", "cp1252", "utf-16", "utf-16-le")
INVALID_UTF8 = (b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x00", b"\x1a")


def corrupt_bytes(draw: DrawFn, content: bytes) -> bytes:
    """Invalid bytes at a random place, and or the file cut at a random byte."""
    how = draw(st.sampled_from(["intact"] * 6 + ["invalid bytes", "truncated", "both"]))
    if how in ("invalid bytes", "both"):
        at = draw(st.integers(0, len(content)))
        garbage = draw(st.sampled_from(INVALID_UTF8) | st.binary(min_size=1, max_size=8))
        note(f"inserted {garbage!r} at byte {at}")
        content = content[:at] + garbage + content[at:]
    if how in ("truncated", "both"):
        at = draw(st.integers(0, len(content)))
        note(f"cut at byte {at} of {len(content)}")
        content = content[:at]
    return content


@st.composite
def corrupted_csv(draw: DrawFn) -> tuple[str, bytes]:
    """(file name, content) of a valid quote CSV after corruptions of its text, encoding and bytes."""
    header, rows = list(MAPPING), [list(row) for row in ROWS]
    for corruption in draw_corruptions(draw, CSV_VALUE_CORRUPTIONS, CSV_SHAPE_CORRUPTIONS):
        header, rows = corruption(draw, header, rows)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(header)
    writer.writerows(rows)
    encoding = draw(st.sampled_from(ENCODINGS))
    note(f"encoding: {encoding}")
    content = text.getvalue().encode(encoding, errors="replace")
    name = draw(st.sampled_from(["quotes.csv", "quotes.csv", "quotes.csv.gz"]))
    if name.endswith(".gz"):
        content = gzip.compress(content, mtime=0)
    return name, corrupt_bytes(draw, content)


@FUZZ
@given(quotes=corrupted_csv(), validation=validations, start=starts)
def test_a_corrupted_csv_loads_only_valid_rows_or_fails_writing_nothing(
    prepared: Path, quotes: tuple[str, bytes], validation: ValidationConfig, start: date | None
) -> None:
    check_ingest(prepared, *quotes, validation, start)


# -- Parquet corruptions: each takes and returns (names, columns), names may repeat -------------------------

Frame = tuple[list[str], list[pd.Series]]


def base_frame() -> Frame:
    """The valid rows as a typed frame: what a Parquet writer would store."""
    frame = pd.DataFrame(ROWS, columns=list(MAPPING))
    frame["date"] = pd.to_datetime(frame["date"]).dt.date
    for column in NUMERIC:
        frame[column] = pd.to_numeric(frame[column]).astype("float64")
    frame["volume"] = frame["volume"].astype("int64")
    return list(frame.columns), [frame[c] for c in frame.columns]


def _numeric(column: pd.Series) -> pd.Series:
    return pd.to_numeric(column, errors="coerce").astype("float64")


def _integral(column: pd.Series) -> pd.Series:
    """Whole numbers an integer column can take: inf and nan are missing, huge values capped."""
    numbers = _numeric(column)
    return numbers.where(np.isfinite(numbers)).clip(-1e15, 1e15).round()


def _float32(column: pd.Series) -> pd.Series:
    with np.errstate(over="ignore"):  # 1e308 becomes inf, as in any float32 file
        return _numeric(column).astype("float32")


def set_number(draw: DrawFn, names: list[str], columns: list[pd.Series]) -> Frame:
    """A number made nan, inf, negative, zero, huge or tiny."""
    if columns:
        j = draw(st.integers(0, len(columns) - 1))
        column = _numeric(columns[j])
        if len(column):
            i = draw(st.integers(0, len(column) - 1))
            column.iloc[i] = draw(st.sampled_from([np.nan, np.inf, -np.inf, -1.0, 0.0, 1e308, 5e-324]) | st.floats())
        columns[j] = column
    return names, columns


def set_text(draw: DrawFn, names: list[str], columns: list[pd.Series]) -> Frame:
    """A value made text, which makes its whole column text."""
    if columns:
        j = draw(st.integers(0, len(columns) - 1))
        column = columns[j].astype(str)
        if len(column):
            column.iloc[draw(st.integers(0, len(column) - 1))] = value_for(draw, names[j], DAYS[0])
        columns[j] = column
    return names, columns


RETYPES: dict[str, Callable[[pd.Series], pd.Series]] = {
    "text": lambda c: c.astype(str),
    "float32": _float32,
    "nullable int": lambda c: _integral(c).astype("Int64"),
    "int8": lambda c: ((_integral(c).fillna(0) + 128) % 256 - 128).astype("int8"),  # wrapped around, as a cast would
    "bool": lambda c: _numeric(c) > 15,
    "category": lambda c: c.astype("category"),
    "bytes": lambda c: c.astype(str).str.encode("utf-8"),
    "all missing": lambda c: pd.Series([None] * len(c), dtype=object),
    "duration": lambda c: pd.to_timedelta(_numeric(c).fillna(0), unit="s"),
}


def retype(draw: DrawFn, names: list[str], columns: list[pd.Series]) -> Frame:
    if columns:
        j = draw(st.integers(0, len(columns) - 1))
        kind = draw(st.sampled_from(sorted(RETYPES)))
        note(f"column {names[j]!r} as {kind}")
        columns[j] = RETYPES[kind](columns[j])
    return names, columns


def retype_dates(draw: DrawFn, names: list[str], columns: list[pd.Series]) -> Frame:
    """The date column as text in another form, timestamps of another unit, a time of day, tz-aware, epoch
    seconds, or with one day anywhere in years 1 to 9999."""
    if "date" in names:
        j = names.index("date")
        # The day as written, whatever form an earlier corruption left it in; none (NaT) if it is gone, or is a far
        # day that nanoseconds cannot hold.
        days = pd.to_datetime(columns[j].astype(str).str[:10], format="%Y-%m-%d", errors="coerce")
        days = days.where(days.between(pd.Timestamp("1700-01-01"), pd.Timestamp("2200-01-01")))
        kinds = ["text", "timestamp[ns]", "timestamp[s]", "time of day", "tz-aware", "epoch", "far day"]
        kind = draw(st.sampled_from(kinds))
        at, zone = draw(st.sampled_from(TIMES_OF_DAY)), draw(st.sampled_from(ZONES))
        note(f"dates as {kind} ({at}, {zone})")
        if kind == "text":
            columns[j] = days.dt.strftime(draw(st.sampled_from(DATE_FORMATS)))
        elif kind.startswith("timestamp"):
            columns[j] = days.astype(kind.replace("timestamp", "datetime64"))
        elif kind == "time of day":
            columns[j] = days + pd.Timedelta(hours=at.hour, minutes=at.minute)
        elif kind == "tz-aware":  # a New York time of day, stored in some zone
            local = (days + pd.Timedelta(hours=at.hour, minutes=at.minute)).dt.tz_localize(NY, ambiguous="NaT")
            columns[j] = local.dt.tz_convert(zone)
        elif kind == "epoch":
            columns[j] = ((days - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)).astype("Int64")
        else:  # microseconds, which hold any year a datetime can have
            columns[j] = days.astype("datetime64[us]")
            if len(days):
                columns[j].iloc[draw(st.integers(0, len(days) - 1))] = draw(st.datetimes())
    return names, columns


def rename_column(draw: DrawFn, names: list[str], columns: list[pd.Series]) -> Frame:
    if names:
        j = draw(st.integers(0, len(names) - 1))
        variant = draw(st.sampled_from(sorted(HEADER_VARIANTS)) | st.just("any"))
        names[j] = draw(st.text(max_size=8)) if variant == "any" else HEADER_VARIANTS[variant](names[j])
    return names, columns


def drop_parquet_column(draw: DrawFn, names: list[str], columns: list[pd.Series]) -> Frame:
    if names:
        j = draw(st.integers(0, len(names) - 1))
        del names[j], columns[j]
    return names, columns


def duplicate_column(draw: DrawFn, names: list[str], columns: list[pd.Series]) -> Frame:
    """A second column of the same name: a copy, or another column's values."""
    if names:
        i, j = draw(st.integers(0, len(names) - 1)), draw(st.integers(0, len(names) - 1))
        names.insert(i, names[j])
        columns.insert(i, columns[draw(st.integers(0, len(columns) - 1))])
    return names, columns


def extra_parquet_column(draw: DrawFn, names: list[str], columns: list[pd.Series]) -> Frame:
    rows = len(columns[0]) if columns else 0
    names.append(draw(st.sampled_from([IGNORED, "adj_close", "Close"]) | st.text(max_size=6)))
    columns.append(pd.Series(np.linspace(1, 2, rows)))
    return names, columns


def select_rows(draw: DrawFn, names: list[str], columns: list[pd.Series]) -> Frame:
    """Rows deleted, duplicated, shuffled or all removed, the same in every column."""
    rows = len(columns[0]) if columns else 0
    positions = list(range(rows))
    how = draw(st.sampled_from(["delete", "duplicate", "shuffle", "none"]))
    if how == "shuffle":
        positions = draw(st.permutations(positions))
    elif how == "none":
        positions = []
    elif rows:
        i = draw(st.integers(0, rows - 1))
        positions = positions[:i] + positions[i + 1 :] if how == "delete" else [*positions, i]
    note(f"rows: {how}")
    return names, [c.iloc[positions].reset_index(drop=True) for c in columns]


ParquetCorruption = Callable[[DrawFn, list[str], list[pd.Series]], Frame]
PARQUET_VALUE_CORRUPTIONS: tuple[ParquetCorruption, ...] = (
    set_number,
    set_text,
    retype,
    retype_dates,
    select_rows,
    extra_parquet_column,
)
PARQUET_SHAPE_CORRUPTIONS: tuple[ParquetCorruption, ...] = (rename_column, drop_parquet_column, duplicate_column)


def parquet_bytes(names: list[str], columns: list[pd.Series]) -> bytes:
    # Built from arrays, since a pandas frame refuses duplicate names on its way to Arrow.
    table = pa.Table.from_arrays([pa.array(c, from_pandas=True) for c in columns], names=names)
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def corrupt_parquet_bytes(draw: DrawFn, content: bytes) -> bytes:
    """Truncated, overwritten in place, extended, or replaced by garbage."""
    how = draw(st.sampled_from(["intact"] * 6 + ["truncated", "overwritten", "appended", "garbage"]))
    note(f"parquet bytes: {how}")
    at = draw(st.integers(0, len(content)))
    garbage = draw(st.binary(min_size=1, max_size=64))
    if how == "truncated":
        return content[:at]
    if how == "overwritten":
        return content[:at] + garbage + content[at + len(garbage) :]
    if how == "appended":
        return content + garbage
    if how == "garbage":
        return garbage
    return content


@st.composite
def corrupted_parquet(draw: DrawFn) -> tuple[str, bytes]:
    """(file name, content) of a valid quote Parquet file after corruptions of its frame and its bytes."""
    names, columns = base_frame()
    for corruption in draw_corruptions(draw, PARQUET_VALUE_CORRUPTIONS, PARQUET_SHAPE_CORRUPTIONS):
        names, columns = corruption(draw, names, columns)
    return "quotes.parquet", corrupt_parquet_bytes(draw, parquet_bytes(names, columns))


@FUZZ
@given(quotes=corrupted_parquet(), validation=validations, start=starts)
def test_a_corrupted_parquet_file_loads_only_valid_rows_or_fails_writing_nothing(
    prepared: Path, quotes: tuple[str, bytes], validation: ValidationConfig, start: date | None
) -> None:
    check_ingest(prepared, *quotes, validation, start)
