"""Forward-return targets on adjusted prices, with a mask for incomplete target windows.

target_h at day t is close[t+h] / close[t] - 1, h sessions ahead. It is valid only when the stock has a
row at t and is still listed at t+h inside the data: the last h days of any build, and the last h days
before a delisting, have no target. These are labels: they look ahead by design and never enter inputs.
"""

from __future__ import annotations

import numpy as np

from atft.features.panel import MarketPanel


def target_names(horizons: list[int]) -> tuple[list[str], list[str], list[str]]:
    """(returns, their CS-Z versions, validity masks) column names, in manifest order."""
    returns = [f"target_{h}d" for h in horizons]
    return returns, [f"{name}_cs_z" for name in returns], [f"{name}_valid" for name in returns]


def forward_returns(panel: MarketPanel, horizons: list[int]) -> np.ndarray:
    """``[days, stocks, horizons]`` float32 forward returns; NaN where the target window is incomplete."""
    close, n_days = panel.close, panel.shape[1]
    out = np.full((n_days, panel.shape[0], len(horizons)), np.nan, dtype=np.float32)
    for j, h in enumerate(horizons):
        if h >= n_days:
            continue
        ahead = close[:, h:]
        valid = panel.present[:, :-h] & panel.alive[:, h:]
        out[:-h, :, j] = np.where(valid, ahead / close[:, :-h] - 1.0, np.nan).T
    return out
