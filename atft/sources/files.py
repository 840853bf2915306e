"""CSV or Parquet files, one file or a directory of per-stock files, mapped to canonical columns.

The mapping in the pipeline config is the only link between a file's columns and the canonical ones.
Names are matched exactly: a column that differs only in case is reported as such, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from atft.calendar import TradingCalendar
from atft.config import CANONICAL_QUOTE_COLUMNS, REQUIRED_QUOTE_COLUMNS, FilesSourceConfig
from atft.sources.base import QuoteChunk, SourceError
from schemas.naming import diff_columns

_BATCH_ROWS = 500_000
_SUFFIXES = {"parquet": (".parquet", ".pq"), "csv": (".csv", ".csv.gz")}
# An ISO time of day followed by a zone: ``T16:00:00-05:00``, ``T05:00:00Z``, `` 09:00+0900``.
_ZONED = r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:Z|[+-]\d{2}(?::?\d{2})?)$"
_SHOWN = 5
# Nanosecond timestamps reach 1677-09-21 .. 2262-04-11; a day's margin keeps a change of time zone inside them.
_FIRST_DAY, _LAST_DAY = pd.Timestamp("1677-09-23"), pd.Timestamp("2262-04-09")


class FilesSource:
    """Quotes read from files described by a ``FilesSourceConfig``."""

    name = "files"

    def __init__(self, config: FilesSourceConfig, calendar: TradingCalendar) -> None:
        self.config = config
        self.calendar = calendar
        # canonical -> the file's own name, so that messages can name the column a person sees in the file
        self.file_columns = {canonical: name for name, canonical in config.columns.items()}
        self._code_regex = re.compile(config.code_from_filename) if config.code_from_filename else None
        mapped = set(config.columns.values()) | ({"Code"} if self._code_regex else set())
        unmapped = [c for c in REQUIRED_QUOTE_COLUMNS if c not in mapped]
        if unmapped:
            raise SourceError(
                f"files source {config.path}: no source column is mapped to {unmapped}; "
                f"the mapping must cover {list(REQUIRED_QUOTE_COLUMNS)} (Code may come from code_from_filename)"
            )
        if self._code_regex and "Code" in config.columns.values():
            raise SourceError(f"files source {config.path}: Code is both mapped from a column and code_from_filename")

    def default_window(self) -> tuple[date | None, date | None]:
        return None, None

    def listed_info(self, as_of: date) -> pd.DataFrame | None:
        return None

    def files(self) -> list[Path]:
        path = self.config.path
        if path.is_file():
            return [path]
        if not path.exists():
            raise SourceError(f"{path}: no such file or directory")
        formats = [self.config.format] if self.config.format != "auto" else list(_SUFFIXES)
        suffixes = tuple(s for f in formats for s in _SUFFIXES[f])
        found = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(suffixes))
        if not found:
            raise SourceError(f"{path}: directory holds no {' or '.join(formats)} files")
        return found

    def quote_chunks(self, start: date | None, end: date | None) -> Iterator[QuoteChunk]:
        """Canonical chunks with start <= Date <= end (None: unbounded). Index: 1-based data row in its file."""
        for path in self.files():
            rows = 0
            for offset, batch in self._batches(path):
                rows += len(batch)
                frame = self._canonical(batch, path, offset)
                if start is not None or end is not None:
                    frame = frame[_within(frame["Date"], start, end)]
                if len(frame):
                    yield QuoteChunk(frame=frame, origin=str(path), file_columns=self.file_columns)
            if rows == 0:
                raise SourceError(f"{path}: file contains no data rows")

    def _format(self, path: Path) -> str:
        if self.config.format != "auto":
            return self.config.format
        for fmt, suffixes in _SUFFIXES.items():
            if path.name.endswith(suffixes):
                return fmt
        raise SourceError(f"{path}: cannot tell the format from the name; set source.format to parquet or csv")

    def _batches(self, path: Path) -> Iterator[tuple[int, pd.DataFrame]]:
        """(row offset, DataFrame) batches of the mapped columns, after checking the header against the mapping."""
        fmt = self._format(path)
        try:
            if fmt == "parquet":
                reader = pq.ParquetFile(path)
                self._check_header(path, reader.schema_arrow.names)
                batches = reader.iter_batches(batch_size=_BATCH_ROWS, columns=list(self.config.columns))
            else:
                names = pacsv.open_csv(path).schema.names
                self._check_header(path, names)
                # Text in, so that a bad value is reported by validation with its row, not by the CSV parser.
                # An empty field is a missing value (as in Parquet), not the text "".
                convert = pacsv.ConvertOptions(
                    column_types={n: pa.string() for n in names},
                    include_columns=list(self.config.columns),
                    null_values=[""],
                    strings_can_be_null=True,
                )
                batches = pacsv.open_csv(path, convert_options=convert)
            offset = 0
            for batch in batches:
                frame = batch.to_pandas()
                yield offset, frame
                offset += len(frame)
        # A non-UTF-8 CSV header fails in Python; a Parquet date past the year 9999 fails Arrow's conversion to
        # pandas with a bare ValueError.
        except (pa.ArrowException, OSError, UnicodeDecodeError, ValueError) as exc:
            raise SourceError(f"{path}: cannot read as {fmt}: {exc}") from exc

    def _check_header(self, path: Path, found: list[str]) -> None:
        # A name given twice passes the comparison of names, but which of its columns would be loaded is unsaid.
        doubled = {c: found.count(c) for c in self.config.columns if found.count(c) > 1}
        if doubled:
            raise SourceError(
                f"{path}: mapped column(s) appear more than once: "
                + ", ".join(f"{name!r} {n} times" for name, n in doubled.items())
                + f". Found {found}; each mapped column must appear once."
            )
        expected = list(self.config.columns) + [c for c in self.config.ignore_columns if c in found]
        diff = diff_columns(found, expected)
        if not diff.ok:
            raise SourceError(
                f"{path}: columns do not match the mapping: {diff.describe()}. "
                f"Found {found}; the mapping expects {list(self.config.columns)}"
                + (f" and ignores {self.config.ignore_columns}" if self.config.ignore_columns else "")
                + ". Map every column, or list it in source.ignore_columns."
            )

    def _canonical(self, batch: pd.DataFrame, path: Path, offset: int) -> pd.DataFrame:
        frame = batch.rename(columns=self.config.columns)
        frame.index = pd.RangeIndex(offset + 1, offset + 1 + len(frame))
        if self._code_regex:
            match = self._code_regex.search(path.name)
            if not match:
                raise SourceError(f"{path}: file name does not match code_from_filename {self._code_regex.pattern!r}")
            frame["Code"] = match["code"]
        frame["Date"] = self._parse_dates(frame["Date"], path)
        for column in CANONICAL_QUOTE_COLUMNS:
            if column not in frame:
                frame[column] = self.config.fill.get(column, float("nan"))
        return frame.loc[:, list(CANONICAL_QUOTE_COLUMNS)]

    def _parse_dates(self, values: pd.Series, path: Path) -> pd.Series:
        """Naive dates as they are; zoned timestamps (mixed offsets too) as their day on the exchange's clock."""
        column = f"column {self.file_columns.get('Date', 'Date')!r} (Date)"
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            return self._local_days(values, values, path, column)
        if pd.api.types.is_datetime64_dtype(values.dtype):
            self._check_span(values, values, path, column)
            return values.dt.as_unit("ns")
        text = values.astype("string")
        zoned = text.str.contains(_ZONED, regex=True).fillna(False).astype(bool)
        parsed = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
        if (~zoned).any():
            naive = pd.to_datetime(text[~zoned], errors="coerce")
            self._check_span(naive, values, path, column)
            parsed[~zoned] = naive.dt.as_unit("ns")
        aware = pd.to_datetime(text[zoned], errors="coerce", utc=True)
        bad = (parsed.isna() & ~zoned & values.notna()) | (zoned & aware.reindex(values.index).isna())
        if bad.any():
            raise SourceError(
                f"{path}: {column} has {int(bad.sum())} value(s) that are not dates: {_shown(values[bad])}"
            )
        if zoned.any():
            parsed[zoned] = self._local_days(aware, values[zoned], path, column)
        return parsed

    def _local_days(self, aware: pd.Series, raw: pd.Series, path: Path, column: str) -> pd.Series:
        self._check_span(aware.dt.tz_convert("UTC").dt.tz_localize(None), raw, path, column)
        days, day_stamps = self.calendar.local_days(aware)
        if not day_stamps.all():
            local = aware[~day_stamps].dt.tz_convert(self.calendar.tz).dt.strftime("%H:%M")
            odd = raw[~day_stamps].astype(str) + " (" + local + " local)"
            raise SourceError(
                f"{path}: {column} has {len(odd)} timestamp(s) whose time of day in {self.calendar.tz} is neither "
                f"midnight nor the {self.calendar.name} session close, so they are not daily bars: {_shown(odd)}"
            )
        return days

    def _check_span(self, stamps: pd.Series, raw: pd.Series, path: Path, column: str) -> None:
        """Refuse timestamps that the warehouse's nanosecond dates cannot hold, such as a volume of 1001 read as
        the year 1001: pandas parses them at a coarser unit, and converting them would raise a bare overflow."""
        outside = stamps.notna() & ~stamps.between(_FIRST_DAY, _LAST_DAY)
        if outside.any():
            # pandas cannot print a tz-aware stamp past the year 9999 at all; its UTC time it can.
            shown = stamps.map(str) + " UTC" if isinstance(raw.dtype, pd.DatetimeTZDtype) else raw
            raise SourceError(
                f"{path}: {column} has {int(outside.sum())} date(s) outside {_FIRST_DAY.date()} .. "
                f"{_LAST_DAY.date()}, the span a date can have here: {_shown(shown[outside[outside].index])}"
            )


def _shown(values: pd.Series) -> str:
    shown = ", ".join(f"row {i}: {str(v)!r}" for i, v in values.head(_SHOWN).items())
    return shown + (f" and {len(values) - _SHOWN} more" if len(values) > _SHOWN else "")


def _within(dates: pd.Series, start: date | None, end: date | None) -> pd.Series:
    inside = pd.Series(True, index=dates.index)
    if start is not None:
        inside &= dates >= pd.Timestamp(start)
    if end is not None:
        inside &= dates <= pd.Timestamp(end)
    # A missing Date stays in, so that validation reports it instead of the window silently dropping it.
    return inside | dates.isna()
