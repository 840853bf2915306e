"""The ``train`` flow: check the feature contract, train the configured model, stage the result.

    from flows.features import build_features
    from flows.train import train
    ref = build_features(config="deployments/demo.yaml")
    staged = train(config="deployments/demo.yaml", features=ref, train_start=..., train_end=...,
                   valid_start=..., valid_end=...)

The contract check is its own task and runs first, unless the reference says this run has checked it already: on a
mismatch the run fails before any model is built or any device touched, and the diff is in the state message and in
an artifact.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, date, datetime

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from atft.training.session import Windows, check_features, prepare_data, stage, train_model
from atft.training.trainer import EpochRecord, eta_text, overrun_warning
from atft.training.warm_start import COLD, champion_start
from flows.cli import reference, run_flow
from flows.naming import named_by_config
from flows.references import FeatureRef, Overrides, RunConfig, StagedModel, WarmStartRecord, resolve
from schemas.contract import ContractViolation


@task(name="check-feature-contract", cache_policy=NO_CACHE)
def check_feature_contract(config: RunConfig, features: FeatureRef) -> FeatureRef:
    """The table's columns must match the manifest exactly, and the manifest must be the one promised; returns
    ``features`` marked as checked, so that later stages of the run do not check the same table again."""
    manifest = features.manifest()
    try:
        with config.warehouse() as wh:
            check_features(wh.con, manifest, features.manifest_sha256)
    except ContractViolation as exc:
        create_markdown_artifact(
            key=config.key("train", "contract"), markdown=f"### Feature contract violated\n\n```\n{exc}\n```\n"
        )
        raise
    return features.model_copy(update={"contract_checked": True})


def checked(config: RunConfig, features: FeatureRef) -> FeatureRef:
    """``features``, its contract checked unless this run has done so already."""
    return features if features.contract_checked else check_feature_contract(config, features)


@task(name="train-model", tags=["gpu"], cache_policy=NO_CACHE)  # timeout: train.timeout_s, set by ``train``
def train_model_task(config: RunConfig, features: FeatureRef, span: Windows) -> StagedModel:
    """Train and stage; returns where the staged result is and how it went, never the weights themselves."""
    began = time.perf_counter()
    logger = get_run_logger()
    settings = config.settings
    manifest = features.manifest()
    with config.warehouse() as wh:
        data = prepare_data(wh.con, manifest, settings, span)
    progress = create_progress_artifact(
        progress=0.0, key=config.key("train", "progress"), description=f"training {settings.model.name}"
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
    return StagedModel(
        staging_dir=str(directory),
        model=settings.model.name,
        features=features,
        windows=span,
        best_epoch=result.best_epoch,
        member_best_epochs=result.member_best_epochs,
        best_valid_rank_ic=result.best_valid_rank_ic,
        collapsed=result.collapsed,
        device=result.device,
        epochs_run=len(result.history),
        warm_start=WarmStartRecord(**(result.warm_start or start.describe())),
    )


@flow(name="train", flow_run_name=named_by_config("train"))
def train(
    config: str | RunConfig,
    features: FeatureRef,
    train_start: date,
    train_end: date,
    valid_start: date,
    valid_end: date,
    warehouse: str | None = None,
    overrides: Overrides = None,
) -> StagedModel:
    """Train on [train_start, train_end], early-stop on [valid_start, valid_end]; labels are purged at each end.

    ``features`` is what ``build_features`` returned. Returns a reference to the staged result.
    """
    config = resolve(config, warehouse, overrides)
    span = Windows(train_start, train_end, valid_start, valid_end)
    features = checked(config, features)
    timeout = config.settings.train.timeout_s
    staged = train_model_task.with_options(timeout_seconds=timeout)(config, features, span)
    get_run_logger().info(
        "staged %s at %s: best epoch %s, validation RankIC %.4f",
        staged.model, staged.staging_dir, staged.best_epoch, staged.best_valid_rank_ic,
    )  # fmt: skip
    return staged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the configured model on a built feature table.")
    parser.add_argument("config")
    parser.add_argument("features", type=reference(FeatureRef), help="JSON of the build_features reference")
    for name in ("train_start", "train_end", "valid_start", "valid_end"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=date.fromisoformat, required=True)
    args = parser.parse_args(argv)
    state, code = run_flow(train, config=args.config, features=args.features,
                           train_start=args.train_start, train_end=args.train_end, valid_start=args.valid_start,
                           valid_end=args.valid_end)  # fmt: skip
    if code == 0:
        print(state.result().model_dump_json(indent=2))
    return code


if __name__ == "__main__":
    sys.exit(main())
