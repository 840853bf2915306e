"""The per-day stock graph: who moves with whom, from trailing returns known at the day's close.

Each stock receives edges from its ``top_k`` most correlated peers (|corr| >= ``min_abs_corr``) over the
``window`` sessions ending on the day itself, plus its ``sector_peers`` most correlated stocks of the same
sector. Only returns up to the day are read, so the graph of day t never sees t+1. No self-loops:
GATv2Conv adds them itself. With ``top_k`` and ``sector_peers`` both 0 the graph has no edges and no correlation
is computed: the graph layer then attends to each stock's own self-loop.
"""

from __future__ import annotations

import numpy as np

from atft.config import GraphConfig


def day_graph(returns: np.ndarray, sectors: np.ndarray, config: GraphConfig) -> tuple[np.ndarray, np.ndarray]:
    """``returns`` [window, n] (NaN missing) and ``sectors`` [n] (-1 unknown) of one day's stocks.

    Returns ``edge_index`` [2, E] (source, target) over 0..n-1 and ``edge_attr`` [E, 2] float32.
    """
    if not config.top_k and not config.sector_peers:
        return np.zeros((2, 0), dtype=np.int64), np.zeros((0, 2), dtype=np.float32)
    corr = _correlation(returns, min_count=max(3, config.window // 2))
    strength = np.where(np.isfinite(corr), np.abs(corr), -1.0)
    np.fill_diagonal(strength, -np.inf)
    chosen = _top(np.where(strength >= config.min_abs_corr, strength, -np.inf), config.top_k)
    same = (sectors[:, None] == sectors[None, :]) & (sectors[:, None] >= 0)
    if config.sector_peers:
        peers = np.where(same & ~chosen, strength, -np.inf)
        np.fill_diagonal(peers, -np.inf)
        chosen |= _top(peers, config.sector_peers)
    target, source = np.nonzero(chosen)  # row i (the receiving stock) chose column j
    attr = np.stack([np.nan_to_num(corr[target, source]), same[target, source]], axis=1).astype(np.float32)
    order = np.lexsort((source, target))  # deterministic edge order
    edge_index = np.stack([source[order], target[order]]).astype(np.int64)
    return edge_index, attr[order]


def _correlation(returns: np.ndarray, min_count: int) -> np.ndarray:
    """Pearson correlation of each pair of stocks over the window, one matrix product.

    Each stock is demeaned over its own days with a return; a missing day then contributes 0 to both the
    covariance and the variance. A stock with fewer than ``min_count`` returns gets NaN correlations.
    """
    valid = np.isfinite(returns)
    count = valid.sum(axis=0)
    mean = np.where(valid, returns, 0.0).sum(axis=0) / np.maximum(count, 1)
    centred = np.where(valid, returns - mean, 0.0)
    norm = np.sqrt((centred * centred).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (centred.T @ centred) / np.outer(norm, norm)
    usable = (count >= min_count) & (norm > 0)
    corr[~usable, :] = np.nan
    corr[:, ~usable] = np.nan
    return corr


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Boolean [n, n]: per row, the (up to) k largest finite scores (a deterministic choice among ties)."""
    n = scores.shape[0]
    chosen = np.zeros(scores.shape, dtype=bool)
    if n == 0 or k == 0:
        return chosen
    k = min(k, n)
    order = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # O(n) per row: no full sort of n candidates
    rows = np.repeat(np.arange(n), k)
    picked = order.ravel()
    keep = np.isfinite(scores[rows, picked])
    chosen[rows[keep], picked[keep]] = True
    return chosen
