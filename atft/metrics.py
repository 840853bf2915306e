"""Cross-sectional signal metrics, computed per trading day and vectorised over days.

IC_t is Pearson(pred_t, label_t) across the stocks with both values on day t; RankIC_t uses ranks
(Spearman). Days with fewer than ``min_stocks`` stocks give NaN and are left out of means. A stock counts on a
day only if it is in the mask and both its prediction and its label are finite.

:func:`evaluate_predictions` computes every metric for every horizon into one flat dict keyed ``<metric>_<h>d``
(plus the window-wide ``nonfinite_predictions``); :func:`metric_names` and :func:`parse_metric_name` are the
single definition of those names, used by the evaluation gates.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from atft.config import PortfolioConfig
from atft.portfolio import jpx_sharpe, sharpe_ratio, simulate_long_short

# Metrics computed for each horizon h, reported as f"{name}_{h}d".
HORIZON_METRICS: tuple[str, ...] = (
    "ic",
    "rank_ic",
    "icir",
    "rank_icir",
    "pred_std",
    "collapse_ratio",
    "hit_rate",
    "ls_sharpe",
    "ls_annual_return",
    "max_drawdown",
    "turnover",
    "jpx_sharpe",
)
# Metrics over the whole evaluation window, reported under their bare name.
WINDOW_METRICS: tuple[str, ...] = ("nonfinite_predictions",)
# Where a smaller value is the better one (the champion comparison flips for these); higher is better elsewhere.
LOWER_IS_BETTER: frozenset[str] = frozenset({"max_drawdown", "turnover", "nonfinite_predictions"})

_HORIZON_NAME = re.compile(r"(?P<base>[a-z_]+?)_(?P<horizon>[1-9][0-9]*)d")


def daily_ic(pred: np.ndarray, label: np.ndarray, mask: np.ndarray, min_stocks: int = 5) -> np.ndarray:
    """[D] Pearson IC per day from dense [D, S] arrays; ``mask`` marks the stocks that count.

    A day whose predictions (or labels) are all equal has no correlation: NaN, not float noise.
    """
    mask = _usable(pred, label, mask)
    pc, yc = _centred(pred, mask), _centred(label, mask)
    with np.errstate(invalid="ignore", divide="ignore"):
        ic = (pc * yc).sum(1) / np.sqrt((pc * pc).sum(1) * (yc * yc).sum(1))
    return np.where(mask.sum(1) >= min_stocks, ic, np.nan)


def daily_rank_ic(pred: np.ndarray, label: np.ndarray, mask: np.ndarray, min_stocks: int = 5) -> np.ndarray:
    """[D] Spearman RankIC per day: the IC of within-day ranks (average ranks for ties)."""
    mask = _usable(pred, label, mask)
    return daily_ic(_ranks(pred, mask), _ranks(label, mask), mask, min_stocks)


def daily_std(values: np.ndarray, mask: np.ndarray, min_stocks: int = 5) -> np.ndarray:
    """[D] population std (ddof=0) across each day's masked-in finite values; NaN on days with < min_stocks.

    Exactly 0 on a day whose values are all equal.
    """
    mask = mask & np.isfinite(values)
    centred = _centred(values, mask)
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.sqrt((centred * centred).sum(1) / mask.sum(1))
    return np.where(mask.sum(1) >= min_stocks, std, np.nan)


def collapse_ratio(pred: np.ndarray, label: np.ndarray, mask: np.ndarray, min_stocks: int = 5) -> float:
    """Median over days of std_t(pred) / std_t(label), both across the stocks with both values on day t.

    Days with fewer than ``min_stocks`` such stocks, or with a label std of 0, are left out; NaN if none remain.
    A constant prediction gives exactly 0. The ratio is only meaningful when predictions are on the scale of the
    labels they are compared with (a model trained on raw returns evaluated on raw returns, say).
    """
    mask = _usable(pred, label, mask)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = daily_std(pred, mask, min_stocks) / daily_std(label, mask, min_stocks)
    return _median(ratio)


def hit_rate(pred: np.ndarray, label: np.ndarray, mask: np.ndarray, min_stocks: int = 5) -> float:
    """Fraction of stock-days where pred and label sit on the same side of their day's cross-sectional mean.

    Pooled over the stock-days of the days with at least ``min_stocks`` stocks; a value exactly at its day's mean
    counts as a miss, so a constant prediction scores 0. NaN if no day qualifies. Demeaning per day makes this a
    ranking measure: a market-wide move does not count as a hit.
    """
    hits, counts = _hits(pred, label, mask, min_stocks)
    return float(hits.sum() / counts.sum()) if counts.sum() else float("nan")


def daily_hit_rate(pred: np.ndarray, label: np.ndarray, mask: np.ndarray, min_stocks: int = 5) -> np.ndarray:
    """[D] :func:`hit_rate` of each day alone; NaN on days with fewer than ``min_stocks`` stocks."""
    hits, counts = _hits(pred, label, mask, min_stocks)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, hits / counts, np.nan)


def _hits(pred: np.ndarray, label: np.ndarray, mask: np.ndarray, min_stocks: int) -> tuple[np.ndarray, np.ndarray]:
    """[D] stocks on the same side of the day's mean in pred and label, and [D] stocks counted (0 on short days)."""
    mask = _usable(pred, label, mask)
    mask = mask & (mask.sum(1) >= min_stocks)[:, None]
    return (_centred(pred, mask) * _centred(label, mask) > 0).sum(1), mask.sum(1)


def summarise(daily: np.ndarray) -> tuple[float, float]:
    """(mean, IR) of a daily series over its finite days; IR = mean / std (ddof=1), not annualised."""
    values = daily[np.isfinite(daily)]
    if values.size < 2:
        return float("nan"), float("nan")
    return float(values.mean()), sharpe_ratio(values)


def evaluate_predictions(
    pred: np.ndarray,
    label: np.ndarray,
    mask: np.ndarray,
    horizons: Sequence[int],
    portfolio: PortfolioConfig,
    min_stocks: int = 5,
    returns: np.ndarray | None = None,
) -> dict[str, float]:
    """Every metric of :data:`HORIZON_METRICS` for every horizon, plus ``nonfinite_predictions``.

    ``pred`` and ``label`` are ``[D, S, H]`` with H = len(horizons); ``mask`` is ``[D, S, H]`` or ``[D, S]``.
    ``returns`` ([D, S, H], default ``label``) are the raw h-day forward returns the portfolio metrics trade;
    with CS-Z labels, pass them so that the signal metrics stay scale-free and the book earns returns. Per h:
    ``ic``/``rank_ic`` are means of the daily series and ``icir``/``rank_icir`` their mean / std (ddof=1, not
    annualised); ``pred_std`` is the median over days of :func:`daily_std` of pred; ``collapse_ratio`` and
    ``hit_rate`` as in their functions; ``ls_sharpe``, ``ls_annual_return``, ``max_drawdown`` and ``turnover``
    (mean daily) come from :func:`atft.portfolio.simulate_long_short`; ``jpx_sharpe`` from
    :func:`atft.portfolio.jpx_sharpe`. ``nonfinite_predictions`` counts the masked-in stock-day-horizon entries
    whose prediction is NaN or inf (they are masked out of every other metric).
    """
    pred, label, mask = np.asarray(pred, dtype=float), np.asarray(label, dtype=float), np.asarray(mask, dtype=bool)
    if pred.ndim != 3 or label.shape != pred.shape or pred.shape[2] != len(horizons):
        raise ValueError(
            f"pred {pred.shape} and label {label.shape} must both be [days, stocks, horizons] with "
            f"{len(horizons)} horizons {list(horizons)}"
        )
    if mask.shape not in (pred.shape, pred.shape[:2]):
        raise ValueError(f"mask {mask.shape} must be {pred.shape} or {pred.shape[:2]}")
    mask = np.broadcast_to(mask if mask.ndim == 3 else mask[..., None], pred.shape)
    returns = label if returns is None else np.asarray(returns, dtype=float)
    if returns.shape != pred.shape:
        raise ValueError(f"returns {returns.shape} must be {pred.shape}, like pred")
    out = {"nonfinite_predictions": float((mask & ~np.isfinite(pred)).sum())}
    for k, h in enumerate(horizons):
        signal = _horizon_signal_metrics(pred[..., k], label[..., k], mask[..., k], min_stocks)
        book = _horizon_book_metrics(pred[..., k], returns[..., k], mask[..., k], h, portfolio)
        out.update({f"{base}_{h}d": float(value) for base, value in (signal | book).items()})
    return out


def metric_names(horizons: Sequence[int]) -> list[str]:
    """Every metric name :func:`evaluate_predictions` reports for a model with these horizons."""
    return [*WINDOW_METRICS, *(f"{base}_{h}d" for h in horizons for base in HORIZON_METRICS)]


def parse_metric_name(name: str, horizons: Sequence[int]) -> tuple[str, int | None]:
    """(base metric, horizon) of e.g. ``rank_ic_5d``, or (name, None) for a window metric.

    Raises ValueError listing the known names when the metric is unknown or the model lacks the horizon.
    """
    if name in WINDOW_METRICS:
        return name, None
    match = _HORIZON_NAME.fullmatch(name)
    known = f"known metrics: {', '.join(metric_names(horizons))}"
    if match is None or match["base"] not in HORIZON_METRICS:
        raise ValueError(f"unknown metric {name!r}; {known}")
    horizon = int(match["horizon"])
    if horizon not in horizons:
        raise ValueError(f"metric {name!r}: the model has no {horizon}d horizon (horizons {list(horizons)}); {known}")
    return match["base"], horizon


def _horizon_signal_metrics(pred: np.ndarray, label: np.ndarray, mask: np.ndarray, min_stocks: int) -> dict[str, float]:
    mask = _usable(pred, label, mask)
    ic, icir = summarise(daily_ic(pred, label, mask, min_stocks))
    rank_ic, rank_icir = summarise(daily_rank_ic(pred, label, mask, min_stocks))
    return {
        "ic": ic,
        "rank_ic": rank_ic,
        "icir": icir,
        "rank_icir": rank_icir,
        "pred_std": _median(daily_std(pred, mask, min_stocks)),
        "collapse_ratio": collapse_ratio(pred, label, mask, min_stocks),
        "hit_rate": hit_rate(pred, label, mask, min_stocks),
    }


def _horizon_book_metrics(
    pred: np.ndarray, returns: np.ndarray, mask: np.ndarray, horizon: int, portfolio: PortfolioConfig
) -> dict[str, float]:
    mask = _usable(pred, returns, mask)
    book = simulate_long_short(pred, returns, mask, portfolio, horizon)
    return {
        "ls_sharpe": book.sharpe,
        "ls_annual_return": book.annual_return,
        "max_drawdown": book.max_drawdown,
        "turnover": book.mean_turnover,
        "jpx_sharpe": jpx_sharpe(pred, returns, mask),
    }


def _usable(pred: np.ndarray, label: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return mask & np.isfinite(pred) & np.isfinite(label)


def _centred(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Values minus their day's mean over the masked-in stocks, 0 where masked out (float64)."""
    values = np.asarray(values, dtype=np.float64)
    n = mask.sum(1, keepdims=True)
    v = np.where(mask, values, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        centred = np.where(mask, v - v.sum(1, keepdims=True) / n, 0.0)
    # sum / n of equal values can miss the value by an ulp; an all-equal day must centre to exactly 0.
    constant = values.min(1, where=mask, initial=np.inf) == values.max(1, where=mask, initial=-np.inf)
    return np.where(constant[:, None], 0.0, centred)


def _ranks(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Average ranks (0-based) among each day's masked-in values; masked-out entries get NaN."""
    order = np.argsort(np.where(mask, values, np.nan), axis=1, kind="stable")  # masked-out (NaN) last
    ordered = np.take_along_axis(np.where(mask, values, np.nan), order, axis=1)
    position = np.broadcast_to(np.arange(values.shape[1], dtype=float), values.shape)
    # Ties share their average rank, as in Spearman's definition: the mean of a run's first and last position.
    # NaN != NaN, so masked-out entries never join a run.
    new_run = np.ones(values.shape, dtype=bool)
    new_run[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    run_end = np.ones(values.shape, dtype=bool)
    run_end[:, :-1] = new_run[:, 1:]
    first = np.maximum.accumulate(np.where(new_run, position, 0.0), axis=1)
    last = np.minimum.accumulate(np.where(run_end, position, np.inf)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty(values.shape)
    np.put_along_axis(ranks, order, (first + last) / 2.0, axis=1)
    return np.where(mask, ranks, np.nan)


def _median(daily: np.ndarray) -> float:
    values = daily[np.isfinite(daily)]
    return float(np.median(values)) if values.size else float("nan")
