"""The ``publish`` flow: a challenger that passed every gate becomes a registry version and the champion.

    from flows.publish import publish
    outcome = publish(config="deployments/demo.yaml", model_ref=staged, gate_result=verdict)

``gate_result`` is what ``evaluate`` returned. A rejected challenger is not published: the run ends as
``Completed(name="GateRejected")`` with the failing gates as its message. The registry writes the version
atomically (a killed publish leaves the previous champion in place and no partial version visible); the
flow writes, promotes and test-loads it in one Prefect transaction, so a failure after the write is rolled back.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, State
from prefect.transactions import Transaction, get_transaction, transaction

from atft.config import load_config
from atft.registry import Registry
from atft.warehouse import Warehouse
from flows.cli import run_flow
from flows.naming import named_by_config
from schemas.manifest import FeatureManifest


def _key(config: str, suffix: str) -> str:
    return f"publish-{Path(config).stem}-{suffix}".replace("_", "-").lower()


@task(name="register-version", cache_policy=NO_CACHE)
def register_version(config: str, model_ref: dict[str, Any], gate_result: dict[str, Any], warehouse: str | None) -> str:
    """Write the version (weights, manifest, metrics, gates, windows, fingerprint, predictions), not yet champion."""
    settings = load_config(config)
    manifest = FeatureManifest.read(model_ref["manifest_path"])
    with Warehouse.of(settings.warehouse, warehouse, read_only=True) as wh:
        fingerprint = wh.fingerprint(manifest.table_name)
    windows = {**model_ref["windows"], "eval_start": gate_result["eval_start"], "eval_end": gate_result["eval_end"]}
    version = Registry(settings.registry.path).publish(
        model_ref["staging_dir"],
        manifest,
        metrics=json.loads(Path(gate_result["metrics_path"]).read_text()),
        gates=json.loads(Path(gate_result["gates_path"]).read_text()),
        windows=windows,
        data_fingerprint=fingerprint,
        predictions=pd.read_parquet(gate_result["predictions_path"]),
        promote=False,
    )
    get_transaction().set("registered", (str(settings.registry.path), version))
    return version


@register_version.on_rollback
def _discard_version(transaction: Transaction) -> None:
    root, version = transaction.get("registered")
    Registry(root).discard(version)


@task(name="promote-champion", cache_policy=NO_CACHE)
def promote_champion(config: str, version: str) -> str | None:
    """Make ``version`` the champion; returns the champion it replaced."""
    registry = Registry(load_config(config).registry.path)
    replaced = registry.champion().champion
    registry.promote(version)
    get_transaction().set("promoted", (registry.storage.location(), version))
    return replaced


@promote_champion.on_rollback
def _restore_champion(transaction: Transaction) -> None:
    root, version = transaction.get("promoted")
    Registry(root).withdraw(version)


@task(name="verify-champion", cache_policy=NO_CACHE)
def verify_champion(config: str, model_ref: dict[str, Any], warehouse: str | None) -> None:
    """Load the new champion the way scoring will: checksums, contract against the feature table, weights."""
    settings = load_config(config)
    with Warehouse.of(settings.warehouse, warehouse, read_only=True) as wh:
        Registry(settings.registry.path).load(con=wh.con, table=model_ref["table"])


@flow(name="publish", flow_run_name=named_by_config("publish"))
def publish(
    config: str, model_ref: dict[str, Any], gate_result: dict[str, Any], warehouse: str | None = None
) -> dict[str, Any] | State:
    """Publish when every gate passed; otherwise end as ``Completed(name="GateRejected")`` with the reasons."""
    logger = get_run_logger()
    settings = load_config(config)
    if not gate_result["passed"]:
        reasons = "; ".join(gate_result["reasons"])
        create_markdown_artifact(
            key=_key(config, "report"),
            markdown="### Not published: the gates rejected the challenger\n\n"
            + "".join(f"- {reason}\n" for reason in gate_result["reasons"]),
            description="Gate rejection",
        )
        logger.warning("not published: %s", reasons)
        return Completed(name="GateRejected", message=f"gates rejected the challenger: {reasons}")
    # One unit: a failure after the version is written (promotion, or the new champion not loading) discards it
    # and gives the champion back to the one it replaced.
    with transaction():
        version = register_version(config, model_ref, gate_result, warehouse)
        replaced = promote_champion(config, version)
        verify_champion(config, model_ref, warehouse)
    path = Path(settings.registry.path) / version
    create_markdown_artifact(
        key=_key(config, "report"),
        markdown=(
            f"### Published {version}\n\n| | |\n|---|---|\n| version | `{version}` |\n| path | `{path}` |\n"
            f"| model | {model_ref['model']} |\n| manifest sha256 | `{model_ref['manifest_sha256']}` |\n"
            f"| evaluation window | {gate_result['eval_start']} .. {gate_result['eval_end']} |\n"
            f"| replaced champion | {replaced or 'none (first champion)'} |\n\n"
            f"`python -m atft.registry --config {config} show {version}`\n"
        ),
        description=f"Published {version}",
    )
    logger.info("published %s at %s (champion; replaced %s)", version, path, replaced or "nothing")
    return {"version": version, "path": str(path), "replaced": replaced}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Publish an evaluated model when its gates passed.")
    parser.add_argument("config")
    parser.add_argument("model_ref", help="JSON of the train flow's result")
    parser.add_argument("gate_result", help="JSON of the evaluate flow's result")
    args = parser.parse_args(argv)
    state, code = run_flow(
        publish, config=args.config, model_ref=json.loads(args.model_ref), gate_result=json.loads(args.gate_result)
    )
    if code == 0 and state.name != "GateRejected":  # a rejection has no result: its state line gives the reasons
        print(state.result())
    return code


if __name__ == "__main__":
    sys.exit(main())
