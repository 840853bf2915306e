"""Cross-sectional signal metrics, computed per trading day and vectorised over days.

IC_t is Pearson(pred_t, label_t) across the stocks with both values on day t; RankIC_t uses ranks
(Spearman). Days with fewer than ``min_stocks`` stocks give NaN and are left out of means.
"""

from __future__ import annotations

import numpy as np


def daily_ic(pred: np.ndarray, label: np.ndarray, mask: np.ndarray, min_stocks: int = 5) -> np.ndarray:
    """[D] Pearson IC per day from dense [D, S] arrays; ``mask`` marks the stocks that count."""
    mask = mask & np.isfinite(pred) & np.isfinite(label)
    n = mask.sum(axis=1)
    p = np.where(mask, pred, 0.0)
    y = np.where(mask, label, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        pc = np.where(mask, p - p.sum(1, keepdims=True) / n[:, None], 0.0)
        yc = np.where(mask, y - y.sum(1, keepdims=True) / n[:, None], 0.0)
        ic = (pc * yc).sum(1) / np.sqrt((pc * pc).sum(1) * (yc * yc).sum(1))
    return np.where(n >= min_stocks, ic, np.nan)


def daily_rank_ic(pred: np.ndarray, label: np.ndarray, mask: np.ndarray, min_stocks: int = 5) -> np.ndarray:
    """[D] Spearman RankIC per day: the IC of within-day ranks (average ranks for ties)."""
    mask = mask & np.isfinite(pred) & np.isfinite(label)
    return daily_ic(_ranks(pred, mask), _ranks(label, mask), mask, min_stocks)


def _ranks(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Average ranks among each day's masked-in values; masked-out entries get NaN."""
    out = np.full(values.shape, np.nan)
    for d in range(values.shape[0]):
        keep = np.flatnonzero(mask[d])
        if keep.size:
            v = values[d, keep]
            order = np.argsort(v, kind="stable")
            ranks = np.empty(keep.size)
            ranks[order] = np.arange(keep.size, dtype=float)
            # Ties share their average rank, as in Spearman's definition.
            uniq, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
            if uniq.size < keep.size:
                ranks = (np.bincount(inverse, weights=ranks) / counts)[inverse]
            out[d, keep] = ranks
    return out


def summarise(daily: np.ndarray) -> tuple[float, float]:
    """(mean, IR = mean / std) of a daily series, ignoring NaN days."""
    values = daily[np.isfinite(daily)]
    if values.size < 2:
        return float("nan"), float("nan")
    std = values.std(ddof=1)
    return float(values.mean()), float(values.mean() / std) if std > 0 else float("nan")
