"""The embedded DuckDB warehouse: canonical tables, transactional merges and content fingerprints.

Table and column names keep J-Quants naming exactly, case included. Every write made by an ingest
happens inside one transaction that the caller owns (``Warehouse.transaction``), so a failure at any
point leaves the tables as they were.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from atft.config import WarehouseConfig
from atft.sources.base import LISTED_INFO_COLUMNS, ORACLE_COLUMNS
from atft.warehouse_lock import DEFAULT_TIMEOUT_S, WarehouseLock
from schemas.columns import CANONICAL_QUOTE_COLUMNS

_QUOTE_COLUMNS_DDL = "Code VARCHAR NOT NULL, Date DATE NOT NULL, " + ", ".join(
    f"{c} DOUBLE" for c in CANONICAL_QUOTE_COLUMNS[2:]
)
_ORACLE_COLUMNS_DDL = "Code VARCHAR NOT NULL, Date DATE NOT NULL, " + ", ".join(
    f"{c} DOUBLE" for c in ORACLE_COLUMNS[2:]
)

SCHEMA_DDL: tuple[str, ...] = (
    f"CREATE TABLE IF NOT EXISTS raw_quotes ({_QUOTE_COLUMNS_DDL}, PRIMARY KEY (Code, Date))",
    "CREATE TABLE IF NOT EXISTS listed_info (Code VARCHAR NOT NULL, CompanyName VARCHAR, Sector17Code VARCHAR, "
    "Sector33Code VARCHAR, MarketCode VARCHAR, ValidFrom DATE NOT NULL, ValidTo DATE, PRIMARY KEY (Code, ValidFrom))",
    f"CREATE TABLE IF NOT EXISTS synthetic_oracle ({_ORACLE_COLUMNS_DDL}, PRIMARY KEY (Code, Date))",
    "CREATE TABLE IF NOT EXISTS rejected_rows (run_id VARCHAR NOT NULL, origin VARCHAR, source_row BIGINT, "
    "Code VARCHAR, Date DATE, rule VARCHAR NOT NULL, reason VARCHAR NOT NULL, record VARCHAR NOT NULL, "
    "quarantined_at TIMESTAMP NOT NULL)",
    # One row per attempt: a retried task writes its failed and its successful attempt under the same run id.
    # An attempt is logged as `started` before its data transaction and updated when it ends, so a killed run
    # leaves a `started` row, which the next ingest marks `interrupted`.
    "CREATE TABLE IF NOT EXISTS ingest_log (run_id VARCHAR NOT NULL, config VARCHAR, source VARCHAR, "
    "start_date DATE, end_date DATE, rows_received BIGINT, rows_inserted BIGINT, rows_updated BIGINT, "
    "rows_unchanged BIGINT, rows_rejected BIGINT, content_hash VARCHAR, status VARCHAR NOT NULL, message VARCHAR, "
    "started_at TIMESTAMP NOT NULL, finished_at TIMESTAMP, PRIMARY KEY (run_id, started_at))",
)
# Tables an ingest changes; the ingest log is an audit trail and also records failed runs.
DATA_TABLES: tuple[str, ...] = ("raw_quotes", "listed_info", "synthetic_oracle", "rejected_rows")
_KEYS: dict[str, tuple[str, ...]] = {
    "raw_quotes": ("Code", "Date"),
    "listed_info": ("Code", "ValidFrom"),
    "synthetic_oracle": ("Code", "Date"),
    "rejected_rows": ("Code", "Date", "rule", "record"),
    "ingest_log": ("started_at", "run_id"),
}
_QUOTE_VALUES = CANONICAL_QUOTE_COLUMNS[2:]
_LISTED_ATTRS = LISTED_INFO_COLUMNS[1:5]


class WarehouseError(RuntimeError):
    """The warehouse file cannot be opened or is not a warehouse of this platform."""


@dataclass(frozen=True)
class MergeCounts:
    inserted: int
    updated: int
    unchanged: int


@dataclass(frozen=True)
class IngestLogEntry:
    run_id: str
    config: str
    source: str
    start_date: date | None
    end_date: date | None
    rows_received: int
    rows_inserted: int
    rows_updated: int
    rows_unchanged: int
    rows_rejected: int
    content_hash: str | None
    status: str
    message: str | None
    started_at: datetime
    finished_at: datetime | None  # None while the attempt runs, and for one that was interrupted


class Warehouse:
    """A DuckDB file holding the canonical tables. Use as a context manager; it creates missing tables.

    Opening takes the warehouse lock (``atft.warehouse_lock``): shared to read, exclusive to write, waiting
    up to ``lock_timeout_s`` for runs that hold it, so that overlapping runs take turns instead of failing.
    """

    def __init__(self, path: str | Path, read_only: bool = False, lock_timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._lock = WarehouseLock(self.path, exclusive=not read_only, timeout_s=lock_timeout_s)
        self._con: duckdb.DuckDBPyConnection | None = None

    @classmethod
    def of(cls, config: WarehouseConfig, path: str | Path | None = None, read_only: bool = False) -> Warehouse:
        """The configured warehouse (or the file at ``path`` in its place), waiting as configured for its lock."""
        return cls(path or config.path, read_only=read_only, lock_timeout_s=config.lock_timeout_s)

    def __enter__(self) -> Warehouse:
        if not self.read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():
            raise WarehouseError(f"warehouse {self.path} does not exist")
        self._lock.acquire()
        try:
            self._con = duckdb.connect(str(self.path), read_only=self.read_only)
            if not self.read_only:
                self._create_tables()
        except BaseException as exc:
            self.__exit__()
            if isinstance(exc, duckdb.Error):
                raise WarehouseError(f"cannot open warehouse {self.path}: {exc}") from exc
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
        self._lock.release()

    def _create_tables(self) -> None:
        for ddl in SCHEMA_DDL:
            self.con.execute(ddl)
        # Warehouses made before runs were logged as they started require an end time.
        nullable = self.con.execute(
            "SELECT is_nullable FROM information_schema.columns WHERE table_name = 'ingest_log' "
            "AND column_name = 'finished_at'"
        ).fetchall()
        if nullable == [("NO",)]:
            self.con.execute("ALTER TABLE ingest_log ALTER COLUMN finished_at DROP NOT NULL")

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise WarehouseError("warehouse is not open; use `with Warehouse(path) as wh:`")
        return self._con

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All or nothing: commit when the block ends, roll back on any exception (or interrupt)."""
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    # -- reads -------------------------------------------------------------------------------------------

    def last_quote_date(self) -> date | None:
        return self._one("SELECT max(Date) FROM raw_quotes")[0]

    def has_table(self, table: str) -> bool:
        sql = "SELECT count(*) FROM information_schema.tables WHERE table_name = ?"
        return self.con.execute(sql, [table]).fetchall()[0][0] > 0

    def row_count(self, table: str) -> int:
        _keys(table)
        return self._one(f"SELECT count(*) FROM {table}")[0]

    def fingerprint(self, table: str, through: date | None = None) -> str:
        """sha256 of a table's content in key order: the same rows give the same hash on any machine.

        ``through`` limits it to rows with ``Date <= through``. Values are hashed column by column from Arrow
        buffers, so neither DuckDB's internal hash nor the batch size matters.
        """
        keys = _keys(table)
        where = "" if through is None else "WHERE Date <= ?"
        relation = self.con.sql(
            f"SELECT * FROM {table} {where} ORDER BY {', '.join(keys)}", params=None if through is None else [through]
        )
        rows = 0
        # Closed on any exit: an open result would block the connection, ROLLBACK included (DuckDB 2.0).
        with relation.to_arrow_reader(1 << 17) as reader:
            digests = {field.name: hashlib.sha256() for field in reader.schema}
            for batch in reader:
                rows += batch.num_rows
                for field, column in zip(reader.schema, batch.columns, strict=True):
                    digests[field.name].update(_column_bytes(column))
        outer = hashlib.sha256(f"{table}:{rows}".encode())
        for field in reader.schema:
            outer.update(f"{field.name}:{field.type}:".encode() + digests[field.name].digest())
        return outer.hexdigest()

    def overview(self) -> list[tuple[str, int, str]]:
        """(table, rows, detail) for each canonical table: what a person wants to see after an ingest."""
        detail = {
            "raw_quotes": "SELECT count(DISTINCT Code) || ' codes, ' || coalesce(min(Date) || ' .. ' || max(Date), "
            "'no dates') FROM raw_quotes",
            "listed_info": "SELECT count(DISTINCT Sector17Code) || ' sectors (17-code)' FROM listed_info",
            "synthetic_oracle": "SELECT 'expected forward returns, for evaluation only'",
            "rejected_rows": "SELECT coalesce(string_agg(DISTINCT rule, ', '), 'none') FROM rejected_rows",
            "ingest_log": "SELECT count(*) FILTER (status = 'failed') || ' failed, ' || "
            "count(*) FILTER (status = 'interrupted') || ' interrupted runs' FROM ingest_log",
        }
        return [(table, self.row_count(table), self._one(sql)[0]) for table, sql in detail.items()]

    def log_entries(self) -> list[IngestLogEntry]:
        rows = self.con.sql("SELECT * FROM ingest_log ORDER BY started_at, run_id").fetchall()
        return [IngestLogEntry(*row) for row in rows]

    def _one(self, sql: str) -> tuple:
        # DuckDB 2.0: relations have no fetchone(), and a result must be drained before the next statement.
        return self.con.execute(sql).fetchall()[0]

    # -- writes (inside the caller's transaction) --------------------------------------------------------

    def create_staging(self) -> None:
        """Empty temp tables that collect one run's validated rows before they are merged."""
        # Declared column by column: in DuckDB 2.0 a table made empty by CREATE TABLE AS ... LIMIT 0 inside a
        # transaction loses bulk-inserted rows from its scans (count(*) still sees them).
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE staging_quotes ({_QUOTE_COLUMNS_DDL}, origin VARCHAR, source_row BIGINT)"
        )
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE staging_oracle ({_ORACLE_COLUMNS_DDL})")

    def stage_quotes(self, frame: pd.DataFrame, origin: str) -> None:
        """Stage validated rows; ``frame``'s index is each row's number in ``origin``, kept for reports."""
        staged = frame.assign(origin=origin, source_row=frame.index.astype("int64"))
        self._append("staging_quotes", staged, (*CANONICAL_QUOTE_COLUMNS, "origin", "source_row"))

    def staged_neighbourhood(self, days: int = 31) -> pd.DataFrame:
        """Staged quotes, with ``staged`` true, beside their stocks' warehouse rows within ``days`` calendar days
        (not replaced by a staged row): what a day-over-day check of the staged rows needs."""
        columns = ", ".join(CANONICAL_QUOTE_COLUMNS)
        return self.con.sql(
            f"WITH span AS (SELECT Code, min(Date) - {int(days)} AS lo, max(Date) + {int(days)} AS hi "
            "FROM staging_quotes GROUP BY Code) "
            f"SELECT {columns}, TRUE AS staged, origin, source_row FROM staging_quotes UNION ALL "
            f"SELECT {', '.join(f'q.{c}' for c in CANONICAL_QUOTE_COLUMNS)}, FALSE, NULL, NULL FROM raw_quotes q "
            "JOIN span ON q.Code = span.Code AND q.Date BETWEEN span.lo AND span.hi "
            "WHERE NOT EXISTS (SELECT 1 FROM staging_quotes s WHERE s.Code = q.Code AND s.Date = q.Date)"
        ).df()

    def withdraw(self, keys: pd.DataFrame) -> int:
        """Drop (Code, Date) keys from the staged quotes and from ``raw_quotes``; returns the warehouse rows dropped.

        For rows judged bad only once their next day arrived: an earlier ingest may already have stored them.
        """
        self._append_temp("withdrawn_keys", keys.assign(Date=pd.to_datetime(keys["Date"])), ("Code", "Date"))
        match = "WHERE (Code, Date) IN (SELECT (Code, CAST(Date AS DATE)) FROM withdrawn_keys)"
        self.con.execute(f"DELETE FROM staging_quotes {match}")
        before = self.row_count("raw_quotes")
        self.con.execute(f"DELETE FROM raw_quotes {match}")
        return before - self.row_count("raw_quotes")

    def stage_oracle(self, frame: pd.DataFrame) -> None:
        self._append("staging_oracle", frame, ORACLE_COLUMNS)

    def staged_duplicates(self, also: pd.DataFrame | None = None, limit: int = 5) -> list[tuple[str, date, int]]:
        """(Code, Date, count) keys delivered more than once, e.g. the same day in two files.

        ``also`` holds keys of rows that were quarantined instead of staged: a bad copy of a row in one file
        and a good copy in another is still a duplicate.
        """
        keys = pd.DataFrame({"Code": pd.Series(dtype=str), "Date": pd.Series(dtype="datetime64[ns]")})
        if also is not None:
            keys = also.loc[also["Code"].notna() & also["Date"].notna(), ["Code", "Date"]]
        self._append_temp("quarantined_keys", keys, ("Code", "Date"))
        return self.con.sql(
            "SELECT Code, Date, count(*) AS n FROM (SELECT Code, Date FROM staging_quotes UNION ALL "
            "SELECT Code, CAST(Date AS DATE) FROM quarantined_keys) GROUP BY ALL HAVING n > 1 "
            f"ORDER BY Code, Date LIMIT {int(limit)}"
        ).fetchall()

    def staged_summary(self) -> tuple[int, int, date | None, date | None]:
        """(rows, distinct codes, first date, last date) of the staged quotes."""
        return self._one("SELECT count(*), count(DISTINCT Code), min(Date), max(Date) FROM staging_quotes")

    def merge_staged_quotes(self) -> MergeCounts:
        """Upsert staged quotes into ``raw_quotes``: new keys are inserted, changed rows replaced."""
        differs = " OR ".join(f"s.{c} IS DISTINCT FROM q.{c}" for c in _QUOTE_VALUES)
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE quote_changes AS "
            "SELECT s.*, q.Code IS NULL AS is_new FROM staging_quotes s "
            f"LEFT JOIN raw_quotes q ON s.Code = q.Code AND s.Date = q.Date WHERE q.Code IS NULL OR {differs}"
        )
        inserted, updated = self._one(
            "SELECT count(*) FILTER (is_new), count(*) FILTER (NOT is_new) FROM quote_changes"
        )
        columns = ", ".join(CANONICAL_QUOTE_COLUMNS)
        self.con.execute(
            f"INSERT INTO raw_quotes SELECT {columns} FROM quote_changes ON CONFLICT (Code, Date) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in _QUOTE_VALUES)
        )
        staged = self._one("SELECT count(*) FROM staging_quotes")[0]
        return MergeCounts(inserted=inserted, updated=updated, unchanged=staged - inserted - updated)

    def merge_staged_oracle(self) -> None:
        self.con.execute("INSERT OR REPLACE INTO synthetic_oracle SELECT * FROM staging_oracle")

    def merge_listed_info(self, frame: pd.DataFrame) -> MergeCounts:
        """Merge listing records as a history (one row per Code and ValidFrom).

        A record for an existing (Code, ValidFrom) replaces it when it differs. A record that only repeats
        the open record of its Code (a daily snapshot with nothing new) changes nothing. A record with new
        attributes closes the open record the day before it starts.
        """
        self._append_temp("incoming_listed", frame, LISTED_INFO_COLUMNS)
        attrs_differ = " OR ".join(f"i.{c} IS DISTINCT FROM l.{c}" for c in (*_LISTED_ATTRS, "ValidTo"))
        same_attrs = " AND ".join(f"i.{c} IS NOT DISTINCT FROM l.{c}" for c in _LISTED_ATTRS)
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE listed_changes AS "
            "SELECT i.*, l.Code IS NULL AS is_new FROM incoming_listed i "
            "LEFT JOIN listed_info l ON i.Code = l.Code AND i.ValidFrom = l.ValidFrom "
            f"WHERE (l.Code IS NULL OR {attrs_differ}) AND NOT EXISTS ("
            "  SELECT 1 FROM listed_info l WHERE l.Code = i.Code AND l.ValidTo IS NULL AND l.ValidFrom < i.ValidFrom"
            f"  AND {same_attrs})"
        )
        self.con.execute(
            "UPDATE listed_info l SET ValidTo = c.ValidFrom - INTERVAL 1 DAY FROM listed_changes c "
            "WHERE c.is_new AND l.Code = c.Code AND l.ValidTo IS NULL AND l.ValidFrom < c.ValidFrom"
        )
        columns = ", ".join(LISTED_INFO_COLUMNS)
        self.con.execute(
            f"INSERT INTO listed_info SELECT {columns} FROM listed_changes ON CONFLICT (Code, ValidFrom) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in (*_LISTED_ATTRS, "ValidTo"))
        )
        inserted, updated = self._one(
            "SELECT count(*) FILTER (is_new), count(*) FILTER (NOT is_new) FROM listed_changes"
        )
        return MergeCounts(inserted=inserted, updated=updated, unchanged=len(frame) - inserted - updated)

    def quarantine(self, frame: pd.DataFrame, run_id: str) -> int:
        """Store rejected rows (``REJECTED_COLUMNS`` plus ``origin``). A row already quarantined for the same
        rule with the same content is kept once, so re-ingesting the same file changes nothing."""
        incoming = frame.drop_duplicates(["Code", "Date", "rule", "record"]).assign(
            run_id=run_id, quarantined_at=pd.Timestamp.now(tz="UTC").tz_localize(None)
        )
        self._append_temp(
            "incoming_rejected",
            incoming,
            ("run_id", "origin", "source_row", "Code", "Date", "rule", "reason", "record", "quarantined_at"),
        )
        before = self.row_count("rejected_rows")
        self.con.execute(
            "INSERT INTO rejected_rows SELECT * FROM incoming_rejected i WHERE NOT EXISTS ("
            "SELECT 1 FROM rejected_rows r WHERE r.Code IS NOT DISTINCT FROM i.Code "
            "AND r.Date IS NOT DISTINCT FROM i.Date AND r.rule = i.rule AND r.record = i.record)"
        )
        return self.row_count("rejected_rows") - before

    def write_log(self, entry: IngestLogEntry) -> None:
        """Insert the attempt's row, or replace it (same run id and start) with its end state."""
        self.con.execute(
            f"INSERT OR REPLACE INTO ingest_log VALUES ({', '.join('?' * len(IngestLogEntry.__dataclass_fields__))})",
            list(entry.__dict__.values()),
        )

    def mark_interrupted(self, by: str) -> list[IngestLogEntry]:
        """Mark runs logged as `started` that never ended; call holding the write lock, when none can be live."""
        found = [e for e in self.log_entries() if e.status == "started"]
        self.con.execute(
            "UPDATE ingest_log SET status = 'interrupted', message = ? WHERE status = 'started'",
            [f"the run ended without recording an outcome (killed or crashed); marked by ingest run {by}"],
        )
        return found

    def _append(self, table: str, frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
        self._from_frame(f"INSERT INTO {table} SELECT * FROM incoming_frame", frame, columns)

    def _append_temp(self, table: str, frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
        self._from_frame(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT * FROM incoming_frame", frame, columns)

    def _from_frame(self, sql: str, frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
        # Arrow turns pandas NaN into NULL, which is how the warehouse stores a missing value.
        self.con.register("incoming_frame", pa.Table.from_pandas(frame.loc[:, list(columns)], preserve_index=False))
        try:
            self.con.execute(sql)
        finally:
            self.con.unregister("incoming_frame")


_FEATURE_TABLE = re.compile(r"^features_[0-9a-f]{12}$")


def read_oracle(con: duckdb.DuckDBPyConnection, start: date, end: date) -> pd.DataFrame:
    """The synthetic market's expected forward returns for days in [start, end]: Code, Date, oracle_<h>d. For
    judging only: nothing that builds features or trains may read it."""
    return con.execute("SELECT * FROM synthetic_oracle WHERE Date BETWEEN ? AND ?", [start, end]).df()


def _keys(table: str) -> tuple[str, ...]:
    """The ordering key of one of the warehouse's own tables.

    Table names are interpolated into SQL, so only the canonical tables and versioned feature tables pass.
    """
    if table in _KEYS:
        return _KEYS[table]
    if _FEATURE_TABLE.match(table):
        return ("Code", "Date")
    raise WarehouseError(f"unknown warehouse table {table!r}; known: {sorted(_KEYS)} and features_<hash>")


def _column_bytes(column: pa.Array) -> bytes:
    """A canonical byte form of one Arrow column chunk; concatenating chunks gives the whole column's form."""
    validity = np.asarray(column.is_null()).tobytes()
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        values = "".join(f"{v}\x00" for v in pc.fill_null(column, "").to_pylist()).encode()
    elif pa.types.is_date32(column.type):
        values = np.asarray(pc.fill_null(column.cast(pa.int32()), 0)).tobytes()
    elif pa.types.is_timestamp(column.type):
        values = np.asarray(pc.fill_null(column.cast(pa.int64()), 0)).tobytes()
    elif pa.types.is_integer(column.type):
        values = np.asarray(pc.fill_null(column.cast(pa.int64()), 0)).astype("<i8").tobytes()
    elif pa.types.is_floating(column.type):
        floats = np.asarray(pc.fill_null(column.cast(pa.float64()), 0.0), dtype="<f8")
        values = np.where(np.isnan(floats), np.nan, floats).tobytes()  # one bit pattern for every NaN
    elif pa.types.is_boolean(column.type):
        values = np.asarray(pc.fill_null(column, False)).tobytes()
    else:
        raise WarehouseError(f"cannot fingerprint Arrow type {column.type}")
    return validity + values
