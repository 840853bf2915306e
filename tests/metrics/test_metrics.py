"""Signal metrics against plain per-day loops with pandas (scipy is not installed), including NaN, masked stocks,
ties, thin days and a collapsed (constant) prediction; and the metric-name contract the gates rely on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atft.config import PortfolioConfig
from atft.metrics import (
    HORIZON_METRICS,
    collapse_ratio,
    daily_ic,
    daily_rank_ic,
    daily_std,
    evaluate_predictions,
    hit_rate,
    metric_names,
    parse_metric_name,
    summarise,
)

MIN_STOCKS = 5


def _panel(seed: int, days: int = 15, stocks: int = 30, ties: bool = False):
    """Correlated pred/label with NaN in both, masked-out stocks, a day with 3 stocks and an empty day."""
    rng = np.random.default_rng(seed)
    label = 0.02 * rng.standard_normal((days, stocks))
    pred = label + 0.03 * rng.standard_normal((days, stocks))
    if ties:
        pred = np.round(pred * 50)  # a handful of integer levels: many tied predictions per day
    mask = rng.random((days, stocks)) > 0.2
    pred[rng.random((days, stocks)) < 0.05] = np.nan
    label[rng.random((days, stocks)) < 0.05] = np.nan
    mask[1] = False
    mask[1, :3] = True
    mask[2] = False
    return pred, label, mask


def _day_frames(pred, label, mask):
    """Per day, the (pred, label) frame of the stocks that count."""
    for d in range(pred.shape[0]):
        keep = mask[d] & np.isfinite(pred[d]) & np.isfinite(label[d])
        yield pd.DataFrame({"p": pred[d, keep], "y": label[d, keep]})


def _reference_daily(pred, label, mask, method: str) -> np.ndarray:
    out = []
    for frame in _day_frames(pred, label, mask):
        out.append(frame.corr(method=method).loc["p", "y"] if len(frame) >= MIN_STOCKS else np.nan)
    return np.array(out)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_daily_ic_and_rank_ic_match_pandas(seed: int, ties: bool) -> None:
    pred, label, mask = _panel(seed, ties=ties)
    ic = daily_ic(pred, label, mask, MIN_STOCKS)
    rank_ic = daily_rank_ic(pred, label, mask, MIN_STOCKS)
    np.testing.assert_allclose(ic, _reference_daily(pred, label, mask, "pearson"), atol=1e-12)
    np.testing.assert_allclose(rank_ic, _reference_daily(pred, label, mask, "spearman"), atol=1e-12)
    assert np.isnan(ic[1]) and np.isnan(ic[2]) and np.isnan(rank_ic[1])  # 3 stocks, then none
    assert np.isfinite(ic[[0, *range(3, len(ic))]]).all()


def test_ir_is_mean_over_std_ddof1_of_the_finite_days() -> None:
    pred, label, mask = _panel(3)
    daily = pd.Series(_reference_daily(pred, label, mask, "spearman")).dropna()
    mean, ir = summarise(daily_rank_ic(pred, label, mask, MIN_STOCKS))
    assert mean == pytest.approx(daily.mean())
    assert ir == pytest.approx(daily.mean() / daily.std())  # pandas std is ddof=1
    assert summarise(np.array([0.1, np.nan])) == (pytest.approx(np.nan, nan_ok=True),) * 2


def test_daily_std_collapse_ratio_and_hit_rate_match_loops() -> None:
    pred, label, mask = _panel(4)
    stds, ratios, hits, total = [], [], 0, 0
    for frame in _day_frames(pred, label, mask):
        if len(frame) < MIN_STOCKS:
            stds.append(np.nan)
            continue
        stds.append(frame.p.std(ddof=0))
        ratios.append(frame.p.std(ddof=0) / frame.y.std(ddof=0))
        dp, dy = frame.p - frame.p.mean(), frame.y - frame.y.mean()
        hits += int((np.sign(dp) == np.sign(dy)).sum())
        total += len(frame)
    usable = mask & np.isfinite(pred) & np.isfinite(label)
    np.testing.assert_allclose(daily_std(pred, usable, MIN_STOCKS), stds, atol=1e-15)
    assert collapse_ratio(pred, label, mask, MIN_STOCKS) == pytest.approx(np.median(ratios))
    assert hit_rate(pred, label, mask, MIN_STOCKS) == pytest.approx(hits / total)
    assert 0.5 < hits / total < 1  # the panel's pred carries signal


def test_constant_prediction_reports_collapse_honestly() -> None:
    _, label, mask = _panel(5)
    pred = np.full(label.shape, 0.1)  # 0.1 x n / n is not exactly 0.1: float noise must not become an IC
    metrics = evaluate_predictions(pred[..., None], label[..., None], mask, [1], PortfolioConfig(top_k=2))
    assert np.isnan(daily_ic(pred, label, mask)).all()
    assert np.isnan(metrics["ic_1d"]) and np.isnan(metrics["rank_ic_1d"]) and np.isnan(metrics["rank_icir_1d"])
    assert metrics["pred_std_1d"] == 0.0
    assert metrics["collapse_ratio_1d"] == 0.0
    assert metrics["hit_rate_1d"] == 0.0
    assert metrics["nonfinite_predictions"] == 0.0


def test_evaluate_predictions_reports_every_named_metric_per_horizon() -> None:
    rng = np.random.default_rng(6)
    pred, label, mask = (np.stack(a, axis=-1) for a in zip(_panel(6), _panel(7), strict=True))
    pred = pred.astype(np.float32)
    masked_in_nan = int((mask & np.isnan(pred)).sum())
    metrics = evaluate_predictions(pred, label, mask, [1, 5], PortfolioConfig(top_k=3))
    assert list(metrics) == metric_names([1, 5])
    assert metrics["nonfinite_predictions"] == masked_in_nan > 0
    # Each horizon's slice gives the same numbers on its own; a [D, S] mask broadcasts over horizons.
    single = evaluate_predictions(pred[..., 1:], label[..., 1:], mask[..., 1:], [5], PortfolioConfig(top_k=3))
    assert all(single[f"{m}_5d"] == pytest.approx(metrics[f"{m}_5d"], nan_ok=True) for m in HORIZON_METRICS)
    flat = rng.random(mask.shape[:2]) > 0.1
    both = evaluate_predictions(pred, label, flat, [1, 5], PortfolioConfig())
    again = evaluate_predictions(pred, label, np.repeat(flat[..., None], 2, axis=-1), [1, 5], PortfolioConfig())
    assert both == pytest.approx(again, nan_ok=True)
    assert metrics["rank_ic_5d"] == pytest.approx(
        summarise(daily_rank_ic(pred[..., 1], label[..., 1], mask[..., 1]))[0]
    )


def test_the_book_trades_raw_returns_while_signal_metrics_use_the_labels() -> None:
    pred, label, mask = (a[..., None] for a in _panel(8))
    returns = 0.5 * label  # e.g. CS-Z labels for the signal, raw forward returns for the book
    config = PortfolioConfig(top_k=3, cost_bps=0.0)
    split = evaluate_predictions(pred, label, mask, [1], config, returns=returns)
    on_labels = evaluate_predictions(pred, label, mask, [1], config)
    on_returns = evaluate_predictions(pred, returns, mask, [1], config)
    assert split["rank_ic_1d"] == on_labels["rank_ic_1d"]
    assert split["collapse_ratio_1d"] == on_labels["collapse_ratio_1d"]
    assert split["ls_annual_return_1d"] == pytest.approx(on_returns["ls_annual_return_1d"])
    assert split["ls_annual_return_1d"] == pytest.approx(0.5 * on_labels["ls_annual_return_1d"])
    with pytest.raises(ValueError, match="returns"):
        evaluate_predictions(pred, label, mask, [1], config, returns=returns[:, :-1])


@pytest.mark.parametrize(
    ("pred_shape", "mask_shape", "horizons", "message"),
    [
        ((4, 6, 2), (4, 6, 2), [1], "2 horizons|1 horizons"),
        ((4, 6), (4, 6), [1], r"\[days, stocks, horizons\]"),
        ((4, 6, 1), (4, 5), [1], "mask"),
    ],
)
def test_evaluate_predictions_rejects_mismatched_shapes(pred_shape, mask_shape, horizons, message) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate_predictions(
            np.zeros(pred_shape), np.zeros(pred_shape), np.ones(mask_shape, bool), horizons, PortfolioConfig()
        )


def test_parse_metric_name() -> None:
    assert parse_metric_name("rank_ic_5d", [1, 5]) == ("rank_ic", 5)
    assert parse_metric_name("ic_10d", [10]) == ("ic", 10)
    assert parse_metric_name("nonfinite_predictions", [1]) == ("nonfinite_predictions", None)
    with pytest.raises(ValueError, match=r"unknown metric 'sharpe_5d'; known metrics: nonfinite_predictions, ic_5d"):
        parse_metric_name("sharpe_5d", [5])
    with pytest.raises(ValueError, match=r"no 20d horizon \(horizons \[1, 5\]\).*rank_ic_1d"):
        parse_metric_name("rank_ic_20d", [1, 5])
    with pytest.raises(ValueError, match="unknown metric 'ic_05d'"):
        parse_metric_name("ic_05d", [5])
