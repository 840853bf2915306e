"""Turn verified bytes into a model, and refuse a feature table the checkpoint's manifest does not describe.

Only safetensors and JSON are decoded here; nothing is unpickled. The weights are decoded from the very
bytes whose checksum was verified (``safetensors.torch.load``, not a second read of the file), and the
model is rebuilt from its recorded config and the manifest's width: a checkpoint that does not fit its own
description exactly (``strict=True``) is an error, never resized.
"""

from __future__ import annotations

from collections.abc import Mapping

import duckdb
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors

from atft.config import ModelConfig
from atft.features.store import feature_schema
from atft.models import ContractModel, build_model
from atft.registry.errors import CheckpointRefused
from atft.registry.integrity import MODEL, WEIGHTS, parse_json
from schemas.contract import ContractViolation, check_contract
from schemas.manifest import FeatureManifest


def build_checkpoint(files: Mapping[str, bytes], manifest: FeatureManifest) -> ContractModel:
    """The model described by ``model.json`` with the weights of ``weights.safetensors``, in eval mode.

    ValueError (with what differs) when the description, the manifest and the weights disagree.
    """
    description = parse_json(files[MODEL], MODEL)
    trained_on = description.get("manifest_sha256")
    if trained_on != manifest.sha256:
        raise ValueError(
            f"the weights were trained against manifest {trained_on}, but the manifest is {manifest.sha256}"
        )
    if description.get("width") != manifest.width:
        raise ValueError(f"{MODEL} says {description.get('width')} inputs, the manifest has {manifest.width}")
    try:
        config = ModelConfig.model_validate(description["config"])
        model = build_model(
            config, manifest.width, list(description["horizons"]), manifest.sha256, manifest.feature_groups
        )
    except (KeyError, TypeError, ValidationError) as exc:
        raise ValueError(f"{MODEL} does not describe a buildable model: {exc}") from None
    try:
        state = load_safetensors(files[WEIGHTS])
        model.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError) as exc:
        raise ValueError(f"{WEIGHTS} does not fit the {config.name} model described in {MODEL}: {exc}") from None
    return model.eval()


def check_feature_table(
    con: duckdb.DuckDBPyConnection, table: str, manifest: FeatureManifest, version: str
) -> None:  # fmt: skip
    """Refuse when ``table``'s columns differ from the checkpoint's manifest (names compared case-sensitively)."""
    try:
        schema = feature_schema(con, table)
    except duckdb.Error as exc:
        raise CheckpointRefused(f"cannot read the columns of feature table {table!r}: {exc}") from None
    try:
        check_contract(schema, manifest)
    except ContractViolation as exc:
        raise CheckpointRefused(
            f"version {version} cannot be used with feature table {table!r}: {exc}", diff=exc.diff
        ) from None
