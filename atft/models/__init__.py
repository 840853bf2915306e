"""Models: one signature ``model(x, x_mask, edge_index, edge_attr, day) -> [N, H]``, input width from the manifest."""

from __future__ import annotations

from collections.abc import Sequence

from atft.config import ModelConfig
from atft.models.apex import APEX
from atft.models.atft_gat_fan import ATFTGATFAN
from atft.models.contract import ContractModel, InputWidthError
from atft.models.ensemble import SeedEnsemble

__all__ = ["APEX", "ATFTGATFAN", "ContractModel", "InputWidthError", "SeedEnsemble", "build_model"]

_MODELS: dict[str, type[ContractModel]] = {ATFTGATFAN.name: ATFTGATFAN, APEX.name: APEX}


def build_model(
    config: ModelConfig, width: int, horizons: list[int], manifest_sha256: str, groups: Sequence[str] | None = None
) -> ContractModel:
    """The model ``config.name`` for inputs of exactly ``width`` features (from the manifest, nowhere else); a
    :class:`SeedEnsemble` of ``config.ensemble`` such models when that is above 1. ``groups``, each input's feature
    group in the manifest, is needed with ``model.input_groups``."""
    if config.ensemble > 1:
        return SeedEnsemble(config, width, horizons, manifest_sha256, groups)
    return _MODELS[config.name](config, width, horizons, manifest_sha256, groups)
