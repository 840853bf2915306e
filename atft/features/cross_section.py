"""Cross-sectional z-score normalisation of a ``[days, stocks, features]`` panel, one day at a time.

For each (day, feature) the mean and std are taken over the stocks that have a value that day (NaN means
"no value"), the same statistics as Qlib's ``CSZScoreNorm`` (ddof=1), plus what it lacks: a guard for too
few stocks and for zero or near-zero std, and clipping. Nothing is fitted over time, so there is nothing
to leak across a train/test boundary; NaN stays NaN until ``fill_missing``.

Determinism: a day's output depends on that day's values only, bit for bit. Each day is reduced by one
thread in a fixed sequential order over stocks (no pairwise or blocked summation, no fastmath), so an
incremental rebuild of trailing days equals a full rebuild exactly.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from numba import njit, prange

FILL_MODES = ("none", "zero")


def _compile(kernel: Callable) -> Callable:
    try:
        return njit(parallel=True, cache=True)(kernel)
    except RuntimeError:
        # numba finds no writable cache directory (read-only install and read-only home): compile in memory.
        warnings.warn("numba cannot cache cs_zscore's kernel here; it is compiled on first use", stacklevel=2)
        return njit(parallel=True)(kernel)


@_compile
def _cs_zscore_kernel(panel, out, clip, min_stocks, min_std, ddof):
    days, stocks, features = panel.shape
    # Parallel over days only: one thread owns a whole day, so its reduction order never depends on the
    # panel's length or on scheduling.
    for d in prange(days):
        count = np.zeros(features, dtype=np.int64)
        total = np.zeros(features, dtype=np.float64)
        for s in range(stocks):
            for f in range(features):
                v = np.float64(panel[d, s, f])
                if v == v:  # not NaN
                    count[f] += 1
                    total[f] += v
        mean = np.empty(features, dtype=np.float64)
        for f in range(features):
            mean[f] = total[f] / count[f] if count[f] > 0 else np.nan
        # Two passes (mean, then squared deviations) rather than sum of squares: no cancellation when
        # the mean is large relative to the spread.
        squares = np.zeros(features, dtype=np.float64)
        for s in range(stocks):
            for f in range(features):
                v = np.float64(panel[d, s, f])
                if v == v:
                    dev = v - mean[f]
                    squares[f] += dev * dev
        std = np.empty(features, dtype=np.float64)
        for f in range(features):
            n = count[f]
            std[f] = np.sqrt(squares[f] / (n - ddof)) if n > ddof else np.nan
            # Negated so that NaN/inf statistics (an inf in the input) are rejected too; std > 0 keeps the
            # zero-std guard when min_std is 0.
            if not (n >= min_stocks and np.isfinite(std[f]) and std[f] >= min_std and std[f] > 0):
                mean[f] = np.nan  # makes the whole slice NaN without a branch in the loop below
                std[f] = 1.0
        for s in range(stocks):
            for f in range(features):
                z = (np.float64(panel[d, s, f]) - mean[f]) / std[f]
                # Both comparisons are false for NaN, so a missing value passes through as NaN.
                if z > clip:
                    z = clip
                elif z < -clip:
                    z = -clip
                out[d, s, f] = z


def cs_zscore(panel: np.ndarray, *, clip: float, min_stocks: int, min_std: float, ddof: int = 1) -> np.ndarray:
    """Per-day, per-feature cross-sectional z-score of ``panel[days, stocks, features]``, as float32.

    ``z = (x - mean) / std`` over the stocks with a value (not NaN) that day, std with ``ddof``; statistics
    in float64. A (day, feature) slice is all NaN when fewer than ``min_stocks`` stocks have a value, when
    std < ``min_std`` (absolute, in the feature's units) or std == 0, or when its statistics are not
    finite. Keep ``min_std`` above 0: a constant slice's float64 mean can be an ulp off, leaving a std of
    ~1e-17 that only ``min_std`` catches. NaN inputs stay NaN. ``|z|`` is clipped at ``clip`` (``np.inf``
    for no clipping).

    ``panel`` must be float32 or float64; a non-C-contiguous panel is copied first. The output is the
    only allocation of the panel's size.
    """
    if panel.ndim != 3:
        raise ValueError(f"panel must be [days, stocks, features], got shape {panel.shape}")
    if panel.dtype not in (np.float32, np.float64):
        raise TypeError(f"panel must be float32 or float64, got {panel.dtype}")
    if not clip > 0:
        raise ValueError(f"clip must be > 0, got {clip}")
    if ddof < 0:
        raise ValueError(f"ddof must be >= 0, got {ddof}")
    if min_stocks <= ddof:
        raise ValueError(f"min_stocks must exceed ddof ({ddof}) for std to exist, got {min_stocks}")
    if not min_std >= 0:
        raise ValueError(f"min_std must be >= 0, got {min_std}")
    panel = np.ascontiguousarray(panel)  # one compiled (and cached) layout, read in memory order
    out = np.empty(panel.shape, dtype=np.float32)
    _cs_zscore_kernel(panel, out, float(clip), int(min_stocks), float(min_std), int(ddof))
    return out


def fill_missing(z: np.ndarray, fill: str) -> np.ndarray:
    """The explicit fill step after ``cs_zscore``. ``"none"`` returns ``z`` itself; ``"zero"`` returns a
    new array with NaN replaced by 0 (the cross-sectional mean); ``z`` is never modified."""
    if fill == "none":
        return z
    if fill == "zero":
        filled = z.copy()
        np.copyto(filled, 0, where=np.isnan(filled))
        return filled
    raise ValueError(f"fill must be one of {FILL_MODES}, got {fill!r}")
