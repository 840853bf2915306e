"""The ``publish`` flow: a challenger that passed every gate becomes a registry version and the champion.

    from flows.publish import publish
    outcome = publish(config="deployments/demo.yaml", staged=staged, verdict=verdict)

``staged`` is what ``train`` returned and ``verdict`` what ``evaluate`` returned. A rejected challenger is not
published: the run ends as ``Completed(name="GateRejected")`` with the failing gates as its message. The registry
writes the version atomically (a killed publish leaves the previous champion in place and no partial version
visible); the flow writes, promotes and test-loads it in one Prefect transaction, so a failure after the write is
rolled back.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, State
from prefect.transactions import Transaction, get_transaction, transaction

from atft.registry import Registry
from flows.cli import reference, run_flow
from flows.naming import named_by_config
from flows.references import GateVerdict, Overrides, PublishedVersion, RunConfig, StagedModel, resolve


@task(name="register-version", cache_policy=NO_CACHE)
def register_version(config: RunConfig, staged: StagedModel, verdict: GateVerdict) -> str:
    """Write the version (weights, manifest, metrics, gates, windows, fingerprint, predictions), not yet champion."""
    settings = config.settings
    manifest = staged.features.manifest()
    with config.warehouse() as wh:
        fingerprint = wh.fingerprint(manifest.table_name)
    windows = {**asdict(staged.windows), "eval_start": verdict.eval_start, "eval_end": verdict.eval_end}
    version = Registry(settings.registry.path).publish(
        staged.staging_dir,
        manifest,
        metrics=json.loads(Path(verdict.metrics_path).read_text()),
        gates=json.loads(Path(verdict.gates_path).read_text()),
        windows=windows,
        data_fingerprint=fingerprint,
        predictions=pd.read_parquet(verdict.predictions_path),
        promote=False,
        config=settings.model_dump(mode="json") | {"frozen_file": config.path},
        charts={Path(p).stem.removeprefix("chart-"): Path(p).read_bytes() for p in verdict.charts},
    )
    get_transaction().set("registered", (str(settings.registry.path), version))
    return version


@register_version.on_rollback
def _discard_version(transaction: Transaction) -> None:
    root, version = transaction.get("registered")
    Registry(root).discard(version)


@task(name="promote-champion", cache_policy=NO_CACHE)
def promote_champion(config: RunConfig, version: str) -> str | None:
    """Make ``version`` the champion; returns the champion it replaced."""
    registry = Registry(config.settings.registry.path)
    replaced = registry.champion().champion
    registry.promote(version)
    get_transaction().set("promoted", (registry.storage.location(), version))
    return replaced


@promote_champion.on_rollback
def _restore_champion(transaction: Transaction) -> None:
    root, version = transaction.get("promoted")
    Registry(root).withdraw(version)


@task(name="verify-champion", cache_policy=NO_CACHE)
def verify_champion(config: RunConfig, staged: StagedModel) -> None:
    """Load the new champion the way scoring will: checksums, contract against the feature table, weights."""
    with config.warehouse() as wh:
        Registry(config.settings.registry.path).load(con=wh.con, table=staged.features.table)


@flow(name="publish", flow_run_name=named_by_config("publish"))
def publish(
    config: str | RunConfig,
    staged: StagedModel,
    verdict: GateVerdict,
    warehouse: str | None = None,
    overrides: Overrides = None,
) -> PublishedVersion | State:
    """Publish when every gate passed; otherwise end as ``Completed(name="GateRejected")`` with the reasons."""
    logger = get_run_logger()
    config = resolve(config, warehouse, overrides)
    if not verdict.passed:
        reasons = "; ".join(verdict.reasons)
        create_markdown_artifact(
            key=config.key("publish", "report"),
            markdown="### Not published: the gates rejected the challenger\n\n"
            + "".join(f"- {reason}\n" for reason in verdict.reasons),
            description="Gate rejection",
        )
        logger.warning("not published: %s", reasons)
        return Completed(name="GateRejected", message=f"gates rejected the challenger: {reasons}")
    # One unit: a failure after the version is written (promotion, or the new champion not loading) discards it
    # and gives the champion back to the one it replaced.
    with transaction():
        version = register_version(config, staged, verdict)
        replaced = promote_champion(config, version)
        verify_champion(config, staged)
    path = Path(config.settings.registry.path) / version
    create_markdown_artifact(
        key=config.key("publish", "report"),
        markdown=(
            f"### Published {version}\n\n| | |\n|---|---|\n| version | `{version}` |\n| path | `{path}` |\n"
            f"| model | {staged.model} |\n| manifest sha256 | `{staged.features.manifest_sha256}` |\n"
            f"| evaluation window | {verdict.eval_start} .. {verdict.eval_end} |\n"
            f"| replaced champion | {replaced or 'none (first champion)'} |\n| config | `{config.path}` |\n\n"
            f"`atft registry --config {config.path} show {version}`\n"
        ),
        description=f"Published {version}",
    )
    logger.info("published %s at %s (champion; replaced %s)", version, path, replaced or "nothing")
    return PublishedVersion(version=version, path=str(path), replaced=replaced)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Publish an evaluated model when its gates passed.")
    parser.add_argument("config")
    parser.add_argument("staged", type=reference(StagedModel), help="JSON of the train flow's result")
    parser.add_argument("verdict", type=reference(GateVerdict), help="JSON of the evaluate flow's result")
    args = parser.parse_args(argv)
    state, code = run_flow(publish, config=args.config, staged=args.staged, verdict=args.verdict)
    if code == 0 and state.name != "GateRejected":  # a rejection has no result: its state line gives the reasons
        print(state.result().model_dump_json(indent=2))
    return code


if __name__ == "__main__":
    sys.exit(main())
