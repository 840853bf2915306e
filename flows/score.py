"""The ``score`` flow: the champion's daily predictions for every trading stock, written to the warehouse.

    from flows.score import score
    summary = score(config="deployments/demo.yaml")                   # the feature table's last day
    summary = score(config="deployments/demo.yaml", as_of=date(2024, 12, 27))

The feature table is brought up to date first; then the champion is checked against it: a drifted table (``code``
for ``Code``, a dropped CS-Z column) fails the run with the column diff, in the state message and in an artifact,
before anything is predicted. Then the day's inputs are compared with the champion's training days
(:mod:`atft.drift`): the artifact ``score-<config>-drift`` lists the most drifted, the run warns above
``drift.warn_psi`` and fails, naming them and writing nothing, above ``drift.fail_psi``. Rows go to the warehouse's
``predictions`` table; rescoring a day with the same version replaces them. Artifacts: the top and bottom stocks at
the primary horizon, and a summary.
"""

from __future__ import annotations

import argparse
import math
import sys
from datetime import date
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from atft.drift import input_drift
from atft.registry import CheckpointRefused, Registry
from atft.scoring import PREDICTIONS_TABLE, day_to_score, load_champion, score_day, write_predictions
from flows.cli import Command, alias_main, run_flow
from flows.features import build_features
from flows.naming import named_by_config
from flows.references import ChampionRef, Overrides, RunConfig, ScoredDay, resolve

SHOWN = 10  # stocks at each end of the day's ranking in the artifact


@task(name="check-champion", cache_policy=NO_CACHE)
def check_champion(config: RunConfig) -> ChampionRef:
    """The champion's version and feature table, once its files and the table's columns are verified."""
    try:
        with config.warehouse() as wh:
            champion = load_champion(Registry(config.settings.registry.path), wh.con)
    except CheckpointRefused as exc:
        create_markdown_artifact(
            key=config.key("score", "contract"),
            markdown=f"### Not scored: the champion was refused\n\n```\n{exc}\n```\n",
        )
        raise
    return ChampionRef(version=champion.version, table=champion.manifest.table_name)


@task(name="check-input-drift", cache_policy=NO_CACHE)
def check_input_drift(config: RunConfig, champion: ChampionRef, as_of: date | None) -> int:
    """The inputs of the day to score against the champion's training days; an artifact lists the most drifted.
    Fails the run, naming the inputs, when any is above ``drift.fail_psi``; returns how many are above
    ``drift.warn_psi``."""
    settings, logger = config.settings.drift, get_run_logger()
    registry = Registry(config.settings.registry.path)
    windows = registry.show(champion.version).metadata["windows"]
    with config.warehouse() as wh:
        day = day_to_score(wh.con, champion.table, as_of)
        report = input_drift(wh.con, registry.manifest(champion.version), date.fromisoformat(windows["train_start"]),
                             date.fromisoformat(windows["train_end"]), day, settings)  # fmt: skip
    shown = report.inputs.head(settings.shown)
    create_table_artifact(
        key=config.key("score", "drift"),
        table=[{k: _cell(v) for k, v in row.items()} for row in shown.to_dict("records")],
        description=f"Input drift on {day} against {len(report.reference_days)} of {champion.version}'s training days "
        f"(PSI above {settings.warn_psi} is listed as drifted)",
    )  # fmt: skip
    failing, drifted = report.over(settings.fail_psi), report.over(settings.warn_psi)
    if not failing.empty:
        raise InputDrift(f"{len(failing)} inputs drifted past drift.fail_psi {settings.fail_psi} on {day}: "
                         f"{report.describe(failing)}")  # fmt: skip
    if not drifted.empty:
        logger.warning("%d inputs drifted past drift.warn_psi %s on %s: %s", len(drifted), settings.warn_psi, day,
                       report.describe(drifted.head(settings.shown)))  # fmt: skip
    return len(drifted)


def _cell(value: object) -> object:
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)  # NaN is not JSON
    return value


class InputDrift(RuntimeError):
    """The scored day's inputs moved too far from the champion's training data to trust its scores."""


@task(name="score-day", cache_policy=NO_CACHE, timeout_seconds=3600)
def score_and_store(config: RunConfig, champion: ChampionRef, as_of: date | None) -> dict[str, Any]:
    """Predict the day with the checked version and replace its rows; returns a summary, not the predictions."""
    settings = config.settings
    with config.warehouse() as wh:
        checkpoint = Registry(settings.registry.path).load(champion.version, con=wh.con, table=champion.table)
        frame = score_day(wh.con, checkpoint, settings, as_of)
        last_quote = wh.last_quote_date()
    with config.warehouse(read_only=False) as wh:
        write_predictions(wh, frame)
    h = settings.train.primary_horizon
    ranked = frame.sort_values(f"rank_{h}d")
    rows = [
        {
            "end": end,
            "rank": int(row[f"rank_{h}d"]),
            "Code": row["Code"],
            f"pred_{h}d": round(float(row[f"pred_{h}d"]), 6),
        }
        for end, part in (("top", ranked.head(SHOWN)), ("bottom", ranked.iloc[max(SHOWN, len(ranked) - SHOWN) :]))
        for _, row in part.iterrows()
    ]
    return {"day": frame["Date"].iloc[0], "stocks": len(frame), "horizon": h, "ranking": rows, "last_quote": last_quote}


@flow(name="score", flow_run_name=named_by_config("score"))
def score(
    config: str | RunConfig, as_of: date | None = None, warehouse: str | None = None, overrides: Overrides = None
) -> ScoredDay:
    """Score every stock trading on ``as_of`` (default: the feature table's last day) with the champion.

    Returns the version, the day, how many stocks were scored, the feature table and the predictions table.
    """
    logger = get_run_logger()
    config = resolve(config, warehouse, overrides)
    # Today's features first (incremental, or served from the cache when the quotes have not changed).
    build_features(config=config, as_of=as_of)
    champion = check_champion(config)
    drifted = check_input_drift(config, champion, as_of)
    scored = score_and_store(config, champion, as_of)
    version, day, h = champion.version, scored["day"], scored["horizon"]
    logger.info(
        "scored %d stocks on %s with champion %s (%s); rows replaced in %s",
        scored["stocks"], day, version, champion.table, PREDICTIONS_TABLE,
    )  # fmt: skip
    for end in ("top", "bottom"):
        names = ", ".join(f"{r['Code']} {r[f'pred_{h}d']:+.4f}" for r in scored["ranking"] if r["end"] == end)
        logger.info("%s %dd: %s", end, h, names)
    if as_of is None and scored["last_quote"] is not None and scored["last_quote"] > day:
        logger.warning(
            "raw_quotes reaches %s but %s ends on %s: run build-features to score the latest day",
            scored["last_quote"], champion.table, day,
        )  # fmt: skip
    create_table_artifact(
        key=config.key("score", "top"),
        table=scored["ranking"],
        description=f"{version} on {day}: top and bottom {SHOWN} at {h}d (rank 1 = best)",
    )
    create_markdown_artifact(
        key=config.key("score", "summary"),
        markdown=(
            f"### Scored {day}\n\n| | |\n|---|---|\n| version | `{version}` |\n| date | {day} |\n"
            f"| stocks scored | {scored['stocks']} |\n| feature table | `{champion.table}` |\n"
            f"| written to | `{PREDICTIONS_TABLE}` |\n| inputs drifted (PSI > {config.settings.drift.warn_psi}) | "
            f"{drifted} |\n"
        ),
        description=f"Scored {day} with {version}",
    )
    return ScoredDay(
        version=version, as_of=day, stocks=scored["stocks"], feature_table=champion.table, table=PREDICTIONS_TABLE
    )


def _score_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--as-of", type=date.fromisoformat, help="day to score (default: the feature table's last)")


def _run(config: RunConfig, args: argparse.Namespace) -> int:
    state, code = run_flow(score, config=config, as_of=args.as_of)
    if code == 0:
        print(state.result().model_dump_json(indent=2))
    return code


COMMAND = Command(
    "score", "Score one day with the registry's champion (no server needed).",
    "atft score --config deployments/demo.yaml --as-of 2024-12-27", _run, _score_arguments,
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return alias_main(COMMAND, argv)


if __name__ == "__main__":
    sys.exit(main())
