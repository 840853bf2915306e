"""The ``ingest`` flow: market data from the configured source into the DuckDB warehouse.

Runs under a Prefect deployment, or directly from Python with no server (Prefect then starts a
throwaway local API for the run):

    from flows.ingest import ingest
    ingest(config="deployments/sp500.yaml")
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from atft.calendar import TradingCalendar
from atft.config import JQuantsSourceConfig, PipelineConfig
from atft.ingest import IngestReport
from atft.ingest import ingest as run_ingest
from atft.sources.base import MarketSource, TransientSourceError
from flows.cli import Command, alias_main, run_flow
from flows.naming import named_by_config
from flows.references import Overrides, RunConfig, resolve


def _retry_transient_only(task: Any, task_run: Any, state: Any) -> bool:
    """Retry what may pass (HTTP 429/5xx, dropped connections), never bad data or bad credentials."""
    try:
        state.result()
    except TransientSourceError:
        return True
    except Exception:
        return False
    return False


def _source_with_secret(settings: PipelineConfig) -> MarketSource | None:
    """A J-Quants source whose refresh token comes from the configured Prefect Secret block, if any."""
    if not (isinstance(settings.source, JQuantsSourceConfig) and settings.source.credentials_block):
        return None
    from prefect.blocks.system import Secret

    from atft.sources.jquants import JQuantsCredentials, JQuantsSource

    token = Secret.load(settings.source.credentials_block).get()
    return JQuantsSource(settings.source, TradingCalendar(settings.calendar), JQuantsCredentials(refresh_token=token))


@task(
    name="load-market-data",
    retries=3,
    retry_delay_seconds=[30, 120, 600],
    retry_condition_fn=_retry_transient_only,
    timeout_seconds=4 * 3600,
    cache_policy=NO_CACHE,  # an ingest must always look at the source again
)
def load_market_data(config: RunConfig, start: date | None, end: date | None) -> IngestReport:
    """Validate and merge one window of quotes in a single warehouse transaction; returns the run summary."""
    settings = config.settings
    return run_ingest(
        settings,
        start=start,
        end=end,
        source=_source_with_secret(settings),
        run_id=flow_run.id,  # links the ingest log to the Prefect run; None outside a flow run
        on_progress=get_run_logger().info,
    )


def _publish_artifacts(report: IngestReport) -> None:
    key = f"ingest-{report.config}".replace("_", "-")
    create_table_artifact(
        key=key,
        description=f"Ingest of {report.config} into {report.warehouse}: {report.status}",
        table=[
            {"item": "source", "value": report.source},
            {"item": "window", "value": f"{report.start or 'beginning'} .. {report.end or 'end of data'}"},
            {"item": "dates received", "value": f"{report.first_date} .. {report.last_date}"},
            {"item": "codes", "value": report.codes},
            {"item": "rows received", "value": report.rows_received},
            {"item": "rows inserted", "value": report.rows_inserted},
            {"item": "rows updated", "value": report.rows_updated},
            {"item": "rows unchanged", "value": report.rows_unchanged},
            {"item": "rows rejected", "value": report.rows_rejected},
            {"item": "raw_quotes sha256", "value": report.content_hash},
            {"item": "warehouse", "value": report.warehouse},
        ],
    )
    if report.jumps:
        create_table_artifact(
            key=f"{key}-health",
            description=f"Data health: {len(report.jumps)} one-way day-over-day jump(s), kept in raw_quotes; "
            "check them against the news before trusting them (a jump taken back the next day is quarantined)",
            table=[{**jump, "Date": str(jump["Date"])} for jump in report.jumps],
        )
    if report.rows_rejected:
        create_table_artifact(
            key=f"{key}-quarantine",
            description=f"{report.rows_rejected} rows quarantined in rejected_rows (first examples shown)",
            table=[{"rule": rule, "rows": n} for rule, n in sorted(report.rejected_by_rule.items())]
            + [{"rule": "example", "rows": example} for example in report.rejected_examples],
        )


@flow(name="ingest", flow_run_name=named_by_config("ingest"))
def ingest(
    config: str | RunConfig = "deployments/demo.yaml",
    start: date | None = None,
    end: date | None = None,
    warehouse: str | None = None,
    overrides: Overrides = None,
) -> IngestReport:
    """Ingest ``start``..``end`` (default: since the last ingested trading day) into the configured warehouse.

    ``warehouse`` overrides the config's warehouse path. Returns the ingest summary (counts, dates, hash).
    """
    report = load_market_data(resolve(config, warehouse, overrides), start, end)
    _publish_artifacts(report)
    get_run_logger().info(
        "%s: %s rows inserted, %s updated, %s rejected; raw_quotes sha256 %s",
        report.config,
        f"{report.rows_inserted:,}",
        f"{report.rows_updated:,}",
        f"{report.rows_rejected:,}",
        report.content_hash[:16],
    )
    return report


def _ingest_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--start", type=date.fromisoformat, help="first day (default: last ingested trading day)")
    parser.add_argument("--end", type=date.fromisoformat, help="last day (default: the source's end)")


def _run(config: RunConfig, args: argparse.Namespace) -> int:
    state, code = run_flow(ingest, config=config, start=args.start, end=args.end)
    if code == 0:
        print(state.result().summary())
    return code


COMMAND = Command(
    "ingest", "Ingest market data into the warehouse (no server needed).",
    "atft ingest --config deployments/sp500.yaml --start 2018-01-02", _run, _ingest_arguments,
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return alias_main(COMMAND, argv)


if __name__ == "__main__":
    sys.exit(main())
