"""Ingest: read a source, validate every chunk, and merge it into the warehouse in one transaction.

Either the whole run lands (quotes, listings, oracle, quarantined rows and its log entry) or nothing
does. Each attempt is logged as ``started`` before its data transaction and given its end state after it:
a failed run is still recorded after the rollback, and a killed one is marked ``interrupted`` by the next.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd

from atft.calendar import TradingCalendar
from atft.config import PipelineConfig
from atft.health import check_jumps
from atft.sources import build_source
from atft.sources.base import MarketSource, QuoteChunk
from atft.warehouse import IngestLogEntry, MergeCounts, Warehouse
from schemas.raw_quotes import ValidatedChunk, raw_quotes_schema, validate_quotes

logger = logging.getLogger(__name__)
_MESSAGE_LIMIT = 4000  # characters of an error kept in the ingest log
_JUMPS_SHOWN = 5


class IngestAborted(RuntimeError):
    """The ingest refused its input under the validation policy; nothing was written."""


@dataclass(frozen=True)
class IngestReport:
    """What one ingest did. ``status`` is ``succeeded`` or ``up_to_date`` (nothing left to fetch)."""

    run_id: str
    config: str
    source: str
    warehouse: str
    status: str
    start: date | None
    end: date | None
    first_date: date | None
    last_date: date | None
    codes: int
    rows_received: int
    rows_inserted: int
    rows_updated: int
    rows_unchanged: int
    rows_rejected: int
    listed_inserted: int
    listed_updated: int
    content_hash: str
    duration_s: float
    rejected_by_rule: dict[str, int] = field(default_factory=dict)
    rejected_examples: list[str] = field(default_factory=list)
    # One-way day-over-day jumps among the received rows: kept, and shown for a person to judge.
    jumps: list[dict[str, object]] = field(default_factory=list)
    bad_ticks_withdrawn: int = 0  # rows stored by an earlier ingest, found to be bad ticks once their next day came

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def summary(self) -> str:
        window = f"{self.start or 'beginning'} .. {self.end or 'end of data'}"
        lines = [
            f"ingest {self.config} ({self.source}) into {self.warehouse}: {self.status} in {self.duration_s:.1f} s",
            f"  window     {window}; received {self.rows_received:,} rows for {self.codes:,} codes"
            + (f", {self.first_date} .. {self.last_date}" if self.first_date else ""),
            f"  raw_quotes inserted {self.rows_inserted:,}, updated {self.rows_updated:,}, "
            f"unchanged {self.rows_unchanged:,}, rejected {self.rows_rejected:,}",
            f"  listed     inserted {self.listed_inserted:,}, updated {self.listed_updated:,}",
            f"  content    sha256 {self.content_hash[:16]}… (run {self.run_id})",
        ]
        if self.rejected_by_rule:
            by_rule = ", ".join(f"{rule} {n}" for rule, n in sorted(self.rejected_by_rule.items()))
            lines.append(f"  quarantined by rule: {by_rule}")
            lines.extend(f"    - {example}" for example in self.rejected_examples)
        if self.bad_ticks_withdrawn:
            lines.append(f"  withdrawn  {self.bad_ticks_withdrawn} earlier stored row(s) now seen to be bad ticks")
        if self.jumps:
            lines.append(f"  health     {len(self.jumps)} one-way jump(s) flagged and kept:")
            lines.extend(f"    - {_jump_line(j)}" for j in self.jumps[:_JUMPS_SHOWN])
            if len(self.jumps) > _JUMPS_SHOWN:
                lines.append(f"    - and {len(self.jumps) - _JUMPS_SHOWN} more")
        return "\n".join(lines)


def ingest(
    config: PipelineConfig,
    *,
    start: date | None = None,
    end: date | None = None,
    warehouse: str | Path | None = None,
    source: MarketSource | None = None,
    run_id: str | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> IngestReport:
    """Ingest quotes with ``start <= Date <= end`` into the warehouse.

    Without ``start`` the run is incremental: it starts at the last trading day already ingested (re-reading
    it picks up late corrections), or at the source's own start for an empty warehouse. ``source`` replaces
    the configured one (tests, or a J-Quants source with credentials resolved by the caller).
    """
    began = time.perf_counter()
    started_at = _now_utc()
    run_id = run_id or uuid.uuid4().hex[:12]
    progress = on_progress or logger.info
    calendar = TradingCalendar(config.calendar)
    source = source or build_source(config.source, calendar)
    path = Path(warehouse) if warehouse is not None else config.warehouse.path
    with Warehouse.of(config.warehouse, path) as wh:
        # Holding the write lock, no other ingest can be running: an attempt still `started` was killed.
        for dead in wh.mark_interrupted(by=run_id):
            progress(f"ingest run {dead.run_id} started at {dead.started_at} never finished: marked interrupted")
        start, end = _resolve_window(wh, source, start, end)
        log = _LogContext(run_id, config.name, source.name, start, end, started_at)
        if start is not None and end is not None and start > end:
            progress(f"warehouse {path} is up to date (last trading day {wh.last_quote_date()})")
            report = _report(log, wh, path, "up_to_date", began, rows=(0, 0, None, None), merged=MergeCounts(0, 0, 0))
            wh.write_log(log.entry("up_to_date", report))
            return report
        progress(f"ingest {config.name}: {source.name} {start or 'beginning'} .. {end or 'end of data'} into {path}")
        wh.write_log(log.started())  # committed on its own, so that a kill during the load leaves a trace
        try:
            with wh.transaction():
                report = _load(config, wh, source, calendar, log, path, began, progress)
                wh.write_log(log.entry("succeeded", report))
        except Exception as exc:
            wh.write_log(log.failure(exc))
            raise
    progress(report.summary())
    return report


@dataclass(frozen=True)
class _LogContext:
    run_id: str
    config: str
    source: str
    start: date | None
    end: date | None
    started_at: datetime

    def entry(self, status: str, report: IngestReport) -> IngestLogEntry:
        return IngestLogEntry(
            run_id=self.run_id, config=self.config, source=self.source, start_date=self.start, end_date=self.end,
            rows_received=report.rows_received, rows_inserted=report.rows_inserted, rows_updated=report.rows_updated,
            rows_unchanged=report.rows_unchanged, rows_rejected=report.rows_rejected,
            content_hash=report.content_hash, status=status, message=None, started_at=self.started_at,
            finished_at=_now_utc(),
        )  # fmt: skip

    def started(self) -> IngestLogEntry:
        return IngestLogEntry(
            run_id=self.run_id, config=self.config, source=self.source, start_date=self.start, end_date=self.end,
            rows_received=0, rows_inserted=0, rows_updated=0, rows_unchanged=0, rows_rejected=0, content_hash=None,
            status="started", message=None, started_at=self.started_at, finished_at=None,
        )  # fmt: skip

    def failure(self, exc: Exception) -> IngestLogEntry:
        return IngestLogEntry(
            run_id=self.run_id, config=self.config, source=self.source, start_date=self.start, end_date=self.end,
            rows_received=0, rows_inserted=0, rows_updated=0, rows_unchanged=0, rows_rejected=0, content_hash=None,
            status="failed", message=f"{type(exc).__name__}: {exc}"[:_MESSAGE_LIMIT], started_at=self.started_at,
            finished_at=_now_utc(),
        )  # fmt: skip


def _resolve_window(
    wh: Warehouse, source: MarketSource, start: date | None, end: date | None
) -> tuple[date | None, date | None]:
    default_start, default_end = source.default_window()
    if start is None:
        start = wh.last_quote_date() or default_start
    return start, end if end is not None else default_end


def _load(
    config: PipelineConfig,
    wh: Warehouse,
    source: MarketSource,
    calendar: TradingCalendar,
    log: _LogContext,
    path: Path,
    began: float,
    progress: Callable[[str], None],
) -> IngestReport:
    schema = raw_quotes_schema(
        calendar.sessions(calendar.first_session, calendar.last_session), calendar.name, config.universe.code_pattern
    )
    wh.create_staging()
    received = 0
    rejected: list[pd.DataFrame] = []
    for chunk in source.quote_chunks(log.start, log.end):
        chunk = _restrict(chunk, config.universe.codes)
        received += len(chunk.frame)
        checked = validate_quotes(chunk.frame, chunk.origin, schema, chunk.file_columns)
        _apply_row_policy(config, chunk, checked)
        if len(checked.rejected):
            rejected.append(checked.rejected.assign(origin=chunk.origin))
        wh.stage_quotes(checked.valid, chunk.origin)
        if chunk.oracle is not None:
            wh.stage_oracle(chunk.oracle)
        progress(f"{chunk.origin}: {len(checked.valid):,} rows staged, {len(checked.rejected):,} quarantined")
    quarantined = pd.concat(rejected, ignore_index=True) if rejected else None
    duplicates = wh.staged_duplicates(also=quarantined)
    if duplicates:
        shown = ", ".join(f"{code} {day} ({n} times)" for code, day, n in duplicates)
        raise IngestAborted(f"duplicate (Code, Date) keys across the source's files or pages: {shown}")
    jumps = config.validation.jumps
    health = check_jumps(wh.staged_neighbourhood(), jumps.price, jumps.volume)
    withdrawn = 0
    if len(health.bad_ticks):
        if config.validation.row_anomalies == "abort":
            raise IngestAborted(
                f"{len(health.bad_ticks)} suspected bad tick(s) and validation.row_anomalies is 'abort'; nothing was "
                f"written. {_examples(health.bad_ticks)}"
            )
        withdrawn = wh.withdraw(health.bad_ticks[["Code", "Date"]])
        quarantined = pd.concat([q for q in (quarantined, health.bad_ticks) if q is not None], ignore_index=True)
    n_rejected = 0 if quarantined is None else len(quarantined)
    if received and n_rejected / received > config.validation.max_rejected_fraction:
        raise IngestAborted(
            f"{n_rejected:,} of {received:,} rows ({n_rejected / received:.1%}) failed row checks, above "
            f"validation.max_rejected_fraction={config.validation.max_rejected_fraction}; nothing was written. "
            f"First reasons: {_examples(quarantined)}"
        )
    rows = wh.staged_summary()
    merged = wh.merge_staged_quotes()
    wh.merge_staged_oracle()
    # Listings as of the latest day the warehouse knows: re-ingesting an old window must not reopen delistings.
    listed = source.listed_info(max(d for d in (log.end, wh.last_quote_date(), date.today()) if d is not None))
    if listed is not None:
        listed = _listed_in_universe(_restrict_frame(listed, config.universe.codes), config, progress)
    listed_counts = wh.merge_listed_info(listed) if listed is not None else None
    if quarantined is not None:
        wh.quarantine(quarantined, log.run_id)
    report = _report(log, wh, path, "succeeded", began, rows, merged, listed_counts, quarantined)
    return replace(report, jumps=health.jumps, bad_ticks_withdrawn=withdrawn)


def _apply_row_policy(config: PipelineConfig, chunk: QuoteChunk, checked: ValidatedChunk) -> None:
    if len(checked.rejected) and config.validation.row_anomalies == "abort":
        raise IngestAborted(
            f"{chunk.origin}: {len(checked.rejected)} row(s) failed row checks and validation.row_anomalies is "
            f"'abort'; nothing was written. {_examples(checked.rejected)}"
        )


def _restrict(chunk: QuoteChunk, codes: list[str] | None) -> QuoteChunk:
    if codes is None:
        return chunk
    oracle = None if chunk.oracle is None else _restrict_frame(chunk.oracle, codes)
    return replace(chunk, frame=_restrict_frame(chunk.frame, codes), oracle=oracle)


def _restrict_frame(frame: pd.DataFrame, codes: list[str] | None) -> pd.DataFrame:
    return frame if codes is None else frame[frame["Code"].isin(codes)]


def _listed_in_universe(listed: pd.DataFrame, config: PipelineConfig, progress: Callable[[str], None]) -> pd.DataFrame:
    """Listings whose code matches ``universe.code_pattern``; the others' quotes are quarantined as code_format."""
    inside = listed["Code"].astype(str).str.fullmatch(config.universe.code_pattern)
    if not inside.all():
        odd = listed.loc[~inside, "Code"]
        progress(
            f"listed_info: {len(odd)} record(s) not stored, their code does not match universe.code_pattern "
            f"{config.universe.code_pattern!r}: {', '.join(map(repr, odd.head(_JUMPS_SHOWN)))}"
        )
    return listed[inside]


def _example_lines(rejected: pd.DataFrame | None, n: int = 5) -> list[str]:
    if rejected is None:
        return []
    return [f"row {r.source_row} ({r.Code} {_day(r.Date)}): {r.reason}" for r in rejected.head(n).itertuples()]


def _examples(rejected: pd.DataFrame | None, n: int = 5) -> str:
    more = 0 if rejected is None else len(rejected) - n
    return "; ".join(_example_lines(rejected, n)) + (f"; and {more:,} more" if more > 0 else "")


def _jump_line(jump: dict[str, object]) -> str:
    return f"{jump['Code']} {jump['Date']} {jump['column']} {jump['before']:g} -> {jump['value']:g} ({jump['move']})"


def _day(value: object) -> str:
    return "no date" if pd.isna(value) else str(pd.Timestamp(value).date())


def _report(
    log: _LogContext,
    wh: Warehouse,
    path: Path,
    status: str,
    began: float,
    rows: tuple[int, int, date | None, date | None],
    merged: MergeCounts,
    listed: MergeCounts | None = None,
    quarantined: pd.DataFrame | None = None,
) -> IngestReport:
    n_rows, codes, first, last = rows
    by_rule: Counter[str] = Counter()
    if quarantined is not None:
        for rules in quarantined["rule"]:
            by_rule.update(rules.split(","))
    n_rejected = 0 if quarantined is None else len(quarantined)
    return IngestReport(
        run_id=log.run_id, config=log.config, source=log.source, warehouse=str(path), status=status,
        start=log.start, end=log.end, first_date=first, last_date=last, codes=codes,
        rows_received=n_rows + n_rejected, rows_inserted=merged.inserted, rows_updated=merged.updated,
        rows_unchanged=merged.unchanged, rows_rejected=n_rejected,
        listed_inserted=listed.inserted if listed else 0, listed_updated=listed.updated if listed else 0,
        content_hash=wh.fingerprint("raw_quotes"), duration_s=time.perf_counter() - began,
        rejected_by_rule=dict(by_rule),
        rejected_examples=_example_lines(quarantined),
    )  # fmt: skip


def _now_utc() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
