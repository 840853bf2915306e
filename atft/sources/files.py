"""CSV or Parquet files, one file or a directory of per-stock files, mapped to canonical columns.

The mapping in the pipeline config is the only link between a file's columns and the canonical ones.
Names are matched exactly: a column that differs only in case is reported as such, never guessed.

Sector labels come from a column of the quotes files mapped to Sector17Code, or from a listings file of one
row per stock (``source.listings``). Files carry no dates, so a label holds for the stock's whole history.
Labels are metadata a person keeps by hand: a bad one (a listing for no quoted stock, two labels for one
stock) fails the ingest with its file, column, row and value instead of being quarantined, so that it is
fixed once rather than dropped on every run. A stock without a label simply has no sector; a code outside
``universe.code_pattern`` is left out by the ingest, as its quotes are quarantined.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from atft.calendar import TradingCalendar
from atft.config import (
    CANONICAL_QUOTE_COLUMNS,
    LISTING_FILE_COLUMNS,
    QUOTE_FILE_LABELS,
    REQUIRED_QUOTE_COLUMNS,
    FilesSourceConfig,
)
from atft.sources.base import LISTED_INFO_COLUMNS, QuoteChunk, SourceError
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
        """One record per labelled stock, valid from the calendar's first session with no end; None without labels.

        ``as_of`` is not used: the files have no dates. The quotes files are read for the codes they quote and
        their label column, whatever the ingest window, so that an incremental ingest sees every label.
        """
        labels = [c for c in QUOTE_FILE_LABELS if c in self.file_columns]
        listings = self.config.listings
        if not labels and listings is None:
            return None
        codes, frame = self._quote_labels(labels)
        if listings is not None:
            listed = self._listings(codes)
            frame = listed if not labels else frame.merge(listed, on="Code", how="outer")
        frame = frame.reindex(columns=list(LISTING_FILE_COLUMNS)).astype(object)
        frame = frame.where(frame.notna(), None).sort_values("Code", ignore_index=True)
        frame["ValidFrom"] = pd.Timestamp(self.calendar.first_session).as_unit("ns")
        frame["ValidTo"] = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns]")
        return frame[list(LISTED_INFO_COLUMNS)]

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
            for offset, batch in self._quote_batches(path, list(self.config.columns)):
                rows += len(batch)
                frame = self._canonical(batch, path, offset)
                if start is not None or end is not None:
                    frame = frame[_within(frame["Date"], start, end)]
                if len(frame):
                    yield QuoteChunk(frame=frame, origin=str(path), file_columns=self.file_columns)
            if rows == 0:
                raise SourceError(f"{path}: file contains no data rows")

    def _quote_batches(self, path: Path, load: list[str], text: bool = False) -> Iterator[tuple[int, pd.DataFrame]]:
        config = self.config
        fmt = _format(path, config.format, "source.format")
        return _batches(path, fmt, config.columns, config.ignore_columns, load, "source", text)

    def _quote_labels(self, labels: list[str]) -> tuple[set[str], pd.DataFrame]:
        """The codes the quotes files hold, and each code's ``labels`` (one row per code; a blank is no label).

        A code given two different values of a label, in one file or across files, is refused with the rows.
        """
        code_column = [] if self._code_regex else [self.file_columns["Code"]]
        load = code_column + [self.file_columns[c] for c in labels]
        codes: set[str] = set()
        seen: list[pd.DataFrame] = []
        for path in self.files():
            for offset, batch in self._quote_batches(path, load, text=True):
                frame = batch.rename(columns=self.config.columns)
                frame.index = pd.RangeIndex(offset + 1, offset + 1 + len(frame))
                if self._code_regex:
                    frame["Code"] = self._code_of(path)
                frame = frame[frame["Code"].notna()]
                codes.update(frame["Code"].unique())
                for label in labels:
                    given = frame.loc[frame[label].notna(), ["Code", label]]
                    firsts = given.drop_duplicates().rename_axis("row").reset_index()
                    seen.append(firsts.rename(columns={label: "value"}).assign(label=label, origin=str(path)))
        if not seen:
            return codes, pd.DataFrame(columns=["Code", *labels])
        found = pd.concat(seen, ignore_index=True).drop_duplicates(["Code", "label", "value"])
        for label in labels:
            _refuse_conflicts(found[found["label"] == label], f"column {self.file_columns[label]!r} ({label})")
        frame = found.pivot(index="Code", columns="label", values="value").reindex(columns=labels)
        return codes, frame.rename_axis(columns=None).reset_index()

    def _listings(self, codes: set[str]) -> pd.DataFrame:
        """The listings file's rows, one per code, each code one that the quotes files hold."""
        listings = self.config.listings
        assert listings is not None
        path = listings.path
        if not path.is_file():
            raise SourceError(f"{path}: no such listings file (source.listings.path)")
        fmt = _format(path, listings.format, "source.listings.format")
        load = list(listings.columns)
        batches = _batches(path, fmt, listings.columns, listings.ignore_columns, load, "source.listings", True)
        parts = [b.set_axis(pd.RangeIndex(o + 1, o + 1 + len(b))) for o, b in batches]
        frame = pd.concat(parts).rename(columns=listings.columns) if parts else pd.DataFrame(columns=load)
        if frame.empty:
            raise SourceError(f"{path}: listings file contains no data rows")
        names = {canonical: name for name, canonical in listings.columns.items()}
        column = f"column {names['Code']!r} (Code)"
        if frame["Code"].isna().any():
            rows = ", ".join(str(r) for r in frame.index[frame["Code"].isna()][:_SHOWN])
            raise SourceError(f"{path}: {column} is empty in row(s) {rows}; every listing needs a code")
        unknown = frame["Code"][~frame["Code"].isin(codes)]
        if len(unknown):
            raise SourceError(
                f"{path}: {column} has {len(unknown)} code(s) that no quotes file under {self.config.path} holds: "
                f"{_shown(unknown)}. A listing must name a quoted stock; remove the row or fix the code."
            )
        labels = [c for c in frame.columns if c != "Code"]
        for label in labels:
            given = frame.loc[frame[label].notna(), ["Code", label]].drop_duplicates()
            found = given.rename(columns={label: "value"}).rename_axis("row").reset_index().assign(origin=str(path))
            _refuse_conflicts(found, f"column {names[label]!r} ({label})")
        # A code listed twice with the same labels (or blanks beside them) is one listing.
        return frame.groupby("Code", sort=True)[labels].first().reset_index()

    def _code_of(self, path: Path) -> str:
        assert self._code_regex is not None
        match = self._code_regex.search(path.name)
        if not match:
            raise SourceError(f"{path}: file name does not match code_from_filename {self._code_regex.pattern!r}")
        return match["code"]

    def _canonical(self, batch: pd.DataFrame, path: Path, offset: int) -> pd.DataFrame:
        frame = batch.rename(columns=self.config.columns)
        frame.index = pd.RangeIndex(offset + 1, offset + 1 + len(frame))
        if self._code_regex:
            frame["Code"] = self._code_of(path)
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


def _format(path: Path, configured: str, key: str) -> str:
    if configured != "auto":
        return configured
    for fmt, suffixes in _SUFFIXES.items():
        if path.name.endswith(suffixes):
            return fmt
    raise SourceError(f"{path}: cannot tell the format from the name; set {key} to parquet or csv")


def _batches(
    path: Path,
    fmt: str,
    mapping: dict[str, str],
    ignored: list[str],
    load: list[str],
    section: str,
    text: bool = False,
) -> Iterator[tuple[int, pd.DataFrame]]:
    """(row offset, DataFrame) batches of the ``load`` columns, after checking the header against ``mapping``.

    ``text`` reads every column as text (labels and codes compare as written, Parquet numbers included).
    """
    try:
        if fmt == "parquet":
            reader = pq.ParquetFile(path)
            _check_header(path, reader.schema_arrow.names, mapping, ignored, section)
            batches = reader.iter_batches(batch_size=_BATCH_ROWS, columns=load)
        else:
            names = pacsv.open_csv(path).schema.names
            _check_header(path, names, mapping, ignored, section)
            # Text in, so that a bad value is reported by validation with its row, not by the CSV parser.
            # An empty field is a missing value (as in Parquet), not the text "".
            convert = pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                include_columns=load,
                null_values=[""],
                strings_can_be_null=True,
            )
            batches = pacsv.open_csv(path, convert_options=convert)
        offset = 0
        for batch in batches:
            if text:
                columns = [pc.cast(c, pa.string()) for c in batch.columns]
                batch = pa.RecordBatch.from_arrays(columns, batch.schema.names)
            frame = batch.to_pandas()
            yield offset, frame
            offset += len(frame)
    # A non-UTF-8 CSV header fails in Python; a Parquet date past the year 9999 fails Arrow's conversion to
    # pandas with a bare ValueError.
    except (pa.ArrowException, OSError, UnicodeDecodeError, ValueError) as exc:
        raise SourceError(f"{path}: cannot read as {fmt}: {exc}") from exc


def _check_header(path: Path, found: list[str], mapping: dict[str, str], ignored: list[str], section: str) -> None:
    # A name given twice passes the comparison of names, but which of its columns would be loaded is unsaid.
    doubled = {c: found.count(c) for c in mapping if found.count(c) > 1}
    if doubled:
        raise SourceError(
            f"{path}: mapped column(s) appear more than once: "
            + ", ".join(f"{name!r} {n} times" for name, n in doubled.items())
            + f". Found {found}; each mapped column must appear once."
        )
    expected = list(mapping) + [c for c in ignored if c in found]
    diff = diff_columns(found, expected)
    if not diff.ok:
        raise SourceError(
            f"{path}: columns do not match the mapping: {diff.describe()}. "
            f"Found {found}; the mapping expects {list(mapping)}"
            + (f" and ignores {ignored}" if ignored else "")
            + f". Map every column, or list it in {section}.ignore_columns."
        )


def _refuse_conflicts(found: pd.DataFrame, column: str) -> None:
    """``found``: distinct (Code, value) pairs with the ``origin`` and ``row`` of each; one value per code."""
    doubled = found[found.duplicated("Code", keep=False)]
    if doubled.empty:
        return
    codes = list(dict.fromkeys(doubled["Code"]))
    shown = "; ".join(
        f"{code}: "
        + ", ".join(f"{r.origin} row {r.row}: {r.value!r}" for r in doubled[doubled["Code"] == code].itertuples())
        for code in codes[:_SHOWN]
    )
    more = f"; and {len(codes) - _SHOWN} more" if len(codes) > _SHOWN else ""
    raise SourceError(f"{column} gives {len(codes)} stock(s) more than one value, where a stock has one: {shown}{more}")


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
