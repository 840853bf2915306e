"""The input contract every model shares: width and lookback fixed at build time, per-feature scaling buffers.

The feature manifest is the only source of the input width. A batch that does not match is an error naming both
widths and the manifest, never a reason to rebuild a layer (the 82-vs-437 checkpoint failure).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from atft.config import ModelConfig
from atft.models.neutral_scores import neutralise
from schemas.manifest import group_positions, input_positions

# Smallest per-feature std the scaling divides by: a constant training column must not blow up to +-inf.
STD_FLOOR = 1e-6


class InputWidthError(ValueError):
    """A batch whose feature width or lookback differs from what the model was built for."""


class ContractModel(nn.Module):
    """Base of all models: stores the build contract, checks it in forward, owns the input scaling.

    ``groups`` (the manifest's feature group of each input) is needed only with ``model.input_groups``: the layers then
    read those groups' inputs (``layer_width`` of them), while the model still takes, checks and scales all ``width``.
    """

    name: str

    def __init__(
        self, config: ModelConfig, width: int, horizons: list[int], manifest_sha256: str,
        groups: Sequence[str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        if width < 1:
            raise ValueError(f"input width must be positive, got {width}")
        if not horizons:
            raise ValueError("at least one horizon is needed")
        if not manifest_sha256:
            raise ValueError("a manifest hash is needed: it is how a checkpoint names its feature list")
        self.config = config
        self.width = width
        self.horizons = list(horizons)
        self.manifest_sha256 = manifest_sha256
        # Buffers, not parameters: fitted by the trainer on training days, saved and loaded with the weights.
        self.register_buffer("input_mean", torch.zeros(width))
        self.register_buffer("input_std", torch.ones(width))
        if config.neutral_to:
            # Positions of model.neutral_to among the inputs, set from the manifest by set_neutral_columns; -1 until
            # then. Registered only when used, so that checkpoints without it load as they are.
            self.register_buffer("neutral_columns", torch.full((len(config.neutral_to),), -1, dtype=torch.long))
        self.layer_width = width
        if config.input_groups:
            if groups is None:
                raise ValueError("model.input_groups is set: building the model needs the manifest's feature groups")
            if len(groups) != width:
                raise InputWidthError(f"{len(groups)} feature groups for {width} inputs (manifest {manifest_sha256})")
            columns = group_positions(config.input_groups, groups, "model.input_groups", f"manifest {manifest_sha256}")
            # Registered only when used, as neutral_columns: a checkpoint records which inputs its layers read.
            self.register_buffer("input_columns", torch.tensor(columns, dtype=torch.long))
            self.layer_width = len(columns)

    def set_neutral_columns(self, feature_names: Sequence[str]) -> None:
        """Find ``model.neutral_to``'s inputs among the manifest's ``feature_names``; nothing to do without them."""
        if not self.config.neutral_to:
            return
        columns = input_positions(
            self.config.neutral_to, feature_names, "model.neutral_to", f"the feature manifest {self.manifest_sha256}"
        )
        with torch.no_grad():
            self.neutral_columns.copy_(torch.tensor(columns))

    def layer_inputs(self, x: Tensor) -> Tensor:
        """[N, L, F] prepared inputs -> the [N, L, ``layer_width``] the layers read (all, without input_groups)."""
        return x[..., self.input_columns] if self.config.input_groups else x

    def per_input(self, values: Tensor) -> Tensor:
        """[N, ``layer_width``] values of the inputs the layers read -> [N, F], 0 for the inputs they never read."""
        if not self.config.input_groups:
            return values
        return values.new_zeros(values.shape[0], self.width).index_copy(1, self.input_columns, values)

    def neutral(self, scores: Tensor, x: Tensor, x_mask: Tensor, day: Tensor) -> Tensor:
        """``scores`` with ``model.neutral_to``'s exposures regressed out per day (see ``atft.models.neutral_scores``),
        from the prepared inputs ``x`` at the day's own step; ``scores`` as they are without ``neutral_to``."""
        if not self.config.neutral_to:
            return scores
        if not torch.compiler.is_compiling() and bool((self.neutral_columns < 0).any()):
            raise RuntimeError("model.neutral_to's inputs were never located: call set_neutral_columns(manifest names)")
        return neutralise(scores, x[:, -1, self.neutral_columns], day, x_mask[:, -1])

    def set_input_scaling(self, mean: Tensor, std: Tensor) -> None:
        """Install per-feature statistics fitted on training days; std is floored at ``STD_FLOOR``."""
        for label, values in (("mean", mean), ("std", std)):
            if values.shape != (self.width,):
                raise InputWidthError(
                    f"input scaling {label} has shape {tuple(values.shape)}, expected ({self.width},) "
                    f"(manifest {self.manifest_sha256})"
                )
            if not torch.isfinite(values).all():
                raise ValueError(f"input scaling {label} has non-finite values")
        with torch.no_grad():
            self.input_mean.copy_(mean)
            self.input_std.copy_(std.clamp_min(STD_FLOOR))

    def compile_for_cpu(self) -> bool:
        """Compile the parts of the model that pay for it on CPU; False when there are none (the default)."""
        return False

    def describe(self) -> dict[str, Any]:
        """JSON-able summary stored next to the weights in a checkpoint."""
        return {
            "model": self.name,
            "width": self.width,
            "horizons": list(self.horizons),
            "manifest_sha256": self.manifest_sha256,
            "config": self.config.model_dump(mode="json"),
            "parameters": sum(p.numel() for p in self.parameters()),
        }

    def prepare_inputs(self, x: Tensor, x_mask: Tensor) -> Tensor:
        """Check the contract, scale (and clip, with ``input_clip``), zero non-finite values and missing steps:
        [N, L, F] -> [N, L, F]."""
        if x.dim() != 3:
            raise InputWidthError(f"x must be [N, L, F], got shape {tuple(x.shape)} (manifest {self.manifest_sha256})")
        if x.shape[-1] != self.width:
            raise InputWidthError(
                f"input width {x.shape[-1]} does not match the manifest's {self.width} "
                f"(manifest {self.manifest_sha256}); rebuild features with that manifest or retrain — "
                "the model never resizes itself"
            )
        if x.shape[1] != self.config.lookback:
            raise InputWidthError(
                f"input lookback {x.shape[1]} does not match the model's {self.config.lookback} "
                f"(manifest {self.manifest_sha256}); rebuild windows with the model's lookback or retrain"
            )
        x = (x - self.input_mean) / self.input_std
        # Missing values arrive as 0 already; anything non-finite left is treated as missing too. A missing step
        # becomes 0, the training mean after scaling, so it carries no spurious level.
        x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        if self.config.input_clip is not None:
            x = x.clamp(-self.config.input_clip, self.config.input_clip)
        return x * x_mask.unsqueeze(-1).to(x.dtype)
