"""The ``replay-days`` flow: the daily loop over past sessions, one ``score`` and one ``monitor`` per day, in order.

    from flows.replay import replay_days
    replay_days(config="deployments/demo.yaml", start=date(2024, 12, 2), end=date(2024, 12, 27))

What the schedules do day after day, replayed over days the warehouse already holds, so the loop can be watched on the
demo market. Against a Prefect server with the deployments (``atft serve``), a ``Degraded`` day's event starts
``rolling-retrain`` through its automation, exactly as it would live; without one, the events go nowhere and the
replay just scores and judges. A failed score or monitor fails the replay on that day.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State

from atft.calendar import TradingCalendar
from flows.cli import Command, alias_main, run_flow
from flows.monitor import monitor
from flows.naming import config_stem
from flows.references import Overrides, RunConfig, resolve
from flows.score import score


def _run_name() -> str:
    return f"replay-{config_stem()}-{flow_run.parameters.get('start')}..{flow_run.parameters.get('end')}"


@flow(name="replay-days", flow_run_name=_run_name)
def replay_days(
    config: str | RunConfig, start: date, end: date, warehouse: str | None = None, overrides: Overrides = None
) -> State:
    """Score, then monitor, every session from ``start`` to ``end``; ends with how many days were healthy, warming
    up, degraded or skipped."""
    logger = get_run_logger()
    config = resolve(config, warehouse, overrides)
    days = [d.date() for d in TradingCalendar(config.settings.calendar).sessions(start, end)]
    if not days:
        return Completed(name="Skipped", message=f"no {config.settings.calendar} session in {start}..{end}")
    rows = []
    for i, day in enumerate(days, 1):
        scored = score(config=config, as_of=day, return_state=True)
        if not scored.is_completed():
            return Failed(message=f"score of {day} failed: {scored.message}")
        judged = monitor(config=config, as_of=day, return_state=True)
        if not judged.is_completed():
            return Failed(message=f"monitor of {day} failed: {judged.message}")
        rows.append({"day": str(day), "stocks": scored.result().stocks, "monitor": judged.name,
                     "finding": judged.message})  # fmt: skip
        logger.info("%s (%d of %d): %d stocks scored; %s: %s", day, i, len(days), rows[-1]["stocks"], judged.name,
                    judged.message)  # fmt: skip
    create_table_artifact(key=config.key("replay", "days"), table=rows,
                          description=f"Replayed {days[0]}..{days[-1]}: score and monitor per day")  # fmt: skip
    counts = {name: sum(r["monitor"] == name for r in rows) for name in dict.fromkeys(r["monitor"] for r in rows)}
    summary = ", ".join(f"{name} {n}" for name, n in counts.items())
    return Completed(message=f"{len(days)} days replayed, {days[0]}..{days[-1]}: {summary}", data=rows)


def _replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--start", type=date.fromisoformat, required=True, help="first day to score and monitor")
    parser.add_argument("--end", type=date.fromisoformat, required=True, help="last day")


def _run(config: RunConfig, args: argparse.Namespace) -> int:
    return run_flow(replay_days, config=config, start=args.start, end=args.end)[1]


COMMAND = Command(
    "replay", "Replay the daily loop (score, then monitor) over past sessions (no server needed).",
    "atft replay --config deployments/demo.yaml --start 2024-12-02 --end 2024-12-27", _run, _replay_arguments,
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return alias_main(COMMAND, argv)


if __name__ == "__main__":
    sys.exit(main())
