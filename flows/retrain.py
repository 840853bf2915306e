"""The ``rolling-retrain`` flow: one scheduled retrain, from new quotes to a published (or rejected) model.

    from flows.retrain import rolling_retrain
    rolling_retrain(config="deployments/demo.yaml", as_of="2024-12-27")

Steps: resolve ``as_of`` on the trading calendar (not a session: ``Completed(name="Skipped")``); ingest up to
it; bring the feature table up to date (cached by the raw-data fingerprint and feature code version); check
the contract (a drifted table fails the run here, before any model is built); train on windows counted back
from ``as_of``; evaluate against the gates and the champion; publish in a transaction. The end state says
what happened: ``Published`` with the version, ``GateRejected`` with the reasons, or ``Failed`` with the error.
The config is resolved once, at the start, and every subflow and task takes the result (``flows.references``);
they pass typed references (paths, table names, hashes, verdicts), never frames or tensors.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Completed, State

from atft.calendar import TradingCalendar
from atft.windows import plan_retrain
from flows.cli import Command, alias_main, run_flow
from flows.evaluate import evaluate
from flows.features import build_features
from flows.ingest import ingest
from flows.naming import config_stem
from flows.publish import publish
from flows.references import FeatureRef, Overrides, PublishedVersion, RunConfig, resolve
from flows.train import check_feature_contract, train


@task(name="plan-windows", cache_policy=NO_CACHE)
def plan_windows(config: RunConfig, features: FeatureRef, as_of: date) -> dict[str, date]:
    """Train, valid and eval windows counted back from ``as_of`` over the feature table's days."""
    settings = config.settings
    with config.warehouse() as wh:
        windows = plan_retrain(wh.con, features.manifest(), as_of, settings).as_dict()
    get_run_logger().info(
        "windows for %s: train %s..%s, valid %s..%s, eval %s..%s (purges of %d sessions)", as_of,
        *windows.values(), settings.features.label_span(max(settings.features.horizons)),
    )  # fmt: skip
    return windows


def _report(config: RunConfig, as_of: date, outcome: str, lines: list[tuple[str, object]]) -> None:
    rows = "".join(f"| {label} | {value} |\n" for label, value in lines)
    create_markdown_artifact(
        key=config.key("retrain", "report"),
        markdown=f"### Rolling retrain {as_of}: {outcome}\n\n| | |\n|---|---|\n{rows}",
        description=f"Rolling retrain {as_of}: {outcome}",
    )


def _run_name() -> str:
    return f"retrain-{config_stem()}-{flow_run.parameters.get('as_of') or 'today'}"


@flow(name="rolling-retrain", flow_run_name=_run_name)
def rolling_retrain(
    config: str | RunConfig = "deployments/demo.yaml",
    as_of: date | None = None,
    warehouse: str | None = None,
    overrides: Overrides = None,
) -> State:
    """Retrain on ``as_of`` (default: today on the exchange's calendar) and publish the model if it passes."""
    logger = get_run_logger()
    # Resolved once: ingest, features, training, evaluation and publication all take these settings, however the
    # YAML is edited during a long training.
    config = resolve(config, warehouse, overrides)
    settings = config.settings
    calendar = TradingCalendar(settings.calendar)
    day = as_of or calendar.today()
    if not calendar.is_session(day):
        message = f"{day} is not a {settings.calendar} trading day: nothing to retrain"
        _report(config, day, "Skipped", [("reason", message)])
        logger.info(message)
        return Completed(name="Skipped", message=message)

    ingested = ingest(config=config, end=day)
    # The contract is checked once here; the reference carries the result to training and evaluation.
    features = check_feature_contract(config, build_features(config=config, as_of=day))
    windows = plan_windows(config, features, day)
    training = {k: windows[k] for k in ("train_start", "train_end", "valid_start", "valid_end")}
    staged = train(config=config, features=features, **training)
    verdict = evaluate(config=config, staged=staged, eval_start=windows["eval_start"], eval_end=windows["eval_end"])
    outcome = publish(config=config, staged=staged, verdict=verdict, return_state=True)
    summary = [
        ("as of", day),
        ("config", f"`{config.path}`"),
        ("ingested", f"{ingested.rows_inserted:,} new rows" + (f" through {ingested.last_date}"
                                                               if ingested.last_date else "")),
        ("features", f"`{features.table}` ({features.mode}), manifest `{features.manifest_sha256[:16]}`"),
        ("windows", ", ".join(f"{k} {v}" for k, v in windows.items())),
        ("training", f"{staged.trained()}, validation RankIC {staged.best_valid_rank_ic:.4f}"),
        ("started from", staged.warm_start.from_version or f"scratch ({staged.warm_start.reason})"),
        ("champion before", verdict.champion or "none"),
        ("gates", "passed" if verdict.passed else "; ".join(verdict.reasons)),
    ]  # fmt: skip
    if outcome.is_failed():
        _report(config, day, "Failed", [*summary, ("error", outcome.message)])
        return outcome
    if outcome.name == "GateRejected":
        _report(config, day, "GateRejected", summary)
        return Completed(name="GateRejected", message=outcome.message)
    published: PublishedVersion = outcome.result()
    _report(config, day, "Published", [*summary, ("version", f"`{published.version}`"),
                                        ("path", f"`{published.path}`")])  # fmt: skip
    return Completed(name="Published", message=f"published {published.version}", data=published)


def _retrain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--as-of", type=date.fromisoformat, help="retrain date (default: today on the calendar)")


def _run(config: RunConfig, args: argparse.Namespace) -> int:
    return run_flow(rolling_retrain, config=config, as_of=args.as_of)[1]


COMMAND = Command(
    "retrain", "Run one rolling retrain: ingest, features, train, evaluate, publish (no server needed).",
    "atft retrain --config deployments/demo.yaml --as-of 2024-12-27 --set train.epochs=2", _run, _retrain_arguments,
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return alias_main(COMMAND, argv)


if __name__ == "__main__":
    sys.exit(main())
