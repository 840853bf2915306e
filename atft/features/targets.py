"""Forward-return targets on adjusted prices, with a mask for incomplete target windows.

target_h at day t is close[t+lag+h] / close[t+lag] - 1: h sessions of return, entered ``lag`` sessions
(``features.execution_lag``) after the close that day t's features were computed from. A trade cannot fill
at the very close its signal used; entering there also earns the bid-ask bounce, which flatters short-term
reversal. Qlib's label (``Ref($close, -2) / Ref($close, -1) - 1``) and the JPX competition's leave one
session, lag 1. Lag 0 is the close-to-close return from t, which the synthetic market's oracle describes.

A target is valid only when the stock has a row at t and is still listed at t+lag and at t+lag+h inside the
data: the last lag+h days of any build, and the last lag+h days before a delisting, have no target. The
label of day t ends at t+lag+h (``FeatureManifest.label_span``), and every purge reaches that far. These
are labels: they look ahead by design and never enter inputs.
"""

from __future__ import annotations

import numpy as np

from atft.features.panel import MarketPanel


def target_names(horizons: list[int]) -> tuple[list[str], list[str], list[str]]:
    """(returns, their CS-Z versions, validity masks) column names, in manifest order."""
    returns = [f"target_{h}d" for h in horizons]
    return returns, [f"{name}_cs_z" for name in returns], [f"{name}_valid" for name in returns]


def forward_returns(panel: MarketPanel, horizons: list[int], lag: int = 0) -> np.ndarray:
    """``[days, stocks, horizons]`` float32 forward returns entered ``lag`` sessions after each day; NaN where the
    target window is incomplete."""
    close, n_days = panel.close, panel.shape[1]
    out = np.full((n_days, panel.shape[0], len(horizons)), np.nan, dtype=np.float32)
    for j, h in enumerate(horizons):
        span = lag + h
        if span >= n_days:
            continue
        entry, exit_ = close[:, lag : n_days - h], close[:, span:]
        valid = panel.present[:, :-span] & panel.alive[:, lag : n_days - h] & panel.alive[:, span:]
        out[:-span, :, j] = np.where(valid, exit_ / entry - 1.0, np.nan).T
    return out
