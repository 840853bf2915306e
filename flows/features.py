"""The ``build-features`` flow: the versioned, validated feature table of a pipeline config.

from flows.features import build_features
ref = build_features(config="deployments/demo.yaml")   # FeatureRef(table="features_…", manifest_sha256=…)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import TaskRunContext

from atft.features.build import FeatureBuild, still_current
from atft.features.build import build_features as run_feature_build
from atft.features.catalogue import FEATURE_CODE_VERSION
from atft.features.store import history_fingerprint
from flows.cli import Command, alias_main, run_flow
from flows.naming import named_by_config
from flows.references import FeatureRef, Overrides, RunConfig, resolve
from schemas.feature_table import FeatureValidationError


def feature_cache_key(_: TaskRunContext, parameters: dict[str, Any]) -> str | None:
    """The history the build reads (the library's fingerprint of the quotes through ``as_of`` and of the listings),
    the feature code version and settings, and the warehouse: the same inputs give the same table, so a re-run is
    served from the cache."""
    settings = parameters["config"].settings
    path = Path(settings.warehouse.path)
    if not path.exists():
        return None
    with parameters["config"].warehouse() as wh:
        history = history_fingerprint(wh, parameters["as_of"])
    inputs = [history, FEATURE_CODE_VERSION, settings.features.model_dump_json(), str(path.resolve())]
    return hashlib.sha256(json.dumps(inputs, default=str).encode()).hexdigest()


@task(name="build-feature-table", timeout_seconds=2 * 3600, cache_key_fn=feature_cache_key, persist_result=True)
def build_feature_table(config: RunConfig, as_of: date | None) -> dict[str, Any]:
    """Build or update the table and validate it in the same transaction; returns the build summary."""
    try:
        build = run_feature_build(config.settings, as_of=as_of, on_progress=get_run_logger().info)
    except FeatureValidationError as exc:
        # The failing checks are the report a person needs; the run then fails with them.
        create_table_artifact(
            key=config.key("features", "validation"),
            table=exc.report.rows(),
            description="Feature validation FAILED: nothing was written",
        )
        raise
    return asdict(build)


def _publish(config: RunConfig, build: FeatureBuild) -> None:
    create_table_artifact(
        key=config.key("features", "groups"),
        table=[{"group": group, "columns": n} for group, n in build.groups.items()]
        + [{"group": "total inputs", "columns": build.width}],
        description=f"Input features of {build.table} by group",
    )
    if build.validation:
        create_table_artifact(
            key=config.key("features", "validation"),
            table=build.validation,
            description=f"Validation of the rows written to {build.table}: passed",
        )
    create_markdown_artifact(
        key=config.key("features", "manifest"),
        markdown=(
            f"### Feature manifest\n\n"
            f"| | |\n|---|---|\n| table | `{build.table}` |\n| manifest sha256 | `{build.manifest_sha256}` |\n"
            f"| manifest file | `{build.manifest_path}` |\n| inputs | {build.width} |\n| build | {build.mode} "
            f"({build.rows_written:,} rows written, {build.rows_total:,} in the table) |\n"
            f"| through | {build.through} |\n"
        ),
        description=f"Manifest of {build.table}",
    )


@flow(name="build-features", flow_run_name=named_by_config("features"))
def build_features(
    config: str | RunConfig = "deployments/demo.yaml",
    as_of: date | None = None,
    warehouse: str | None = None,
    overrides: Overrides = None,
) -> FeatureRef:
    """Build or bring up to date the feature table through ``as_of`` (default: the last ingested day).

    Returns a reference: the table name, the manifest hash and path, and the last day built.
    """
    config = resolve(config, warehouse, overrides)
    build = FeatureBuild(**build_feature_table(config, as_of))
    if not still_current(config.settings.warehouse.path, build, get_run_logger().info):
        # A cached build the table no longer matches (dropped, or rebuilt shorter in a fresh warehouse): build again.
        build = FeatureBuild(**build_feature_table.with_options(refresh_cache=True)(config, as_of))
    _publish(config, build)
    get_run_logger().info(build.summary())
    return FeatureRef(table=build.table, manifest_sha256=build.manifest_sha256, manifest_path=build.manifest_path,
                      through=build.through, mode=build.mode)  # fmt: skip


def _features_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--as-of", type=date.fromisoformat, help="last day to build (default: last ingested)")


def _run(config: RunConfig, args: argparse.Namespace) -> int:
    state, code = run_flow(build_features, config=config, as_of=args.as_of)
    if code == 0:
        print(state.result().model_dump_json(indent=2))
    return code


COMMAND = Command(
    "features", "Build the feature table of a pipeline config (no server needed).",
    "atft features --config deployments/sp500.yaml --as-of 2018-01-31", _run, _features_arguments,
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return alias_main(COMMAND, argv)


if __name__ == "__main__":
    sys.exit(main())
