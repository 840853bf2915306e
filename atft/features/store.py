"""The versioned feature tables in the warehouse, and the record each build leaves behind.

A feature table is named after its manifest (``features_<sha256[:12]>``): one feature contract, one
table. A new feature set lands in a new table, and the old one stays for the checkpoints trained on it.
``feature_builds`` records, per table, the last day built and a fingerprint of the raw history the build
read, so that the next build can tell whether only new days need computing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from atft.warehouse import Warehouse
from schemas.manifest import FeatureManifest, ManifestError

_SQL_TYPES = {"float32": "FLOAT", "float64": "DOUBLE", "bool": "BOOLEAN", "int64": "BIGINT", "string": "VARCHAR",
              "date": "DATE"}  # fmt: skip
_KEY_TYPES = {"Code": "string", "Date": "date"}
BUILDS_DDL = (
    "CREATE TABLE IF NOT EXISTS feature_builds (table_name VARCHAR PRIMARY KEY, manifest_sha256 VARCHAR NOT NULL, "
    "config VARCHAR NOT NULL, built_through DATE NOT NULL, history_fingerprint VARCHAR NOT NULL, "
    "rows BIGINT NOT NULL, manifest VARCHAR NOT NULL, updated_at TIMESTAMP NOT NULL)"
)


@dataclass(frozen=True)
class BuildState:
    table_name: str
    manifest_sha256: str
    config: str
    built_through: date
    history_fingerprint: str
    rows: int
    manifest: str
    updated_at: datetime


def build_state(con: duckdb.DuckDBPyConnection, table: str | None = None) -> BuildState | None:
    """The record of ``table``'s last build, or of the warehouse's most recent build when ``table`` is None."""
    # No DDL here: readers open the warehouse read-only.
    exists = "SELECT count(*) FROM information_schema.tables WHERE table_name = 'feature_builds'"
    if con.execute(exists).fetchall()[0][0] == 0:
        return None
    if table is None:
        found = con.execute("SELECT * FROM feature_builds ORDER BY updated_at DESC LIMIT 1").fetchall()
    else:
        found = con.execute("SELECT * FROM feature_builds WHERE table_name = ?", [table]).fetchall()
    return BuildState(*found[0]) if found else None


def feature_dates(con: duckdb.DuckDBPyConnection, table: str, through: date | None = None) -> list[date]:
    """The trading days of a feature table, in order; only those up to ``through`` when given."""
    where, params = ("WHERE Date <= ?", [through]) if through is not None else ("", [])
    return [d for (d,) in con.execute(f"SELECT DISTINCT Date FROM {table} {where} ORDER BY Date", params).fetchall()]


def feature_schema(con: duckdb.DuckDBPyConnection, table: str) -> pa.Schema:
    """The columns of a feature table, in order, with their types (what the contract is checked against)."""
    return con.sql(f"SELECT * FROM {table} LIMIT 0").to_arrow_table().schema


def feature_codes(con: duckdb.DuckDBPyConnection, table: str, start: date, end: date) -> list[str]:
    """The stocks with a row in [start, end], sorted."""
    query = f"SELECT DISTINCT Code FROM {table} WHERE Date BETWEEN ? AND ? ORDER BY Code"
    return [c for (c,) in con.execute(query, [start, end]).fetchall()]


def feature_rows(con: duckdb.DuckDBPyConnection, table: str, start: date, end: date) -> pa.Table:
    """Every column of the rows in [start, end]."""
    return con.sql(f"SELECT * FROM {table} WHERE Date BETWEEN ? AND ?", params=[start, end]).to_arrow_table()


def read_labels(con: duckdb.DuckDBPyConnection, table: str, horizon: int, days: list[date]) -> pd.DataFrame:
    """``Date``, ``Code`` and ``target_<horizon>d`` of ``days``, only where the label is valid (complete)."""
    target = f"target_{horizon}d"
    frame = con.execute(
        f"SELECT Date, Code, {target} FROM {table} WHERE Date IN (SELECT unnest(?)) AND {target}_valid", [days]
    ).df()
    frame["Date"] = pd.to_datetime(frame["Date"]).dt.date
    return frame


def read_inputs(con: duckdb.DuckDBPyConnection, table: str, columns: list[str], days: list[date]) -> pd.DataFrame:
    """``columns`` of every row of ``days``, as floats (NaN where missing)."""
    selected = ", ".join(f'CAST("{c}" AS DOUBLE) AS "{c}"' for c in columns)
    return con.execute(f"SELECT {selected} FROM {table} WHERE Date IN (SELECT unnest(?))", [days]).df()


def history_fingerprint(wh: Warehouse, through: date | None) -> str:
    """What a build reads: raw quotes up to ``through`` (all of them when None) and the listing history (sectors).
    Both a build's staleness check and the flow's cache key come from here, so they cannot disagree."""
    return f"{wh.fingerprint('raw_quotes', through=through)}:{wh.fingerprint('listed_info')}"


def staging_table(manifest: FeatureManifest) -> str:
    return f"{manifest.table_name}__staging"


def stage_rows(con: duckdb.DuckDBPyConnection, manifest: FeatureManifest, chunks: Iterable[pa.Table]) -> int:
    """Write ``chunks`` into a fresh ``<table>__staging``, committing each one.

    Rows committed chunk by chunk go to disk, so memory stays at one chunk however large the build; rows
    held in one open transaction would all stay in memory. ``swap_in`` then publishes them atomically.
    """
    staging = staging_table(manifest)
    columns = [(key, _KEY_TYPES[key]) for key in manifest.keys]
    columns += [(c.name, c.dtype) for c in (*manifest.features, *manifest.targets)]
    ddl = ", ".join(f'"{name}" {_SQL_TYPES[dtype]}' for name, dtype in columns)
    con.execute(f"CREATE OR REPLACE TABLE {staging} ({ddl})")
    written = 0
    try:
        for chunk in chunks:
            con.register("feature_chunk", chunk)
            try:
                con.execute(f"INSERT INTO {staging} SELECT * FROM feature_chunk")
            finally:
                con.unregister("feature_chunk")
            written += chunk.num_rows
    except BaseException:
        con.execute(f"DROP TABLE IF EXISTS {staging}")
        raise
    return written


def swap_in(con: duckdb.DuckDBPyConnection, manifest: FeatureManifest, since: date, full: bool) -> None:
    """Publish the staged rows (inside the caller's transaction): the whole table, or its rows from ``since``."""
    table, staging = manifest.table_name, staging_table(manifest)
    if full:
        con.execute(f"DROP TABLE IF EXISTS {table}")
        con.execute(f"ALTER TABLE {staging} RENAME TO {table}")
        return
    con.execute(f"DELETE FROM {table} WHERE Date >= ?", [since])
    con.execute(f"INSERT INTO {table} SELECT * FROM {staging}")
    con.execute(f"DROP TABLE {staging}")


def record_build(con: duckdb.DuckDBPyConnection, state: BuildState) -> None:
    con.execute(BUILDS_DDL)
    con.execute("INSERT OR REPLACE INTO feature_builds VALUES (?, ?, ?, ?, ?, ?, ?, ?)", list(state.__dict__.values()))


def restore_manifest_file(state: BuildState, path: Path) -> bool:
    """Make ``path`` hold the manifest of the build record; True when it had to be written.

    The warehouse record is the manifest's home: a JSON file lost by moving the warehouse or changing
    ``features.manifest_dir`` is rewritten from it. A file that disagrees with the record is never
    overwritten, since something edited it: the error says how to recover.
    """
    recorded = FeatureManifest.from_json(state.manifest)
    if recorded.sha256 != state.manifest_sha256:
        raise ManifestError(
            f"the feature_builds record of {state.table_name} holds a manifest hashing to {recorded.sha256}, not its "
            f"recorded {state.manifest_sha256}: the warehouse was edited; drop the table to rebuild it"
        )
    if not path.exists():
        recorded.write(path)
        return True
    recovery = f"delete {path} and run build-features again: it is rewritten from the warehouse record of " + (
        state.table_name
    )
    try:
        on_disk = FeatureManifest.read(path)
    except ManifestError as exc:
        raise ManifestError(f"{exc}; {recovery}") from None
    if on_disk.sha256 != state.manifest_sha256:
        raise ManifestError(
            f"feature manifest {path} has sha256 {on_disk.sha256}, but the warehouse record of {state.table_name} "
            f"has {state.manifest_sha256}; {recovery}"
        )
    return False
