"""APEX-style baseline: a PatchTST ranker (the lighter reference model), same signature, graph arguments ignored."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from atft.config import ModelConfig
from atft.models.contract import ContractModel

# Channel-independent PatchTST over all ~150 features costs 150 encoder passes per stock-day; a learned projection
# to this many mixed channels first cuts that ~10x on CPU while every feature still reaches every channel.
MIXED_CHANNELS = 16
REVIN_EPS = 1e-5


class APEX(ContractModel):
    """Scores [N, H]: mix features -> RevIN per channel -> patches -> shared Transformer -> per-channel flatten
    head -> linear mixing across channels -> linear ranking head.
    """

    name = "apex"

    def __init__(
        self, config: ModelConfig, width: int, horizons: list[int], manifest_sha256: str,
        groups: Sequence[str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(config, width, horizons, manifest_sha256, groups)
        hidden = config.hidden
        if hidden % config.attention_heads:
            raise ValueError(f"hidden {hidden} must be a multiple of attention_heads {config.attention_heads}")
        if config.patch_len > config.lookback:
            raise ValueError(f"patch_len {config.patch_len} exceeds the lookback {config.lookback}")
        span = config.lookback - config.patch_len
        n_patches = span // config.patch_stride + 1
        # Patches are aligned to end on the window's last step (the day itself); leftover oldest steps are dropped.
        self.first_step = span % config.patch_stride
        self.mix = nn.Linear(self.layer_width, MIXED_CHANNELS)
        self.patch_embed = nn.Linear(config.patch_len, hidden)
        self.position = nn.Parameter(torch.randn(n_patches, hidden) * 0.02)
        # PatchTST's own configs use d_ff = 2·d_model; PyTorch's default of 2,048 would dominate the cost.
        layer = nn.TransformerEncoderLayer(
            hidden, config.attention_heads, dim_feedforward=2 * hidden, dropout=config.dropout, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, config.transformer_layers, enable_nested_tensor=False)
        # RevIN's de-normalisation has no forecast to act on in a ranker, and the removed level is exactly what ranks
        # stocks, so each channel's window mean and std go back in next to its flattened patches.
        self.channel_head = nn.Linear(n_patches * hidden + 2, hidden)
        # Pooling across channels is a learned linear mix, not a mean: the mixed channels are not interchangeable.
        self.channel_mixing = nn.Sequential(
            nn.Linear(MIXED_CHANNELS * hidden, hidden), nn.GELU(), nn.Dropout(config.dropout)
        )
        self.head = nn.Linear(hidden, len(horizons))

    def forward(self, x: Tensor, x_mask: Tensor, edge_index: Tensor, edge_attr: Tensor, day: Tensor) -> Tensor:
        # Graph arguments are accepted for the one signature and ignored.
        x = self.prepare_inputs(x, x_mask)
        channels = self.mix(self.layer_inputs(x)).transpose(1, 2)  # [N, C, L]
        mean = channels.mean(-1, keepdim=True)
        std = (channels.var(-1, keepdim=True, unbiased=False) + REVIN_EPS).sqrt()
        normed = ((channels - mean) / std)[..., self.first_step :]
        patches = normed.unfold(-1, self.config.patch_len, self.config.patch_stride)  # [N, C, P, patch_len]
        tokens = self.encoder((self.patch_embed(patches) + self.position).flatten(0, 1))  # [N·C, P, hidden]
        n = x.shape[0]
        per_channel = self.channel_head(torch.cat([tokens.reshape(n, MIXED_CHANNELS, -1), mean, std], dim=-1))
        return self.neutral(self.head(self.channel_mixing(per_channel.flatten(1))), x, x_mask, day)
