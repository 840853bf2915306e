"""Warm start: a retrain that begins from the champion's weights and fine-tunes them on the new windows.

A rolling retrain moves its windows by a few weeks; most of what the champion learnt still holds, so a few epochs at
a lower learning rate replace a full training. Only a champion of the very same model can be the start: trained
against the same feature manifest (same inputs, same order), with the same model config and horizons. Anything
else trains from scratch, and the reason is part of the result, so that the run report says which it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from torch import Tensor

from atft.config import ModelConfig, TrainConfig
from atft.registry import Registry
from atft.registry.errors import RegistryError
from schemas.manifest import FeatureManifest


@dataclass(frozen=True)
class WarmStart:
    """Where a retrain starts: ``version``'s weights, or a fresh initialisation (``version`` None); and why."""

    version: str | None
    reason: str
    state_dict: dict[str, Tensor] | None = field(default=None, repr=False)

    def describe(self) -> dict[str, Any]:
        """What the run report and the version's metadata record."""
        return {"from_version": self.version, "reason": self.reason}

    def train_settings(self, train: TrainConfig) -> TrainConfig:
        """``train`` as this start trains: the fine-tuning epochs and learning rate when warm, unchanged when cold."""
        if self.state_dict is None:
            return train
        return train.model_copy(
            update={"epochs": train.warm_start_epochs, "learning_rate": train.warm_start_learning_rate}
        )


COLD = WarmStart(None, "train.warm_start is none")


def champion_start(
    registry_path: Path, manifest: FeatureManifest, model: ModelConfig, horizons: list[int]
) -> WarmStart:
    """The champion of ``registry_path`` as the start when it is the same model on the same manifest, else cold."""
    registry = Registry(registry_path)
    try:
        champion = registry.champion().champion
        if champion is None:
            return WarmStart(None, f"no champion in {registry_path}: training from scratch")
        record = registry.show(champion)
    except RegistryError as exc:
        return WarmStart(None, f"the registry at {registry_path} cannot be read ({exc}): training from scratch")
    trained_on = record.metadata.get("manifest_sha256")
    if trained_on != manifest.sha256:
        return WarmStart(
            None, f"champion {champion} was trained on manifest {trained_on}, not {manifest.sha256}: training from "
            "scratch"
        )  # fmt: skip
    differs = _config_differences(stored_model_config(record.model.get("config", {})), model.model_dump(mode="json"))
    if record.model.get("horizons") != horizons:
        differs.append(f"horizons {record.model.get('horizons')} -> {horizons}")
    if differs:
        return WarmStart(None, f"champion {champion} is another model ({'; '.join(differs)}): training from scratch")
    try:
        loaded = registry.load(champion)
    except RegistryError as exc:
        return WarmStart(None, f"champion {champion} cannot be loaded ({exc}): training from scratch")
    state = {name: value.detach().clone() for name, value in loaded.model.state_dict().items()}
    return WarmStart(champion, f"fine-tuning champion {champion} (same manifest, model config and horizons)", state)


def stored_model_config(stored: dict[str, Any]) -> dict[str, Any]:
    """A champion's stored model config with any field added since it was published at its default, which is how
    that champion was built; as stored when it does not parse (it then differs, and the difference is named)."""
    try:
        return ModelConfig.model_validate(stored).model_dump(mode="json")
    except ValidationError:
        return stored


def _config_differences(champion: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    differences = []
    for key in sorted(champion.keys() | current.keys()):
        old, new = champion.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            differences += _config_differences(old, new, f"{prefix}{key}.")
        elif old != new:
            differences.append(f"model.{prefix}{key} {old!r} -> {new!r}")
    return differences
