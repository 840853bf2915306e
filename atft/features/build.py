"""Build the feature table of a pipeline config, or bring it up to date.

- **full**: the table does not exist yet, or the raw history it was built from has changed since.
- **incremental**: otherwise. Only the days whose values can change are rewritten: the new days, and the
  last ``execution_lag + max horizon`` days before them, whose targets gain data. Features of those days need
  ``max lookback`` sessions of history, and that is all that is loaded. The result equals a full build
  bit for bit, because every kernel's value at day t depends only on its window.
- **up_to_date**: the table already covers the raw data.

Rows are validated and staged chunk by chunk, then published in one transaction together with the build
record, so a failed build leaves the previous table exactly as it was. The synthetic oracle is never read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from atft.calendar import TradingCalendar
from atft.config import FeaturesConfig, PipelineConfig
from atft.features.catalogue import FEATURE_CODE_VERSION, FeatureDef, compute_features, definitions
from atft.features.cross_section import cs_zscore, fill_missing
from atft.features.panel import MarketPanel, load_panel
from atft.features.store import (
    BuildState,
    build_state,
    history_fingerprint,
    record_build,
    restore_manifest_file,
    stage_rows,
    staging_table,
    swap_in,
)
from atft.features.targets import forward_returns, target_names
from atft.warehouse import Warehouse
from schemas.feature_table import FeatureValidationReport, validate_feature_table
from schemas.manifest import CSZSettings, FeatureColumn, FeatureManifest

logger = logging.getLogger(__name__)
_CHUNK_DAYS = 250  # days converted to rows and written at a time: bounds the row-format copy
# Each row's count of the stock's rows so far: validation judges missing values only past each input's lookback.
_HISTORY = """
    SELECT Code, Date, history FROM (
        SELECT Code, Date, CAST(row_number() OVER (PARTITION BY Code ORDER BY Date) AS INTEGER) AS history
        FROM raw_quotes WHERE Date <= ?)
    WHERE Date >= ?
"""


class FeatureBuildError(RuntimeError):
    """The features cannot be built: no raw data, or data that disagrees with the manifest."""


@dataclass(frozen=True)
class FeatureBuild:
    """What a build did, and where its result is: a reference, not data."""

    table: str
    manifest_sha256: str
    manifest_path: str
    mode: str
    since: date | None
    through: date
    rows_written: int
    rows_total: int
    width: int
    groups: dict[str, int]
    seconds: float
    validation: list[dict[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        groups = ", ".join(f"{g} {n}" for g, n in self.groups.items())
        since = f" from {self.since}" if self.since else ""
        return (
            f"features {self.table}: {self.mode}{since} through {self.through} in {self.seconds:.1f} s; "
            f"{self.rows_written:,} rows written, {self.rows_total:,} in the table\n"
            f"  {self.width} inputs ({groups}); manifest sha256 {self.manifest_sha256[:16]}… at {self.manifest_path}"
        )


def feature_manifest(settings: FeaturesConfig, sectors: bool) -> FeatureManifest:
    """The contract a build with these settings produces: ordered inputs, targets and CS-Z settings."""
    defs = definitions(sectors)
    features = [FeatureColumn(d.name, "float32", d.group, d.lookback) for d in defs]
    features += [FeatureColumn(f"{d.name}_cs_z", "float32", "cs_z", d.lookback) for d in _csz_defs(defs, settings)]
    returns, returns_z, valid = target_names(settings.horizons)
    targets = [FeatureColumn(name, "float32", "target", 0) for name in (*returns, *returns_z)]
    targets += [FeatureColumn(name, "bool", "target", 0) for name in valid]
    cs_z = settings.cs_z
    return FeatureManifest(
        features=tuple(features),
        targets=tuple(targets),
        cs_z=CSZSettings(clip=cs_z.clip, min_stocks=cs_z.min_stocks, min_std=cs_z.min_std, ddof=1, fill=cs_z.fill),
        code_version=FEATURE_CODE_VERSION,
        execution_lag=settings.execution_lag,
    )


def _csz_defs(defs: list[FeatureDef], settings: FeaturesConfig) -> list[FeatureDef]:
    return [d for d in defs if d.group in settings.cs_z.groups]


def build_features(
    config: PipelineConfig,
    *,
    as_of: date | None = None,
    warehouse: str | Path | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> FeatureBuild:
    """Build or update the feature table from ``raw_quotes`` up to ``as_of`` (default: the last ingested day)."""
    began = time.perf_counter()
    progress = on_progress or logger.info
    calendar = TradingCalendar(config.calendar)
    settings = config.features
    path = Path(warehouse) if warehouse is not None else config.warehouse.path
    with Warehouse.of(config.warehouse, path) as wh:
        con = wh.con
        first_raw, end = con.execute(
            "SELECT min(Date), max(Date) FROM raw_quotes WHERE Date <= coalesce(?, Date)", [as_of]
        ).fetchall()[0]
        if end is None:
            raise FeatureBuildError(f"no raw quotes on or before {as_of or 'today'} in {path}: run the ingest first")
        sectors = settings.sectors and _has_sectors(wh)
        manifest = feature_manifest(settings, sectors)
        table = manifest.table_name
        previous = build_state(con, table)
        if previous is not None and not wh.has_table(table):
            progress(f"features {table} are recorded as built but the table is gone: full rebuild")
            previous = None
        span = manifest.label_span(max(settings.horizons))  # the longest label's reach: the days it can gain
        since = _first_day_to_rebuild(wh, calendar, previous, first_raw, end, span)
        if since is None:
            progress(f"features {table} are up to date through {previous.built_through}")
            _restore_manifest(previous, _manifest_path(settings, manifest), progress)
            return _result(manifest, settings, previous, "up_to_date", None, 0, wh, began)
        mode = "full" if since == first_raw else "incremental"
        load_from = _sessions_before(calendar, since, manifest.warm_up - 1, first_raw)
        progress(f"features {table}: {mode} build of {since}..{end}, {manifest.width} inputs, history from {load_from}")
        history = pl.from_arrow(con.sql(_HISTORY, params=[end, since]).to_arrow_table())
        validator = _ChunkValidator(manifest, history, settings.max_nan_fraction)
        # The panel lives in the generator alone, so it is freed as soon as the last chunk is written.
        rows = _rows(load_panel(con, calendar, load_from, end, sectors), manifest, settings, sectors, since, progress)
        written = stage_rows(con, manifest, validator(rows))
        report = validator.report()
        progress(f"validated {report.checked_rows:,} rows in {report.seconds:.1f} s")
        state = _publish(wh, config, manifest, since, end, full=mode == "full")
        return _result(manifest, settings, state, mode, since, written, wh, began, report.rows())


def _publish(
    wh: Warehouse, config: PipelineConfig, manifest: FeatureManifest, since: date, end: date, full: bool
) -> BuildState:
    """Swap the staged rows in and record the build, in one transaction; the staging table goes either way."""
    try:
        with wh.transaction():
            swap_in(wh.con, manifest, since, full)
            state = BuildState(
                table_name=manifest.table_name,
                manifest_sha256=manifest.sha256,
                config=config.name,
                built_through=end,
                history_fingerprint=history_fingerprint(wh, end),
                rows=wh.row_count(manifest.table_name),
                manifest=manifest.to_json(),
                updated_at=datetime.now(UTC).replace(tzinfo=None),
            )
            record_build(wh.con, state)
            path = _manifest_path(config.features, manifest)
            path.parent.mkdir(parents=True, exist_ok=True)
            manifest.write(path)
    finally:
        # Already renamed or dropped after a successful swap; after a failure, the partial build goes.
        wh.con.execute(f"DROP TABLE IF EXISTS {staging_table(manifest)}")
    return state


class _ChunkValidator:
    """Validates each chunk before it is written, and keeps the combined report.

    Chunks hold whole dates, so the per-date CS-Z checks see complete cross-sections; validating chunk by
    chunk keeps one chunk in memory instead of reading the whole new table back.
    """

    def __init__(self, manifest: FeatureManifest, history: pl.DataFrame, max_nan_fraction: float) -> None:
        self._manifest, self._history, self._max_nan = manifest, history, max_nan_fraction
        self._rows, self._columns, self._seconds = 0, 0, 0.0

    def __call__(self, chunks: Iterator[pa.Table]) -> Iterator[pa.Table]:
        for chunk in chunks:
            report = validate_feature_table(
                pl.from_arrow(chunk), self._manifest, history=self._history, max_nan_fraction=self._max_nan
            )
            self._rows += report.checked_rows
            self._columns, self._seconds = report.checked_columns, self._seconds + report.seconds
            yield chunk

    def report(self) -> FeatureValidationReport:
        return FeatureValidationReport(self._manifest.sha256, self._rows, self._columns, self._seconds)


def _has_sectors(wh: Warehouse) -> bool:
    return wh.con.execute("SELECT count(*) FROM listed_info WHERE Sector17Code IS NOT NULL").fetchall()[0][0] > 0


def _first_day_to_rebuild(
    wh: Warehouse, calendar: TradingCalendar, previous: BuildState | None, first_raw: date, end: date, span: int
) -> date | None:
    """The first day whose rows can differ from the table's; None when nothing can. ``span``: sessions from a day to
    the end of its longest target (execution lag + longest horizon)."""
    if previous is None:
        return first_raw
    built = previous.built_through
    if history_fingerprint(wh, built) != previous.history_fingerprint:
        logger.info("raw history through %s changed since the last build: full rebuild", built)
        return first_raw
    if end <= built:
        return None
    # Targets look `span` sessions ahead of each row, up to the stock's last row. A stock that trades again
    # after the last build extends from its last row before it, which is the build day or, after a halt, earlier.
    resumed = wh.con.execute(
        "SELECT min(last_before) FROM (SELECT max(Date) FILTER (Date <= ?) AS last_before FROM raw_quotes "
        "WHERE Date <= ? GROUP BY Code HAVING max(Date) > ?)",
        [built, end, built],
    ).fetchall()[0][0]
    anchor = min(built, resumed) if resumed is not None else built
    return _sessions_before(calendar, anchor, span, first_raw)


def _sessions_before(calendar: TradingCalendar, day: date, n: int, floor: date) -> date:
    """The session ``n`` sessions before ``day``, but not before ``floor``."""
    sessions = calendar.sessions(floor, day)
    return sessions[max(0, len(sessions) - 1 - n)].date()


def _rows(
    panel: MarketPanel,
    manifest: FeatureManifest,
    settings: FeaturesConfig,
    sectors: bool,
    since: date,
    progress: Callable[[str], None],
) -> Iterator[pa.Table]:
    """Feature table rows for days >= ``since``, as Arrow chunks in manifest column order."""
    started = time.perf_counter()
    computed = compute_features(panel, sectors)
    expected = [c.name for c in manifest.features if c.group != "cs_z"]
    if [d.name for d in computed.defs] != expected:
        raise FeatureBuildError(f"computed features {[d.name for d in computed.defs]} differ from the manifest's")
    base = computed.block()
    csz_index = [i for i, d in enumerate(computed.defs) if d.group in settings.cs_z.groups]
    cs = settings.cs_z
    zscore = {"clip": cs.clip, "min_stocks": cs.min_stocks, "min_std": cs.min_std}
    base_z = fill_missing(cs_zscore(np.ascontiguousarray(base[:, :, csz_index]), **zscore), cs.fill)
    targets = forward_returns(panel, settings.horizons, manifest.execution_lag)
    targets_z = cs_zscore(targets, **zscore)
    progress(f"computed {base.shape[2]} base + {len(csz_index)} CS-Z features in {time.perf_counter() - started:.1f} s")
    names = [c.name for c in (*manifest.features, *manifest.targets)]
    first = int(np.searchsorted(panel.dates.to_numpy(), np.datetime64(since, "ns")))
    present = panel.present.T
    for d0 in range(first, len(panel.dates), _CHUNK_DAYS):
        day, stock = np.nonzero(present[d0 : d0 + _CHUNK_DAYS])
        day += d0
        columns = [
            pa.array(panel.codes[stock].astype(str)),
            pa.array(panel.dates.to_numpy()[day].astype("datetime64[D]")),
        ]
        # Missing is NULL in the warehouse (from_pandas turns NaN into NULL), as in every other table.
        for block in (base, base_z, targets, targets_z):
            columns += [pa.array(block[day, stock, j], from_pandas=True) for j in range(block.shape[2])]
        columns += [pa.array(~np.isnan(targets[day, stock, j])) for j in range(targets.shape[2])]
        yield pa.Table.from_arrays(columns, names=[*manifest.keys, *names])


def still_current(warehouse: str | Path, build: FeatureBuild, on_progress: Callable[[str], None] | None = None) -> bool:
    """Whether a build result (say, a cached one) still describes the warehouse: its table exists, its record
    has the same last day and rows, and its manifest file is in place (rewritten from the record if lost)."""
    with Warehouse(warehouse, read_only=True) as wh:
        state = build_state(wh.con, build.table) if wh.has_table(build.table) else None
    if state is None or (state.built_through, state.rows) != (build.through, build.rows_total):
        return False
    _restore_manifest(state, Path(build.manifest_path), on_progress or logger.info)
    return True


def _restore_manifest(state: BuildState, path: Path, progress: Callable[[str], None]) -> None:
    if restore_manifest_file(state, path):
        progress(f"feature manifest {path} was missing: rewritten from the warehouse record of {state.table_name}")


def _manifest_path(settings: FeaturesConfig, manifest: FeatureManifest) -> Path:
    return settings.manifest_dir / f"{manifest.table_name}.json"


def _result(
    manifest: FeatureManifest,
    settings: FeaturesConfig,
    state: BuildState,
    mode: str,
    since: date | None,
    written: int,
    wh: Warehouse,
    began: float,
    validation: list[dict[str, str]] | None = None,
) -> FeatureBuild:
    groups: dict[str, int] = {}
    for column in manifest.features:
        groups[column.group] = groups.get(column.group, 0) + 1
    return FeatureBuild(
        table=manifest.table_name,
        manifest_sha256=manifest.sha256,
        manifest_path=str(_manifest_path(settings, manifest)),
        mode=mode,
        since=since,
        through=state.built_through,
        rows_written=written,
        rows_total=wh.row_count(manifest.table_name),
        width=manifest.width,
        groups=groups,
        seconds=time.perf_counter() - began,
        validation=validation or [],
    )
