"""Trailing-window kernels over ``[stocks, days]`` float64 panels.

Every result at day t is built from the window's values only, by adding lagged slices in a fixed
order. So a value is bit-identical whether the panel holds all history or only the trailing days that
an incremental rebuild loads, and it never reads a day after t. A window that contains NaN gives NaN.
"""

from __future__ import annotations

import numpy as np


def lag(x: np.ndarray, k: int) -> np.ndarray:
    """x shifted k days later along the time axis (the value of day t - k at day t); NaN where t < k."""
    out = np.full_like(x, np.nan)
    if k == 0:
        out[:] = x
    elif k < x.shape[-1]:
        out[..., k:] = x[..., :-k]
    return out


def window_sum(x: np.ndarray, w: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Sum (or ``weights``-weighted sum, weights[k] for lag k) of the last ``w`` values, the current one included."""
    out = np.full_like(x, np.nan)
    n = x.shape[-1]
    if w > n:
        return out
    acc = x[..., w - 1 :].copy()
    if weights is not None:
        acc *= weights[0]
    for k in range(1, w):
        # Fixed order, lag 0 first: the value at t depends only on the window's values, bit for bit.
        term = x[..., w - 1 - k : n - k]
        acc += term if weights is None else weights[k] * term
    out[..., w - 1 :] = acc
    return out


def window_mean(x: np.ndarray, w: int) -> np.ndarray:
    return window_sum(x, w) / w


def window_moment(x: np.ndarray, w: int, power: int, mean: np.ndarray | None = None) -> np.ndarray:
    """Mean of (x - window mean)^power over the window: the centred moment, two-pass for accuracy."""
    mean = window_mean(x, w) if mean is None else mean
    out = np.full_like(x, np.nan)
    n = x.shape[-1]
    if w > n:
        return out
    centre = mean[..., w - 1 :]
    acc = (x[..., w - 1 :] - centre) ** power
    for k in range(1, w):
        acc += (x[..., w - 1 - k : n - k] - centre) ** power
    out[..., w - 1 :] = acc / w
    return out


def window_std(x: np.ndarray, w: int, ddof: int = 1) -> np.ndarray:
    return np.sqrt(window_moment(x, w, 2) * (w / (w - ddof)))


def window_cov(x: np.ndarray, y: np.ndarray, w: int) -> np.ndarray:
    """Sample covariance of x and y over the window (ddof=1)."""
    mx, my = window_mean(x, w), window_mean(y, w)
    out = np.full_like(x, np.nan)
    n = x.shape[-1]
    if w > n:
        return out
    cx, cy = mx[..., w - 1 :], my[..., w - 1 :]
    acc = (x[..., w - 1 :] - cx) * (y[..., w - 1 :] - cy)
    for k in range(1, w):
        acc += (x[..., w - 1 - k : n - k] - cx) * (y[..., w - 1 - k : n - k] - cy)
    out[..., w - 1 :] = acc / (w - 1)
    return out


def window_extreme(x: np.ndarray, w: int, largest: bool) -> np.ndarray:
    """Rolling max (``largest``) or min; NaN propagates."""
    pick = np.maximum if largest else np.minimum
    out = np.full_like(x, np.nan)
    n = x.shape[-1]
    if w > n:
        return out
    acc = x[..., w - 1 :].copy()
    for k in range(1, w):
        pick(acc, x[..., w - 1 - k : n - k], out=acc)
    out[..., w - 1 :] = acc
    return out


def ema_weights(span: int, length: int) -> np.ndarray:
    """EMA weights (alpha = 2 / (span + 1)) truncated to ``length`` lags and renormalised.

    A finite window keeps the feature's lookback honest and its value independent of how much history
    was loaded; with length = 2 x span the truncated tail holds under 2% of the weight.
    """
    alpha = 2.0 / (span + 1.0)
    weights = alpha * (1.0 - alpha) ** np.arange(length)
    return weights / weights.sum()


def ema(x: np.ndarray, span: int, length: int) -> np.ndarray:
    return window_sum(x, length, ema_weights(span, length))


def safe_divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b with NaN where b is 0 or NaN (no inf in a feature table)."""
    out = np.full(np.broadcast(a, b).shape, np.nan)
    np.divide(a, b, out=out, where=(b != 0) & np.isfinite(b))
    return out
