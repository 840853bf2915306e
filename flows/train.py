"""The ``train`` flow: check the feature contract, train the configured model, stage the result.

    from flows.features import build_features
    from flows.train import train
    ref = build_features(config="deployments/demo.yaml")
    staged = train(config="deployments/demo.yaml", features_ref=ref, train_start=..., train_end=...,
                   valid_start=..., valid_end=...)

The contract check is its own task and runs first: on a mismatch the run fails before any model is
built or any device touched, and the diff is in the state message and in an artifact.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from atft.config import load_config
from atft.training.session import Windows, check_features, prepare_data, stage, train_model
from atft.training.trainer import EpochRecord, eta_text, overrun_warning
from atft.training.warm_start import COLD, champion_start
from atft.warehouse import Warehouse
from flows.cli import run_flow
from flows.naming import named_by_config
from schemas.contract import ContractViolation
from schemas.manifest import FeatureManifest


def _key(config: str, suffix: str) -> str:
    return f"train-{Path(config).stem}-{suffix}".replace("_", "-").lower()


@task(name="check-feature-contract", cache_policy=NO_CACHE)
def check_feature_contract(config: str, features_ref: dict[str, Any], warehouse: str | None) -> None:
    """The table's columns must match the manifest exactly, and the manifest must be the one promised."""
    settings = load_config(config)
    manifest = FeatureManifest.read(features_ref["manifest_path"])
    try:
        with Warehouse.of(settings.warehouse, warehouse, read_only=True) as wh:
            check_features(wh.con, manifest, features_ref["manifest_sha256"])
    except ContractViolation as exc:
        create_markdown_artifact(
            key=_key(config, "contract"), markdown=f"### Feature contract violated\n\n```\n{exc}\n```\n"
        )
        raise


@task(name="train-model", tags=["gpu"], cache_policy=NO_CACHE)  # timeout: train.timeout_s, set by ``train``
def train_model_task(
    config: str, features_ref: dict[str, Any], windows: dict[str, date], warehouse: str | None
) -> dict[str, Any]:
    """Train and stage; returns where the staged result is and how it went, never the weights themselves."""
    began = time.perf_counter()
    logger = get_run_logger()
    settings = load_config(config)
    manifest = FeatureManifest.read(features_ref["manifest_path"])
    span = Windows(**windows)
    with Warehouse.of(settings.warehouse, warehouse, read_only=True) as wh:
        data = prepare_data(wh.con, manifest, settings, span)
    progress = create_progress_artifact(
        progress=0.0, key=_key(config, "progress"), description=f"training {settings.model.name}"
    )
    start = COLD
    if settings.train.warm_start == "champion":
        start = champion_start(settings.registry.path, manifest, settings.model, data.arrays.horizons)
        (logger.info if start.version else logger.warning)("warm start: %s", start.reason)
    epochs = start.train_settings(settings.train).epochs

    def on_epoch(record: EpochRecord) -> None:
        logger.info(record.line())
        warning = overrun_warning(
            record, time.perf_counter() - began, epochs * record.members, settings.train.timeout_s
        )
        if warning:
            logger.warning(warning)
        who = f"member {record.member + 1} of {record.members}, " if record.members > 1 else ""
        description = f"training {settings.model.name}: {who}epoch {record.epoch} of {epochs}{eta_text(record.eta_s)}"
        done = (record.member * epochs + record.epoch) / (record.members * epochs)
        update_progress_artifact(progress, progress=100.0 * done, description=description)

    logger.info(
        "training %s on %d days, validating on %d, up to %d epochs%s (timeout %.0f min)",
        settings.model.name, len(data.train_days), len(data.valid), epochs,
        f" for each of {settings.model.ensemble} ensemble members" if settings.model.ensemble > 1 else "",
        settings.train.timeout_s / 60,
    )  # fmt: skip
    model, result = train_model(settings, manifest, data, on_epoch, start)
    logger.info("threads: %s", result.thread_policy)
    logger.info("compiled: %s", result.compiled)
    update_progress_artifact(progress, progress=100.0, description=f"trained {settings.model.name}")
    run = flow_run.id or datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    directory = stage(model, result, manifest, span, settings.train.staging_dir / f"{settings.name}-{run}")
    if result.collapsed:
        logger.warning("the best epoch's predictions collapsed (median per-day std below train.collapse_std)")
    return {
        "staging_dir": str(directory),
        "model": settings.model.name,
        "table": manifest.table_name,
        "manifest_sha256": manifest.sha256,
        "manifest_path": features_ref["manifest_path"],
        "windows": windows,
        "best_epoch": result.best_epoch,
        "member_best_epochs": result.member_best_epochs,
        "best_valid_rank_ic": result.best_valid_rank_ic,
        "collapsed": result.collapsed,
        "device": result.device,
        "epochs_run": len(result.history),
        "warm_start": result.warm_start,
    }


@flow(name="train", flow_run_name=named_by_config("train"))
def train(
    config: str,
    features_ref: dict[str, Any],
    train_start: date,
    train_end: date,
    valid_start: date,
    valid_end: date,
    warehouse: str | None = None,
) -> dict[str, Any]:
    """Train on [train_start, train_end], early-stop on [valid_start, valid_end]; labels are purged at each end.

    ``features_ref`` is what ``build_features`` returned. Returns a reference to the staged result.
    """
    windows = asdict(Windows(train_start, train_end, valid_start, valid_end))
    check_feature_contract(config, features_ref, warehouse)
    timeout = load_config(config).train.timeout_s
    staged = train_model_task.with_options(timeout_seconds=timeout)(config, features_ref, windows, warehouse)
    get_run_logger().info(
        "staged %s at %s: best epoch %s, validation RankIC %.4f",
        staged["model"], staged["staging_dir"], staged["best_epoch"], staged["best_valid_rank_ic"],
    )  # fmt: skip
    return staged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the configured model on a built feature table.")
    parser.add_argument("config")
    parser.add_argument("features_ref", help="JSON of the build_features reference")
    for name in ("train_start", "train_end", "valid_start", "valid_end"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=date.fromisoformat, required=True)
    args = parser.parse_args(argv)
    state, code = run_flow(train, config=args.config, features_ref=json.loads(args.features_ref),
                           train_start=args.train_start, train_end=args.train_end, valid_start=args.valid_start,
                           valid_end=args.valid_end)  # fmt: skip
    if code == 0:
        print(state.result())
    return code


if __name__ == "__main__":
    sys.exit(main())
