from __future__ import annotations

import re
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from atft.calendar import TradingCalendar
from atft.config import FilesSourceConfig
from atft.sources.base import SourceError
from atft.sources.files import FilesSource
from schemas.columns import CANONICAL_QUOTE_COLUMNS
from schemas.raw_quotes import StructuralError, raw_quotes_schema, validate_quotes

MAPPING = {
    "ticker": "Code",
    "date": "Date",
    "open": "Open",
    "high": "High",
    "low": "Low",
    "close": "Close",
    "volume": "Volume",
}
HEADER = "ticker,date,open,high,low,close,volume"
ROWS = [
    "AAA,2018-01-02,10,11,9,10.5,100",
    "AAA,2018-01-03,10.5,12,10,11,200",
    "BBB,2018-01-02,20,21,19,20.5,300",
    "BBB,2018-01-03,20.5,22,20,21,400",
]


def make_source(path, **settings) -> FilesSource:
    settings.setdefault("columns", MAPPING)
    calendar = TradingCalendar(settings.pop("calendar", "XNYS"))
    return FilesSource(FilesSourceConfig(kind="files", path=path, **settings), calendar)


def read(source: FilesSource, start=None, end=None) -> list:
    return list(source.quote_chunks(start, end))


def write_csv(path, rows=ROWS, header=HEADER):
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def frame_of(rows=ROWS, header=HEADER) -> pd.DataFrame:
    """The rows as a typed frame (what a Parquet writer would store)."""
    records = [dict(zip(header.split(","), r.split(","), strict=True)) for r in rows]
    frame = pd.DataFrame.from_records(records)
    for column in ("open", "high", "low", "close"):
        frame[column] = frame[column].astype(float)
    frame["volume"] = frame["volume"].astype("int64")
    return frame


def write_parquet(path, frame=None):
    pq.write_table(pa.Table.from_pandas(frame_of() if frame is None else frame, preserve_index=False), path)
    return path


@pytest.fixture(scope="module")
def xnys_schema():
    xnys = TradingCalendar("XNYS")
    return raw_quotes_schema(xnys.sessions(xnys.first_session, xnys.last_session), "XNYS", r"^[A-Z]{1,5}$")


# -- reading ---------------------------------------------------------------------------------------------


def test_one_csv_file(tmp_path):
    path = write_csv(tmp_path / "quotes.csv")
    chunks = read(make_source(path))
    assert len(chunks) == 1
    chunk = chunks[0]
    assert chunk.origin == str(path)
    assert chunk.oracle is None
    frame = chunk.frame
    assert list(frame.columns) == list(CANONICAL_QUOTE_COLUMNS)
    assert list(frame.index) == [1, 2, 3, 4]  # 1-based data rows: the header is not counted
    assert frame["Code"].tolist() == ["AAA", "AAA", "BBB", "BBB"]
    assert frame["Date"].dtype == "datetime64[ns]"
    assert frame["Date"].tolist() == [pd.Timestamp(d) for d in ("2018-01-02", "2018-01-03") * 2]
    # CSV values are read as text, exactly as written; validation coerces them.
    assert frame["Open"].tolist() == ["10", "10.5", "20", "20.5"]
    assert frame["Volume"].tolist() == ["100", "200", "300", "400"]
    # Unmapped optional columns are missing unless filled.
    assert frame["TurnoverValue"].isna().all()
    assert frame["AdjustmentFactor"].isna().all()


def test_one_parquet_file(tmp_path):
    path = write_parquet(tmp_path / "quotes.parquet")
    (chunk,) = read(make_source(path))
    assert chunk.origin == str(path)
    assert list(chunk.frame.columns) == list(CANONICAL_QUOTE_COLUMNS)
    assert list(chunk.frame.index) == [1, 2, 3, 4]
    assert chunk.frame["Close"].tolist() == [10.5, 11.0, 20.5, 21.0]
    assert chunk.frame["Volume"].tolist() == [100, 200, 300, 400]
    assert chunk.frame["Date"].iloc[2] == pd.Timestamp("2018-01-02")


def test_parquet_batches_keep_counting_rows_across_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr("atft.sources.files._BATCH_ROWS", 3)
    rows = [f"S{i:02d},2018-01-02,10,11,9,10.5,{i}" for i in range(7)]
    path = write_parquet(tmp_path / "quotes.parquet", frame_of(rows))
    chunks = read(make_source(path))
    assert [list(c.frame.index) for c in chunks] == [[1, 2, 3], [4, 5, 6], [7]]
    assert chunks[2].frame["Code"].tolist() == ["S06"]


def test_parquet_with_a_native_date_column(tmp_path):
    frame = frame_of()
    frame["date"] = pd.to_datetime(frame["date"]).dt.date
    path = write_parquet(tmp_path / "quotes.parquet", frame)
    assert pq.read_schema(path).field("date").type == pa.date32()
    (chunk,) = read(make_source(path))
    assert chunk.frame["Date"].dtype == "datetime64[ns]"
    assert chunk.frame["Date"].iloc[1] == pd.Timestamp("2018-01-03")


def test_directory_of_per_stock_csv_files_with_code_from_filename(tmp_path):
    columns = {k: v for k, v in MAPPING.items() if k != "ticker"}
    header = "date,open,high,low,close,volume"
    write_csv(tmp_path / "BBB_data.csv", [r.split(",", 1)[1] for r in ROWS[2:]], header)
    write_csv(tmp_path / "AAA_data.csv", [r.split(",", 1)[1] for r in ROWS[:2]], header)
    (tmp_path / "README.txt").write_text("not a data file")
    source = make_source(tmp_path, columns=columns, code_from_filename=r"^(?P<code>[A-Z]+)_data\.csv$")
    assert [p.name for p in source.files()] == ["AAA_data.csv", "BBB_data.csv"]
    chunks = read(source)
    assert [c.origin for c in chunks] == [str(tmp_path / "AAA_data.csv"), str(tmp_path / "BBB_data.csv")]
    # Each file counts its own rows.
    assert [list(c.frame.index) for c in chunks] == [[1, 2], [1, 2]]
    assert [c.frame["Code"].tolist() for c in chunks] == [["AAA", "AAA"], ["BBB", "BBB"]]
    assert chunks[1].frame["Close"].tolist() == ["20.5", "21"]


def test_directory_of_parquet_files_with_format_set_skips_other_files(tmp_path):
    write_parquet(tmp_path / "part-1.parquet", frame_of(ROWS[:2]))
    write_parquet(tmp_path / "part-2.pq", frame_of(ROWS[2:]))
    write_csv(tmp_path / "stray.csv", ["garbage"], "x")
    source = make_source(tmp_path, format="parquet")
    assert [p.name for p in source.files()] == ["part-1.parquet", "part-2.pq"]
    chunks = read(source)
    assert pd.concat([c.frame for c in chunks])["Code"].tolist() == ["AAA", "AAA", "BBB", "BBB"]


def test_file_name_not_matching_code_from_filename(tmp_path):
    columns = {k: v for k, v in MAPPING.items() if k != "ticker"}
    path = write_csv(tmp_path / "aaa.csv", [r.split(",", 1)[1] for r in ROWS[:2]], "date,open,high,low,close,volume")
    source = make_source(path, columns=columns, code_from_filename=r"^(?P<code>[A-Z]+)_data\.csv$")
    with pytest.raises(SourceError, match=re.escape(f"{path}: file name does not match code_from_filename")):
        read(source)


def test_ignore_columns_are_not_loaded(tmp_path):
    path = write_csv(tmp_path / "quotes.csv", [r + ",10.4" for r in ROWS], HEADER + ",adj_close")
    (chunk,) = read(make_source(path, ignore_columns=["adj_close", "not_in_this_file"]))
    assert list(chunk.frame.columns) == list(CANONICAL_QUOTE_COLUMNS)
    assert "10.4" not in chunk.frame.to_numpy().ravel().tolist()
    assert chunk.frame["Close"].tolist() == ["10.5", "11", "20.5", "21"]


def test_fill_sets_unmapped_optional_columns(tmp_path):
    path = write_csv(tmp_path / "quotes.csv")
    (chunk,) = read(make_source(path, fill={"AdjustmentFactor": 1.0, "TurnoverValue": 0.0}))
    assert chunk.frame["AdjustmentFactor"].tolist() == [1.0] * 4
    assert chunk.frame["TurnoverValue"].tolist() == [0.0] * 4


def test_a_mapped_optional_column_is_read_from_the_file(tmp_path):
    path = write_csv(tmp_path / "quotes.csv", [r + ",0.5" for r in ROWS], HEADER + ",factor")
    (chunk,) = read(make_source(path, columns={**MAPPING, "factor": "AdjustmentFactor"}))
    assert chunk.frame["AdjustmentFactor"].tolist() == ["0.5"] * 4


def test_start_and_end_are_inclusive_and_keep_row_numbers(tmp_path):
    rows = [f"AAA,2018-01-{d:02d},10,11,9,10.5,100" for d in (2, 3, 4, 5, 8)]
    path = write_csv(tmp_path / "quotes.csv", rows)
    source = make_source(path)
    (chunk,) = read(source, date(2018, 1, 3), date(2018, 1, 5))
    assert list(chunk.frame.index) == [2, 3, 4]
    assert chunk.frame["Date"].dt.day.tolist() == [3, 4, 5]
    (chunk,) = read(source, date(2018, 1, 4), None)
    assert list(chunk.frame.index) == [3, 4, 5]
    (chunk,) = read(source, None, date(2018, 1, 2))
    assert list(chunk.frame.index) == [1]
    # A window that holds nothing yields nothing; the file itself is not empty, so it is no error.
    assert read(source, date(2019, 1, 1), None) == []


def test_missing_csv_fields_are_missing_values_reported_by_validation(tmp_path, xnys_schema):
    rows = ["AAA,2018-01-02,,11,9,10.5,100", ",2018-01-03,10,11,9,10.5,100", "AAA,,10,11,9,10.5,100", ROWS[3]]
    path = write_csv(tmp_path / "quotes.csv", rows)
    (chunk,) = read(make_source(path, fill={"AdjustmentFactor": 1.0}), date(2018, 1, 3), None)
    # A missing Date is kept by the window, so that validation reports it.
    assert list(chunk.frame.index) == [2, 3, 4]
    (chunk,) = read(make_source(path, fill={"AdjustmentFactor": 1.0}))
    assert pd.isna(chunk.frame.loc[1, "Open"])
    checked = validate_quotes(chunk.frame, chunk.origin, xnys_schema)
    assert list(checked.valid.index) == [4]
    assert checked.rejected[["source_row", "reason"]].values.tolist() == [
        [1, "Open is missing"],
        [2, "Code is missing"],
        [3, "Date is missing"],
    ]


def test_csv_values_are_text_so_a_bad_value_is_caught_by_validation_with_its_row(tmp_path, xnys_schema):
    rows = [*ROWS[:2], "BBB,2018-01-02,20,21,19,20.5,abc", ROWS[3]]
    path = write_csv(tmp_path / "quotes.csv", rows)
    (chunk,) = read(make_source(path, fill={"AdjustmentFactor": 1.0}))
    assert chunk.frame.loc[3, "Volume"] == "abc"
    with pytest.raises(StructuralError) as info:
        validate_quotes(chunk.frame, chunk.origin, xnys_schema)
    assert str(info.value) == f"{path}: column 'Volume': expected 'float64', cannot convert 1 value(s): row 3: 'abc'"


def test_csv_text_validates_to_canonical_floats(tmp_path, xnys_schema):
    path = write_csv(tmp_path / "quotes.csv")
    (chunk,) = read(make_source(path, fill={"AdjustmentFactor": 1.0}))
    checked = validate_quotes(chunk.frame, chunk.origin, xnys_schema)
    assert checked.rejected.empty
    assert checked.valid["Close"].tolist() == [10.5, 11.0, 20.5, 21.0]
    assert checked.valid["Volume"].dtype == np.float64


# -- bad inputs ------------------------------------------------------------------------------------------


def test_missing_mapped_column_lists_found_and_expected(tmp_path):
    path = write_csv(tmp_path / "quotes.csv", [r.rsplit(",", 1)[0] for r in ROWS], HEADER.rsplit(",", 1)[0])
    with pytest.raises(SourceError) as info:
        read(make_source(path))
    assert str(info.value) == (
        f"{path}: columns do not match the mapping: missing ['volume']. "
        "Found ['ticker', 'date', 'open', 'high', 'low', 'close']; "
        "the mapping expects ['ticker', 'date', 'open', 'high', 'low', 'close', 'volume']. "
        "Map every column, or list it in source.ignore_columns."
    )


def test_missing_mapped_column_in_parquet(tmp_path):
    path = write_parquet(tmp_path / "quotes.parquet", frame_of().drop(columns="low"))
    with pytest.raises(SourceError, match=re.escape(f"{path}: columns do not match the mapping: missing ['low']")):
        read(make_source(path))


def test_lowercase_code_in_the_header_is_reported_as_case_only(tmp_path):
    columns = {"Code": "Code", **{k: v for k, v in MAPPING.items() if k != "ticker"}}
    path = write_csv(tmp_path / "quotes.csv", header="code" + HEADER.removeprefix("ticker"))
    with pytest.raises(SourceError) as info:
        read(make_source(path, columns=columns))
    message = str(info.value)
    assert "columns do not match the mapping: 'code' found where 'Code' was expected (names are case-sensitive)." in (
        message
    )
    assert "missing" not in message.split(". Found")[0]
    assert "Found ['code', 'date'" in message


def test_a_mapped_column_twice_in_a_csv_header_is_refused(tmp_path):
    # Found by tests/ingest/test_fuzz_quote_files.py: a name given twice passed the header check. The CSV reader then
    # loaded the first of the two columns without a word; from Parquet, both came through and the chunk failed with
    # a ValueError (two Close columns) that the ingest does not expect from a source.
    path = write_csv(tmp_path / "quotes.csv", [r + ",10.4" for r in ROWS], HEADER + ",close")
    with pytest.raises(SourceError) as info:
        read(make_source(path))
    assert str(info.value) == (
        f"{path}: mapped column(s) appear more than once: 'close' 2 times. "
        "Found ['ticker', 'date', 'open', 'high', 'low', 'close', 'volume', 'close']; "
        "each mapped column must appear once."
    )


def test_a_mapped_column_twice_in_a_parquet_file_is_refused(tmp_path):
    frame = frame_of()
    table = pa.Table.from_arrays([*pa.Table.from_pandas(frame).columns, pa.array(frame["ticker"])], [*frame, "ticker"])
    path = tmp_path / "quotes.parquet"
    pq.write_table(table, path)
    with pytest.raises(
        SourceError, match=re.escape(f"{path}: mapped column(s) appear more than once: 'ticker' 2 times")
    ):
        read(make_source(path))


def test_unmapped_extra_column(tmp_path):
    path = write_csv(tmp_path / "quotes.csv", [r + ",10.4" for r in ROWS], HEADER + ",adj_close")
    with pytest.raises(SourceError) as info:
        read(make_source(path, ignore_columns=["dividend"]))
    message = str(info.value)
    assert message.startswith(f"{path}: columns do not match the mapping: unexpected ['adj_close']. ")
    assert (
        "the mapping expects ['ticker', 'date', 'open', 'high', 'low', 'close', 'volume'] and ignores ['dividend']"
        in (message)
    )
    assert message.endswith("Map every column, or list it in source.ignore_columns.")


def test_mapping_that_leaves_a_required_column_unmapped(tmp_path):
    columns = {k: v for k, v in MAPPING.items() if v not in ("Volume", "Low")}
    with pytest.raises(SourceError) as info:
        make_source(tmp_path / "quotes.csv", columns=columns)
    assert str(info.value) == (
        f"files source {tmp_path / 'quotes.csv'}: no source column is mapped to ['Low', 'Volume']; "
        "the mapping must cover ['Code', 'Date', 'Open', 'High', 'Low', 'Close', 'Volume'] "
        "(Code may come from code_from_filename)"
    )


def test_code_from_a_column_and_from_the_filename_is_ambiguous(tmp_path):
    with pytest.raises(SourceError, match="Code is both mapped from a column and code_from_filename"):
        make_source(tmp_path, code_from_filename=r"(?P<code>\w+)\.csv")


def test_header_only_csv_has_no_data_rows(tmp_path):
    path = write_csv(tmp_path / "quotes.csv", rows=[])
    with pytest.raises(SourceError) as info:
        read(make_source(path))
    assert str(info.value) == f"{path}: file contains no data rows"


def test_empty_parquet_has_no_data_rows(tmp_path):
    path = write_parquet(tmp_path / "quotes.parquet", frame_of().iloc[:0])
    with pytest.raises(SourceError, match=re.escape(f"{path}: file contains no data rows")):
        read(make_source(path))


def test_one_empty_file_in_a_directory_fails_the_read(tmp_path):
    write_csv(tmp_path / "a.csv")
    write_csv(tmp_path / "b.csv", rows=[])
    chunks = make_source(tmp_path).quote_chunks(None, None)
    assert next(chunks).origin == str(tmp_path / "a.csv")
    with pytest.raises(SourceError, match=re.escape(f"{tmp_path / 'b.csv'}: file contains no data rows")):
        next(chunks)


@pytest.mark.parametrize(
    ("content", "detail"),
    [(b"", "Parquet file size is 0 bytes"), (b"PAR1 this is not parquet", "magic bytes not found")],
)
def test_unreadable_parquet(tmp_path, content, detail):
    path = tmp_path / "quotes.parquet"
    path.write_bytes(content)
    with pytest.raises(SourceError, match=re.escape(f"{path}: cannot read as parquet: ") + ".*" + detail):
        read(make_source(path))


def test_a_csv_named_as_parquet_is_not_read_as_csv(tmp_path):
    path = write_csv(tmp_path / "quotes.parquet")
    with pytest.raises(SourceError, match=re.escape(f"{path}: cannot read as parquet")):
        read(make_source(path))


def test_empty_csv(tmp_path):
    path = tmp_path / "quotes.csv"
    path.write_text("")
    with pytest.raises(SourceError, match=re.escape(f"{path}: cannot read as csv: Empty CSV file")):
        read(make_source(path))


def test_garbage_text_named_csv(tmp_path):
    path = tmp_path / "quotes.csv"
    path.write_text('just some prose\nwith, a comma, "and a stray quote\n')
    with pytest.raises(SourceError, match=re.escape(f"{path}: cannot read as csv: CSV parse error")):
        read(make_source(path))


def test_prose_with_a_parseable_header_fails_the_mapping(tmp_path):
    path = tmp_path / "quotes.csv"
    path.write_text("Dear reader\nthis is a letter\n")
    with pytest.raises(SourceError, match=re.escape("columns do not match the mapping: missing ['ticker'")):
        read(make_source(path))


def test_binary_garbage_named_csv(tmp_path):
    path = tmp_path / "quotes.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\x00\x01")
    with pytest.raises(SourceError, match=re.escape(f"{path}: cannot read as csv")):
        read(make_source(path))


def test_invalid_utf8_in_a_data_row(tmp_path):
    path = tmp_path / "quotes.csv"
    path.write_bytes((HEADER + "\n").encode() + b"A\xffA,2018-01-02,10,11,9,10.5,100\n")
    with pytest.raises(SourceError, match=re.escape(f"{path}: cannot read as csv")):
        read(make_source(path))


def test_non_existent_path(tmp_path):
    path = tmp_path / "nowhere" / "quotes.csv"
    with pytest.raises(SourceError) as info:
        read(make_source(path))
    assert str(info.value) == f"{path}: no such file or directory"


def test_empty_directory(tmp_path):
    with pytest.raises(SourceError) as info:
        read(make_source(tmp_path))
    assert str(info.value) == f"{tmp_path}: directory holds no parquet or csv files"
    with pytest.raises(SourceError, match=re.escape(f"{tmp_path}: directory holds no csv files")):
        read(make_source(tmp_path, format="csv"))


def test_unknown_suffix_with_auto_format(tmp_path):
    path = write_csv(tmp_path / "quotes.txt")
    with pytest.raises(SourceError, match=re.escape(f"{path}: cannot tell the format from the name")):
        read(make_source(path))
    # An explicit format reads it.
    (chunk,) = read(make_source(path, format="csv"))
    assert len(chunk.frame) == 4


def test_unparseable_date_names_row_and_value(tmp_path):
    rows = [ROWS[0], "AAA,2018-13-45,10,11,9,10.5,100", ROWS[2]]
    path = write_csv(tmp_path / "quotes.csv", rows)
    with pytest.raises(SourceError) as info:
        read(make_source(path))
    assert str(info.value) == (f"{path}: column 'date' (Date) has 1 value(s) that are not dates: row 2: '2018-13-45'")


SPAN = "outside 1677-09-23 .. 2262-04-09, the span a date can have here"


@pytest.mark.parametrize("stamp", ["1001", "0099-01-01", "3000-01-02", "3000-01-02T05:00:00Z"])
def test_a_date_a_nanosecond_timestamp_cannot_hold_is_refused_with_its_row(tmp_path, stamp):
    # Found by tests/ingest/test_fuzz_quote_files.py (volumes swapped into the date column): pandas reads 1001 as the
    # year 1001, and converting it to nanoseconds raised OutOfBoundsDatetime out of the source.
    # Alone in its column, since pandas infers the format from the first value: a volume beside real dates is not
    # a date at all.
    path = write_csv(tmp_path / "quotes.csv", [f"AAA,{stamp},10.5,12,10,11,200"])
    with pytest.raises(SourceError) as info:
        read(make_source(path))
    assert str(info.value) == f"{path}: column 'date' (Date) has 1 date(s) {SPAN}: row 1: {stamp!r}"


def parquet_with_dates(path, dates: pa.Array):
    # Without the pandas metadata, which would convert the new column back to the frame's text dates.
    table = pa.Table.from_pandas(frame_of(), preserve_index=False).replace_schema_metadata()
    pq.write_table(table.set_column(1, "date", dates), path)
    return path


@pytest.mark.parametrize("zone", [None, "UTC"])
@pytest.mark.parametrize("year", ["3000", "11103"])  # 11103: past what a Python datetime holds
def test_a_parquet_timestamp_a_nanosecond_timestamp_cannot_hold_is_refused(tmp_path, zone, year):
    # Found by tests/ingest/test_fuzz_quote_files.py, as for CSV; year 11103 came from damaged bytes, and a tz-aware
    # stamp that far out made even the error message raise (NotImplementedError).
    days = np.array(["2018-01-02", f"{year}-01-02", "2018-01-02", "2018-01-03"], dtype="datetime64[s]")
    path = parquet_with_dates(tmp_path / "quotes.parquet", pa.array(days.astype("int64")).cast(pa.timestamp("s", zone)))
    with pytest.raises(SourceError) as info:
        read(make_source(path))
    shown = f"'{year}-01-02 00:00:00" + (" UTC'" if zone else "'")
    assert str(info.value) == f"{path}: column 'date' (Date) has 1 date(s) {SPAN}: row 2: {shown}"


def test_a_parquet_date_past_the_year_9999_is_refused(tmp_path):
    # Found by tests/ingest/test_fuzz_quote_files.py (damaged bytes): Arrow's conversion to pandas raised a bare
    # ValueError out of the source.
    far = int((np.datetime64("49842-01-01") - np.datetime64("1970-01-01")).astype("int64"))
    days = pa.array([17533, far, 17533, 17534], pa.int32()).cast(pa.date32())
    path = parquet_with_dates(tmp_path / "quotes.parquet", days)
    with pytest.raises(SourceError, match=re.escape(f"{path}: cannot read as parquet: year 49842 is out of range")):
        read(make_source(path))


def test_source_has_no_listings_and_an_open_window(tmp_path):
    source = make_source(write_csv(tmp_path / "quotes.csv"))
    assert source.name == "files"
    assert source.default_window() == (None, None)
    assert source.listed_info(date(2018, 1, 2)) is None


# -- timestamps with a zone ------------------------------------------------------------------------------


def _dates_of(path, **settings) -> list[pd.Timestamp]:
    return [d for chunk in read(make_source(path, **settings)) for d in chunk.frame["Date"]]


def test_mixed_offsets_in_a_csv_column_load_as_new_york_days(tmp_path, xnys_schema):
    # Daylight saving time changes the offset: EST in March before the switch, EDT after it.
    rows = ["AAA,2018-03-09T00:00:00-05:00,10,11,9,10.5,100", "AAA,2018-03-12T00:00:00-04:00,10.5,12,10,11,200"]
    path = write_csv(tmp_path / "quotes.csv", rows)
    assert _dates_of(path) == [pd.Timestamp("2018-03-09"), pd.Timestamp("2018-03-12")]
    (chunk,) = read(make_source(path, fill={"AdjustmentFactor": 1.0}))
    assert validate_quotes(chunk.frame, chunk.origin, xnys_schema).rejected.empty


@pytest.mark.parametrize(
    ("stamp", "day"),
    [
        ("2018-01-03T05:00:00Z", "2018-01-03"),  # midnight in New York, written in UTC
        ("2018-01-03T16:00:00-05:00", "2018-01-03"),  # the session close
        ("2018-01-03T21:00:00+00:00", "2018-01-03"),  # the close again, written in UTC
        ("2018-07-03T13:00:00-04:00", "2018-07-03"),  # the early close before Independence Day
        ("2018-01-03 00:00:00-0500", "2018-01-03"),
    ],
)
def test_a_zoned_day_stamp_is_the_exchange_day_it_falls_on(tmp_path, xnys_schema, stamp, day):
    path = write_csv(tmp_path / "quotes.csv", [f"AAA,{stamp},10,11,9,10.5,100"])
    assert _dates_of(path) == [pd.Timestamp(day)]
    (chunk,) = read(make_source(path, fill={"AdjustmentFactor": 1.0}))
    assert validate_quotes(chunk.frame, chunk.origin, xnys_schema).rejected.empty


def test_tz_aware_parquet_timestamps_are_exchange_days(tmp_path, xnys_schema):
    frame = frame_of()
    frame["date"] = pd.to_datetime(frame["date"]).dt.tz_localize("America/New_York").dt.tz_convert("UTC")
    path = write_parquet(tmp_path / "quotes.parquet", frame)
    assert pq.read_schema(path).field("date").type.tz == "UTC"
    assert _dates_of(path) == [pd.Timestamp(d) for d in ("2018-01-02", "2018-01-03") * 2]
    (chunk,) = read(make_source(path, fill={"AdjustmentFactor": 1.0}))
    assert validate_quotes(chunk.frame, chunk.origin, xnys_schema).rejected.empty


def test_a_zoned_time_that_is_neither_midnight_nor_the_close_is_refused_with_its_row(tmp_path):
    rows = [ROWS[0], "AAA,2018-01-03T23:00:00-05:00,10.5,12,10,11,200"]
    path = write_csv(tmp_path / "quotes.csv", rows)
    with pytest.raises(SourceError) as info:
        read(make_source(path))
    assert str(info.value) == (
        f"{path}: column 'date' (Date) has 1 timestamp(s) whose time of day in America/New_York is neither "
        "midnight nor the XNYS session close, so they are not daily bars: "
        "row 2: '2018-01-03T23:00:00-05:00 (23:00 local)'"
    )


def test_tokyo_midnight_written_in_utc_is_the_tokyo_day(tmp_path):
    path = write_csv(tmp_path / "quotes.csv", ["AAA,2024-01-04T15:00:00Z,10,11,9,10.5,100"])
    assert _dates_of(path, calendar="XTKS") == [pd.Timestamp("2024-01-05")]


# -- one message format for CSV and Parquet --------------------------------------------------------------


def test_csv_and_parquet_quarantine_reasons_are_the_same_and_name_the_files_columns(tmp_path, xnys_schema):
    rows = [*ROWS[:3], "BBB,2018-01-03,20.5,22,20,72.5442,400"]
    reasons = []
    for path in (write_csv(tmp_path / "quotes.csv", rows), write_parquet(tmp_path / "quotes.parquet", frame_of(rows))):
        (chunk,) = read(make_source(path, fill={"AdjustmentFactor": 1.0}))
        checked = validate_quotes(chunk.frame, chunk.origin, xnys_schema, chunk.file_columns)
        reasons.append(checked.rejected["reason"].tolist())
    expected = "Close (file column 'close') 72.5442 outside [Low (file column 'low') 20, High (file column 'high') 22]"
    assert reasons == [[expected], [expected]]


def test_a_structural_error_names_the_files_column(tmp_path, xnys_schema):
    path = write_csv(tmp_path / "quotes.csv", [*ROWS[:2], "BBB,2018-01-02,20,21,19,20.5,abc"])
    (chunk,) = read(make_source(path, fill={"AdjustmentFactor": 1.0}))
    with pytest.raises(StructuralError, match=r"column 'Volume' \(file column 'volume'\): expected 'float64'"):
        validate_quotes(chunk.frame, chunk.origin, xnys_schema, chunk.file_columns)


@pytest.mark.parametrize("text", ["inf", "-inf", "Infinity"])
def test_an_infinite_volume_in_a_csv_is_quarantined(tmp_path, xnys_schema, text):
    path = write_csv(tmp_path / "quotes.csv", [*ROWS[:3], f"BBB,2018-01-03,20.5,22,20,21,{text}"])
    (chunk,) = read(make_source(path, fill={"AdjustmentFactor": 1.0}))
    checked = validate_quotes(chunk.frame, chunk.origin, xnys_schema, chunk.file_columns)
    assert checked.rejected[["source_row", "rule"]].values.tolist() == [[4, "non_negative"]]
    assert "Volume (file column 'volume')" in checked.rejected["reason"].iloc[0]
