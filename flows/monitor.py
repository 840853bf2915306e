"""The ``monitor`` flow: the champion's daily predictions judged against realised returns, once their labels are in.

    from flows.monitor import monitor
    state = monitor(config="deployments/demo.yaml", as_of=date(2024, 12, 27), return_state=True)

Run daily after ``score``. The feature table is brought up to date (its labels fill in as quotes arrive); every
stored prediction whose label has ended by ``as_of`` gets its row in the warehouse's ``performance`` table (realised
IC, RankIC, hit rate and long-short return; :mod:`atft.monitoring`). Then the champion's last ``monitor.window``
judged days are compared with ``monitor.rank_ic_bound`` and with its own evaluation window. The end state says
what was found: ``Healthy``, ``WarmingUp`` (too few judged days to conclude), ``Skipped`` (nothing published), or
``Degraded``, which also emits the event ``atft.champion.degraded``; the automation declared with the deployments
(prefect.yaml) reacts to it.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict
from datetime import date

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_image_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.runtime import flow_run
from prefect.states import Completed, State

from atft.charts import data_url, rolling_rank_ic
from atft.monitoring import RollingCheck, read_performance, realised_performance, rolling_check, write_performance
from atft.registry import Registry
from flows.cli import Command, alias_main, run_flow
from flows.features import build_features
from flows.naming import config_stem
from flows.references import FeatureRef, Overrides, RunConfig, resolve

DEGRADED_EVENT = "atft.champion.degraded"
_STATES = {"healthy": "Healthy", "degraded": "Degraded", "warming_up": "WarmingUp"}


@task(name="record-performance", cache_policy=NO_CACHE)
def record_performance(config: RunConfig, features: FeatureRef, as_of: date) -> int:
    """Judge every stored prediction whose label has arrived by ``as_of``; returns the rows written."""
    settings = config.settings
    with config.warehouse() as wh:
        rows = realised_performance(wh.con, features.table, list(settings.features.horizons),
                                    settings.features.execution_lag, as_of, settings.evaluation.portfolio)  # fmt: skip
    with config.warehouse(read_only=False) as wh:
        return write_performance(wh, rows)


@task(name="check-champion-performance", cache_policy=NO_CACHE)
def check_champion_performance(config: RunConfig, as_of: date) -> RollingCheck | None:
    """The champion's rolling realised record on ``as_of``; None when nothing is published."""
    settings = config.settings
    registry = Registry(settings.registry.path)
    champion = registry.champion().champion
    if champion is None:
        return None
    horizon = settings.monitor.horizon or settings.train.primary_horizon
    evaluated = registry.show(champion).metrics.get(f"rank_ic_{horizon}d")
    with config.warehouse() as wh:
        return rolling_check(wh.con, champion, as_of, settings.monitor, horizon, evaluated)


@task(name="draw-monitor", cache_policy=NO_CACHE)
def draw_monitor(config: RunConfig, check: RollingCheck) -> str:
    """The champion's daily realised RankIC, its rolling mean against the bound, as a PNG under
    ``<train.staging_dir>/monitor/`` and an image artifact; returns the path."""
    with config.warehouse() as wh:
        daily = read_performance(wh.con, check.version, check.horizon, check.as_of, last=5 * check.window)
    image = rolling_rank_ic(
        daily.set_index("Date")["rank_ic"], check.window, check.bound, check.evaluation_rank_ic,
        f"{check.version}: realised RankIC {check.horizon}d through {check.as_of}",
    )  # fmt: skip
    path = config.settings.train.staging_dir / "monitor" / f"{config.stem}-{check.as_of}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image)
    create_image_artifact(
        image_url=data_url(image),
        key=config.key("monitor", "chart"),
        description=f"Realised RankIC of {check.version}: {_STATES[check.status]} ({path})",
    )
    return str(path)


def _report(config: RunConfig, check: RollingCheck, written: int) -> None:
    create_table_artifact(
        key=config.key("monitor", "champion"),
        table=[
            {"item": "champion", "value": check.version},
            {"item": "status", "value": _STATES[check.status]},
            {"item": f"realised RankIC {check.horizon}d (rolling)", "value": _number(check.rank_ic)},
            {"item": "realised IC (rolling)", "value": _number(check.ic)},
            {"item": "hit rate (rolling)", "value": _number(check.hit_rate)},
            {"item": "long-short return per day (rolling, before costs)", "value": _number(check.ls_return)},
            {"item": "evaluation-window RankIC", "value": _number(check.evaluation_rank_ic)},
            {"item": "bound", "value": check.bound},
            {"item": "judged days", "value": f"{check.days} of {check.window} ({check.first}..{check.last})"},
            {"item": "performance rows written", "value": written},
        ],
        description=f"Monitor {check.as_of}: {_STATES[check.status]}",
    )


def _number(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 6)  # NaN is not JSON


def _json(value: object) -> object:
    if isinstance(value, float):
        return _number(value)
    return str(value) if isinstance(value, date) else value


def _run_name() -> str:
    return f"monitor-{config_stem()}-{flow_run.parameters.get('as_of') or 'latest'}"


@flow(name="monitor", flow_run_name=_run_name)
def monitor(config: str | RunConfig = "deployments/demo.yaml", as_of: date | None = None,
            warehouse: str | None = None, overrides: Overrides = None) -> State:  # fmt: skip
    """Judge the predictions whose labels have arrived by ``as_of`` (default: the feature table's last day) and check
    the champion's rolling realised RankIC; ``Degraded`` emits ``atft.champion.degraded``."""
    logger = get_run_logger()
    config = resolve(config, warehouse, overrides)
    features = build_features(config=config, as_of=as_of)
    day = as_of or features.through
    written = record_performance(config, features, day)
    check = check_champion_performance(config, day)
    if check is None:
        message = f"nothing published in {config.settings.registry.path}: no champion to monitor"
        logger.info(message)
        return Completed(name="Skipped", message=message)
    _report(config, check, written)
    draw_monitor(config, check)
    logger.info("%d performance rows written; %s", written, check.reason())
    if check.status == "degraded":
        emit_event(
            event=DEGRADED_EVENT,
            resource={"prefect.resource.id": f"atft.pipeline.{config.settings.name}",
                      "prefect.resource.name": config.settings.name, "atft.champion": check.version},
            payload={k: _json(v) for k, v in asdict(check).items()},
        )  # fmt: skip
        logger.warning("champion degraded: %s; emitted %s", check.reason(), DEGRADED_EVENT)
    return Completed(name=_STATES[check.status], message=check.reason(), data=check)


def _monitor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--as-of", type=date.fromisoformat, help="day of the check (default: the feature table's last)")


def _run(config: RunConfig, args: argparse.Namespace) -> int:
    return run_flow(monitor, config=config, as_of=args.as_of)[1]


COMMAND = Command(
    "monitor", "Judge the stored predictions against realised returns and check the champion (no server needed).",
    "atft monitor --config deployments/demo.yaml --as-of 2024-12-27", _run, _monitor_arguments,
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return alias_main(COMMAND, argv)


if __name__ == "__main__":
    sys.exit(main())
