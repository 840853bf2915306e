"""The ``rolling-retrain`` flow: one scheduled retrain, from new quotes to a published (or rejected) model.

    from flows.retrain import rolling_retrain
    rolling_retrain(config="deployments/demo.yaml", as_of="2024-12-27")

Steps: resolve ``as_of`` on the trading calendar (not a session: ``Completed(name="Skipped")``); ingest up to
it; bring the feature table up to date (cached by the raw-data fingerprint and feature code version); check
the contract (a drifted table fails the run here, before any model is built); train on windows counted back
from ``as_of``; evaluate against the gates and the champion; publish in a transaction. The end state says
what happened: ``Published`` with the version, ``GateRejected`` with the reasons, or ``Failed`` with the error.
Subflows and tasks pass references (paths, table names, hashes), never frames or tensors.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Completed, State

from atft.calendar import TradingCalendar
from atft.config import freeze_config, load_config
from atft.warehouse import Warehouse
from atft.windows import plan_retrain
from flows.cli import Command, alias_main, run_flow
from flows.evaluate import evaluate
from flows.features import build_features
from flows.ingest import ingest
from flows.naming import config_stem
from flows.publish import publish
from flows.train import check_feature_contract, train
from schemas.manifest import FeatureManifest


def _key(config: str, suffix: str) -> str:
    return f"retrain-{Path(config).stem}-{suffix}".replace("_", "-").lower()


@task(name="plan-windows", cache_policy=NO_CACHE)
def plan_windows(config: str, features_ref: dict[str, Any], as_of: date, warehouse: str | None) -> dict[str, date]:
    """Train, valid and eval windows counted back from ``as_of`` over the feature table's days."""
    settings = load_config(config)
    manifest = FeatureManifest.read(features_ref["manifest_path"])
    with Warehouse.of(settings.warehouse, warehouse, read_only=True) as wh:
        windows = plan_retrain(wh.con, manifest, as_of, settings).as_dict()
    get_run_logger().info(
        "windows for %s: train %s..%s, valid %s..%s, eval %s..%s (purges of %d sessions)", as_of,
        *windows.values(), settings.features.label_span(max(settings.features.horizons)),
    )  # fmt: skip
    return windows


def _trained(staged: dict[str, Any]) -> str:
    """How training went: "atft_gat_fan, best epoch 3 of 5", or for a seed ensemble each member's best epoch."""
    members = staged.get("member_best_epochs") or []
    if len(members) > 1:
        return (f"{staged['model']}, seed ensemble of {len(members)}, best epochs {', '.join(map(str, members))} "
                f"({staged['epochs_run']} epochs in all)")  # fmt: skip
    return f"{staged['model']}, best epoch {staged['best_epoch']} of {staged['epochs_run']}"


def _report(config: str, as_of: date, outcome: str, lines: list[tuple[str, object]]) -> None:
    rows = "".join(f"| {label} | {value} |\n" for label, value in lines)
    create_markdown_artifact(
        key=_key(config, "report"),
        markdown=f"### Rolling retrain {as_of}: {outcome}\n\n| | |\n|---|---|\n{rows}",
        description=f"Rolling retrain {as_of}: {outcome}",
    )


def _run_name() -> str:
    return f"retrain-{config_stem()}-{flow_run.parameters.get('as_of') or 'today'}"


@flow(name="rolling-retrain", flow_run_name=_run_name)
def rolling_retrain(
    config: str = "deployments/demo.yaml", as_of: date | None = None, warehouse: str | None = None
) -> State:
    """Retrain on ``as_of`` (default: today on the exchange's calendar) and publish the model if it passes."""
    logger = get_run_logger()
    # Resolved once: ingest, features, training, evaluation and publication all read this file, however the original
    # is edited during a long training.
    config = str(freeze_config(config, {}))
    settings = load_config(config)
    calendar = TradingCalendar(settings.calendar)
    day = as_of or calendar.today()
    if not calendar.is_session(day):
        message = f"{day} is not a {settings.calendar} trading day: nothing to retrain"
        _report(config, day, "Skipped", [("reason", message)])
        logger.info(message)
        return Completed(name="Skipped", message=message)

    ingested = ingest(config=config, end=day, warehouse=warehouse)
    features = build_features(config=config, as_of=day, warehouse=warehouse)
    check_feature_contract(config, features, warehouse)
    windows = plan_windows(config, features, day, warehouse)
    training = {k: windows[k] for k in ("train_start", "train_end", "valid_start", "valid_end")}
    staged = train(config=config, features_ref=features, warehouse=warehouse, **training)
    verdict = evaluate(config=config, model_ref=staged, eval_start=windows["eval_start"],
                       eval_end=windows["eval_end"], warehouse=warehouse)  # fmt: skip
    outcome = publish(config=config, model_ref=staged, gate_result=verdict, warehouse=warehouse, return_state=True)
    summary = [
        ("as of", day),
        ("config", f"`{config}`"),
        ("ingested", f"{ingested['rows_inserted']:,} new rows" + (f" through {ingested['last_date']}"
                                                                  if ingested["last_date"] else "")),
        ("features", f"`{features['table']}` ({features['mode']}), manifest `{features['manifest_sha256'][:16]}`"),
        ("windows", ", ".join(f"{k} {v}" for k, v in windows.items())),
        ("training", f"{_trained(staged)}, validation RankIC {staged['best_valid_rank_ic']:.4f}"),
        ("started from", staged["warm_start"]["from_version"] or f"scratch ({staged['warm_start']['reason']})"),
        ("champion before", verdict["champion"] or "none"),
        ("gates", "passed" if verdict["passed"] else "; ".join(verdict["reasons"])),
    ]  # fmt: skip
    if outcome.is_failed():
        _report(config, day, "Failed", [*summary, ("error", outcome.message)])
        return outcome
    if outcome.name == "GateRejected":
        _report(config, day, "GateRejected", summary)
        return Completed(name="GateRejected", message=outcome.message)
    published = outcome.result()
    _report(config, day, "Published", [*summary, ("version", f"`{published['version']}`"),
                                        ("path", f"`{published['path']}`")])  # fmt: skip
    return Completed(name="Published", message=f"published {published['version']}", data=published)


def _retrain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--as-of", type=date.fromisoformat, help="retrain date (default: today on the calendar)")


def _run(config: str, args: argparse.Namespace) -> int:
    return run_flow(rolling_retrain, config=config, as_of=args.as_of)[1]


COMMAND = Command(
    "retrain", "Run one rolling retrain: ingest, features, train, evaluate, publish (no server needed).",
    "atft retrain --config deployments/demo.yaml --as-of 2024-12-27 --set train.epochs=2", _run, _retrain_arguments,
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return alias_main(COMMAND, argv)


if __name__ == "__main__":
    sys.exit(main())
