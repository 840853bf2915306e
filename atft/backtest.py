"""Backtest replay of the rolling-retrain schedule: what the scheduled retrains would have predicted, day by day.

As-of dates fall every ``step`` sessions. The retrain on an as-of date trains on the windows of
:func:`atft.windows.retrain_windows` (what the scheduled retrain of that day uses; its eval segment, before the
as-of date, is the retrain's own gate window and is not part of the replay) and then predicts the ``step``
sessions after the as-of date, until the next retrain replaces it. Each out-of-sample (OOS) segment starts strictly
after its as-of date and ends on the next one, so the stitched segments cover the replay without overlap or gap, and
every label a model learnt from ended on or before its as-of date (the purges of ``retrain_windows`` and
``DayDataset``).

Each segment is scored against the same baselines as the model (ridge and LightGBM on the CS-Z features fitted on
the window's training days, LightGBM early-stopped on its validation days, the 5-day reversal factor), any other
models asked for (the APEX baseline) trained on the same windows, and, on a synthetic market with lag-0 labels,
the oracle. A warm-start config replays the chain of fine-tunings its scheduled retrains would run
(:func:`chained_start`). Signal metrics use the CS-Z labels the model learns; the long-short book trades the raw
forward returns, as in :mod:`atft.evaluation`.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from torch import Tensor

from atft.baselines import (
    csz_columns,
    dense_rows,
    lightgbm_scores,
    oracle_scores,
    reversal_scores,
    ridge_scores,
)
from atft.charts import daily_rank_ic_and_equity
from atft.config import PipelineConfig, PortfolioConfig
from atft.controls import leakage_warnings
from atft.data.arrays import FeatureArrays, load_arrays
from atft.data.dataset import history_days
from atft.evaluation import predictions_frame
from atft.metrics import daily_ic, daily_rank_ic, evaluate_predictions, summarise
from atft.models import ContractModel
from atft.portfolio import simulate_long_short
from atft.prediction import predict_days
from atft.threads import govern
from atft.training.session import TrainingData, initial_model, prepare_data, train_model
from atft.training.trainer import EpochRecord, TrainResult
from atft.training.warm_start import COLD, WarmStart
from atft.warehouse import read_oracle
from atft.windows import RetrainWindows, retrain_windows
from schemas.manifest import FeatureManifest

# Scores stored per stock-day, by column prefix: the model, its label (CS-Z), the baselines and the oracle.
SOURCES: dict[str, str] = {
    "model": "pred",
    "apex": "apex",
    "ridge": "ridge",
    "lightgbm": "lightgbm",
    "reversal": "reversal",
    "ensemble": "ensemble",
    "oracle": "oracle",
}
BASELINE_SOURCES: tuple[str, ...] = ("ridge", "lightgbm", "reversal")
LABEL = "label"
REPORTED_HORIZONS: tuple[int, ...] = (1, 5)

# Torch's CPU random generator is process-global: model initialisation, dropout and each DataLoader's base seed
# draw from it. Two windows fitting at once in threads of one process would draw from each other's streams and the
# replay would not be reproducible, so torch work is one window at a time per process. Windows in separate
# processes (the Dask runner) train in parallel; threads still overlap loading, baselines and writing.
TORCH_LOCK = threading.Lock()


@dataclass(frozen=True)
class BacktestWindow:
    """One retrain of the replay: its as-of date, its training windows and the OOS sessions it predicts."""

    index: int
    as_of: date
    retrain: RetrainWindows
    oos_start: date
    oos_end: date
    oos_days: int

    def row(self) -> dict[str, Any]:
        r = self.retrain
        return {
            "window": self.index,
            "as_of": self.as_of.isoformat(),
            "train": f"{r.train_start}..{r.train_end}",
            "valid": f"{r.valid_start}..{r.valid_end}",
            "oos": f"{self.oos_start}..{self.oos_end}",
            "oos_days": self.oos_days,
        }


@dataclass
class WindowData:
    """Everything one window needs, loaded up front so that no warehouse connection is held while it trains."""

    training: TrainingData
    arrays: FeatureArrays  # the OOS days, plus lookback history
    days: list[int]  # the OOS days, as indices into ``arrays``
    oracle: pd.DataFrame | None


@dataclass
class WindowResult:
    predictions: pd.DataFrame  # window, Date, Code, then <source>_<h>d, label_<h>d and target_<h>d per horizon
    best_epoch: int
    epochs_run: int
    best_valid_rank_ic: float
    collapsed: bool
    state_dict: dict[str, Tensor]  # the model's trained weights: where the next window's warm start begins
    warm_start: dict[str, Any]  # WarmStart.describe() of where this window's training began


def plan_backtest(
    dates: Sequence[date], start: date, end: date, step: int, config: PipelineConfig, warm_up: int
) -> list[BacktestWindow]:
    """The retrains of a replay over the feature table's ``dates``: as-of dates every ``step`` sessions from the
    first session on or after ``start`` through ``end``; an as-of date with no later session has nothing to predict
    and is left out. Raises ValueError, naming the history needed and the earliest feasible start, when the first
    retrain has too little history."""
    if step < 1:
        raise ValueError(f"step must be at least 1 session, got {step}")
    sessions = [i for i, d in enumerate(dates) if start <= d <= end]
    if not sessions:
        span = f"{dates[0]}..{dates[-1]}" if dates else "nothing"
        raise ValueError(f"no session of the feature table between {start} and {end} (it covers {span})")
    as_of = [i for i in sessions[::step] if i + 1 < len(dates)]
    if not as_of:
        raise ValueError(f"nothing to predict: {dates[-1]}, the last session of the feature table, is the only as-of")
    windows = []
    for k, i in enumerate(as_of):
        try:
            retrain = retrain_windows(dates, dates[i], config, warm_up)
        except ValueError as exc:
            earliest = _earliest_as_of(dates, config, warm_up)
            hint = f"the earliest as-of date with enough history is {earliest}" if earliest else "no date has"
            raise ValueError(
                f"backtest from {start}: the retrain on {dates[i]} cannot be trained: {exc}; {hint}"
            ) from None
        oos = dates[i + 1 : i + 1 + step]
        windows.append(BacktestWindow(k, dates[i], retrain, oos[0], oos[-1], len(oos)))
    return windows


def _earliest_as_of(dates: Sequence[date], config: PipelineConfig, warm_up: int) -> date | None:
    def feasible(i: int) -> bool:
        try:
            retrain_windows(dates, dates[i], config, warm_up)
        except ValueError:
            return False
        return True

    first = bisect.bisect_left(range(len(dates)), True, key=feasible)  # more history never makes a retrain infeasible
    return dates[first] if first < len(dates) else None


def load_window(
    con: duckdb.DuckDBPyConnection, manifest: FeatureManifest, config: PipelineConfig, window: BacktestWindow
) -> WindowData:
    """Training data of the retrain, the OOS days' arrays and, on a synthetic market, their oracle."""
    training = prepare_data(con, manifest, config, window.retrain.training)
    arrays = load_arrays(con, manifest, window.oos_start, window.oos_end, history=history_days(config.model))
    days = [i for i, d in enumerate(arrays.dates.date) if d >= window.oos_start and i >= config.model.lookback - 1]
    # The oracle is the expected close-to-close return from each day: the truth of lag-0 labels only. Against labels
    # entered later it would be a mistimed reference, and a model/oracle ratio on it would mislead.
    with_oracle = config.source.kind == "synthetic" and manifest.execution_lag == 0
    oracle = read_oracle(con, window.oos_start, window.oos_end) if with_oracle else None
    return WindowData(training, arrays, days, oracle)


def run_window(
    data: WindowData,
    manifest: FeatureManifest,
    config: PipelineConfig,
    window: BacktestWindow,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    also_train: Sequence[str] = (),
    start: WarmStart = COLD,
) -> WindowResult:
    """Train the retrain's model, predict its OOS days, and score the baselines on the same stock-days.

    ``also_train``: other model names (``apex``) trained on the same windows, each stored under its own name and
    always from scratch. ``start``: where the model's training begins (see :func:`chained_start`)."""
    pred, result = _train_and_predict(data, manifest, config, on_epoch, start)
    frame = predictions_frame(data.arrays, data.days, pred)
    for name in also_train:
        other = config.model_copy(update={"model": config.model.model_copy(update={"name": name})})
        other_pred = _train_and_predict(data, manifest, other, None)[0]
        frame[[f"{name}_{h}d" for h in data.arrays.horizons]] = _model_columns(data, other_pred)
    baselines = score_baselines(data, manifest, config, window)
    frame = pd.concat([baselines, frame[[c for c in frame.columns if c not in baselines]]], axis=1)
    return WindowResult(
        frame,
        result.best_epoch,
        len(result.history),
        result.best_valid_rank_ic,
        result.collapsed,
        result.state_dict,
        result.warm_start,
    )


def score_baselines(
    data: WindowData, manifest: FeatureManifest, config: PipelineConfig, window: BacktestWindow
) -> pd.DataFrame:
    """The window's OOS stock-days (``window``, ``Date``, ``Code``, ``target_<h>d``) with the CS-Z label and the
    baselines' scores (:data:`BASELINE_SOURCES`, and the oracle where there is one), in the rows and order of
    :func:`atft.evaluation.predictions_frame`: what every model of the window is scored against."""
    arrays, days, training = data.arrays, data.days, data.training
    columns = csz_columns(manifest)
    scores = {
        LABEL: dense_rows(arrays, days)[1],
        "ridge": ridge_scores(training.arrays, training.train_days, arrays, days, columns),
        "lightgbm": lightgbm_scores(
            training.arrays,
            training.train_days,
            training.valid.days,
            arrays,
            days,
            columns,
            threads=govern(config.train.threads).threads,
        ),
        "reversal": reversal_scores(arrays, days),
    }
    if data.oracle is not None:
        scores["oracle"] = oracle_scores(arrays, days, data.oracle)
    frame = predictions_frame(arrays, days, np.full((len(days), len(arrays.codes), len(arrays.horizons)), np.nan))
    frame = frame.drop(columns=[f"pred_{h}d" for h in arrays.horizons])
    for name, values in scores.items():
        frame[[f"{name}_{h}d" for h in arrays.horizons]] = _model_columns(data, values)
    frame.insert(0, "window", window.index)
    return frame


def _model_columns(data: WindowData, values: np.ndarray) -> np.ndarray:
    """Dense [days, stocks, H] scores of the window's OOS days -> [rows, H] in the rows of ``predictions_frame``."""
    day, stock = np.nonzero(data.arrays.present[data.days])
    return values[day, stock].astype(np.float32)


def chained_start(config: PipelineConfig, window: BacktestWindow, previous: dict[str, Tensor] | None) -> WarmStart:
    """Where the model of ``window`` starts training in a replay of ``config``.

    With ``train.warm_start: champion`` each scheduled retrain fine-tunes the champion the retrain before it left, so
    the replay chains: window k starts from ``previous``, the weights window k-1 trained, taking every retrain of the
    replay as published (its gates are not replayed). The first window, and every window of a cold config, trains
    from scratch. The windows of a chain therefore train one after another."""
    if config.train.warm_start == "none":
        return COLD
    if previous is None:
        return WarmStart(None, f"window {window.index} is the first retrain of the replay: training from scratch")
    return WarmStart(
        f"window {window.index - 1}", f"fine-tuning the model of the previous retrain (window {window.index - 1})",
        previous,
    )  # fmt: skip


def _train_and_predict(
    data: WindowData,
    manifest: FeatureManifest,
    config: PipelineConfig,
    on_epoch: Callable[[EpochRecord], None] | None,
    start: WarmStart = COLD,
) -> tuple[np.ndarray, TrainResult]:
    with TORCH_LOCK:
        model, result = train_model(config, manifest, data.training, on_epoch, start)
        return _predict_oos(model, data, config), result


def untrained_predict(data: WindowData, manifest: FeatureManifest, config: PipelineConfig) -> np.ndarray:
    """Dense [days, stocks, H] scores of the window's OOS days by the model exactly as a cold retrain of ``config``
    would begin to fit it (its seed's initial weights, the input scaling of its training days), never fitted.

    The floor of the honesty controls: these scores have never seen a label, so their RankIC is what a network's
    random tilt on its inputs earns by chance (see :mod:`atft.controls`)."""
    with TORCH_LOCK:
        return _predict_oos(initial_model(config, manifest, data.training), data, config)


def _predict_oos(model: ContractModel, data: WindowData, config: PipelineConfig) -> np.ndarray:
    return predict_days(model, data.arrays, data.days, config)[0]


def add_rank_average(frame: pd.DataFrame, members: Sequence[str], horizons: Sequence[int]) -> pd.DataFrame:
    """``ensemble_<h>d``: per day, the equal-weight mean of the members' percentile ranks (prefixes of SOURCES)."""
    out = frame.copy()
    for h in horizons:
        ranks = [out.groupby("Date")[f"{SOURCES[m]}_{h}d"].rank(pct=True) for m in members]
        out[f"ensemble_{h}d"] = pd.concat(ranks, axis=1).mean(axis=1, skipna=False)
    return out


def block_bootstrap_interval(
    difference: np.ndarray, block: int, level: float = 0.9, draws: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of a daily ``difference`` series and its ``level`` interval from a moving-block bootstrap over days.

    Blocks of ``block`` consecutive days (at least the label horizon, so that overlapping labels stay together)
    are drawn with replacement until the series' length is covered. NaN days are dropped first."""
    values = difference[np.isfinite(difference)]
    n = len(values)
    if n < 2 * block:
        return (float(values.mean()) if n else math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    per_draw = -(-n // block)
    starts = rng.integers(0, n - block + 1, size=(draws, per_draw))
    index = (starts[..., None] + np.arange(block)).reshape(draws, -1)[:, :n]
    means = values[index].mean(axis=1)
    tail = (1 - level) / 2
    return float(values.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def rank_ic_differences(
    daily: pd.DataFrame, horizons: Sequence[int], level: float = 0.9, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Per horizon: each source's daily RankIC minus that of the best baseline (highest mean RankIC of
    :data:`BASELINE_SOURCES`), with a :func:`block_bootstrap_interval` whose block is max(horizon, 5) days."""
    out = {}
    for h in horizons:
        present = [s for s in SOURCES if f"{s}_rank_ic_{h}d" in daily]
        baselines = [s for s in BASELINE_SOURCES if s in present]
        best = max(baselines, key=lambda s: np.nanmean(daily[f"{s}_rank_ic_{h}d"]))
        rows = {}
        for source in present:
            if source == best:
                continue
            diff = (daily[f"{source}_rank_ic_{h}d"] - daily[f"{best}_rank_ic_{h}d"]).to_numpy()
            mean, low, high = block_bootstrap_interval(diff, max(h, 5), level, seed=seed)
            rows[source] = {"mean": mean, "low": low, "high": high}
        out[f"{h}d"] = {"best_baseline": best, "level": level, "differences": rows}
    return out


def stitch(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """One record of the replay, by day; a stock-day predicted by two windows would be an overlap: an error."""
    frame = pd.concat(frames, ignore_index=True).sort_values(["Date", "Code"], ignore_index=True)
    doubled = frame.duplicated(["Date", "Code"])
    if doubled.any():
        first = frame[doubled].iloc[0]
        windows = frame.loc[(frame["Date"] == first["Date"]) & (frame["Code"] == first["Code"]), "window"]
        raise ValueError(
            f"OOS segments overlap: {doubled.sum()} stock-days are predicted more than once, e.g. {first['Code']} on "
            f"{first['Date']} by windows {sorted(int(w) for w in windows)}"
        )
    return frame


def dense(frame: pd.DataFrame, prefix: str, horizons: Sequence[int]) -> np.ndarray:
    """[days, stocks, H] of the ``<prefix>_<h>d`` columns over the frame's sorted days and codes; NaN where absent."""
    d, days = pd.factorize(frame["Date"], sort=True)
    s, codes = pd.factorize(frame["Code"], sort=True)
    out = np.full((len(days), len(codes), len(horizons)), np.nan)
    out[d, s] = frame[[f"{prefix}_{h}d" for h in horizons]].to_numpy(dtype=float)
    return out


def daily_signal(frame: pd.DataFrame, horizons: Sequence[int]) -> pd.DataFrame:
    """Per day: the window, and ``<source>_ic_<h>d`` / ``<source>_rank_ic_<h>d`` against the CS-Z label."""
    label = dense(frame, LABEL, horizons)
    mask = np.isfinite(label)
    days = frame.groupby("Date", sort=True)["window"].first()
    out = pd.DataFrame({"window": days.to_numpy()}, index=days.index)
    for source, prefix in SOURCES.items():
        if f"{prefix}_{horizons[0]}d" not in frame:
            continue
        scores = dense(frame, prefix, horizons)
        for k, h in enumerate(horizons):
            out[f"{source}_ic_{h}d"] = daily_ic(scores[..., k], label[..., k], mask[..., k])
            out[f"{source}_rank_ic_{h}d"] = daily_rank_ic(scores[..., k], label[..., k], mask[..., k])
    return out


def backtest_charts(
    frame: pd.DataFrame, summary: dict[str, Any], portfolio: PortfolioConfig, names: dict[str, str] | None = None
) -> dict[int, bytes]:
    """Per reported horizon, a PNG: the cumulative daily RankIC and the long-short equity after costs of every source
    of the stitched record (the oracle left out: it is the ceiling, not a competitor)."""
    horizons = [h for h in REPORTED_HORIZONS if h in summary["horizons"]]
    daily = pd.DataFrame(summary["daily"]).set_index("Date")
    label, returns = dense(frame, LABEL, horizons), dense(frame, "target", horizons)
    charts = {}
    for k, h in enumerate(horizons):
        rank_ic, equity = {}, {}
        for source in summary["metrics"]:
            if source == "oracle":
                continue
            name = (names or {}).get(source, source)
            rank_ic[name] = daily[f"{source}_rank_ic_{h}d"]
            scores = dense(frame, SOURCES[source], horizons)[..., k]
            book = simulate_long_short(scores, returns[..., k], pd.notna(label[..., k]), portfolio, horizon=h)
            equity[name] = pd.Series(book.equity, index=daily.index)
        charts[h] = daily_rank_ic_and_equity(rank_ic, equity, f"{h}d, after {portfolio.cost_bps:g} bps")
    return charts


def signal_means(daily: pd.DataFrame) -> dict[str, float]:
    """Mean of each daily IC/RankIC series over its finite days (as :func:`atft.metrics.summarise`)."""
    return {column: summarise(daily[column].to_numpy())[0] for column in daily.columns if column != "window"}


def source_metrics(frame: pd.DataFrame, horizons: Sequence[int], portfolio: PortfolioConfig) -> dict[str, dict]:
    """:func:`atft.metrics.evaluate_predictions` of each source over the stitched days, the book on raw returns."""
    label = dense(frame, LABEL, horizons)
    returns = dense(frame, "target", horizons)
    metrics = {}
    for source, prefix in SOURCES.items():
        if f"{prefix}_{horizons[0]}d" in frame:
            scores = dense(frame, prefix, horizons)
            metrics[source] = evaluate_predictions(
                scores, label, np.isfinite(label), horizons, portfolio, returns=returns
            )
    return metrics


def selection_halves(frame: pd.DataFrame, horizons: Sequence[int], portfolio: PortfolioConfig) -> dict[str, dict]:
    """The record cut in two by retrain: the earlier windows, where settings may be chosen, and the later ones (the
    extra window of an odd count goes to them), which no choice may look at; each with its own
    :func:`source_metrics`. A replay of one window has no later half."""
    windows = sorted(int(w) for w in frame["window"].unique())
    if len(windows) < 2:
        return {}
    cut = windows[len(windows) // 2]
    halves = {"earlier": frame[frame["window"] < cut], "later": frame[frame["window"] >= cut]}
    return {
        name: {
            "windows": sorted(int(w) for w in part["window"].unique()),
            "oos": f"{pd.Timestamp(part['Date'].min()).date()}..{pd.Timestamp(part['Date'].max()).date()}",
            "metrics": source_metrics(part, horizons, portfolio),
        }
        for name, part in halves.items()
    }


def window_wins(windows: Sequence[dict[str, Any]], metric: str) -> dict[str, dict[str, int]]:
    """Per learnt source and baseline: in how many windows the source's ``metric`` (a per-window column such as
    ``rank_ic_5d``) beat the baseline's; windows where either is missing do not count."""
    sources = [s for s in SOURCES if s not in BASELINE_SOURCES and s != "oracle" and f"{s}_{metric}" in windows[0]]
    wins: dict[str, dict[str, int]] = {}
    for source in sources:
        for baseline in (b for b in BASELINE_SOURCES if f"{b}_{metric}" in windows[0]):
            pairs = [(row[f"{source}_{metric}"], row[f"{baseline}_{metric}"]) for row in windows]
            pairs = [(a, b) for a, b in pairs if a is not None and b is not None and math.isfinite(a + b)]
            wins.setdefault(source, {})[baseline] = sum(a > b for a, b in pairs)
    return wins


def summarise_backtest(
    frame: pd.DataFrame,
    windows: Sequence[dict[str, Any]],
    horizons: Sequence[int],
    portfolio: PortfolioConfig,
    *,
    real_prices: bool,
) -> dict[str, Any]:
    """The replay's record: per-window and overall metrics of the model and the baselines, the same for the earlier and
    later halves of the windows (:func:`selection_halves`), per-window wins over each baseline, the oracle ratio
    (synthetic markets), the daily IC/RankIC series and, on ``real_prices``, the
    :func:`atft.controls.leakage_warnings`.
    ``windows`` are per-window rows, each with its ``window`` index. NaN becomes None, so the result is plain JSON."""
    daily = daily_signal(frame, horizons)
    per_window = {k: signal_means(group) for k, group in daily.groupby("window")}
    metrics = source_metrics(frame, horizons, portfolio)
    oracle_ratio = None
    if "oracle" in metrics:
        oracle_ratio = {
            f"rank_ic_{h}d": metrics["model"][f"rank_ic_{h}d"] / metrics["oracle"][f"rank_ic_{h}d"] for h in horizons
        }
    rows = [row | per_window.get(row["window"], {}) for row in windows]
    summary = {
        "oos_start": daily.index[0].isoformat(),
        "oos_end": daily.index[-1].isoformat(),
        "oos_days": len(daily),
        "horizons": list(horizons),
        "windows": rows,
        "metrics": metrics,
        "halves": selection_halves(frame, horizons, portfolio),
        "wins_rank_ic_5d": window_wins(rows, "rank_ic_5d") if 5 in horizons else {},
        "oracle_ratio": oracle_ratio,
        "warnings": leakage_warnings(metrics, horizons) if real_prices else [],
        "daily": [
            {"Date": day.isoformat(), **row} for day, row in zip(daily.index, daily.to_dict("records"), strict=True)
        ],
    }
    return _plain(summary)


def _plain(value: Any) -> Any:
    """JSON-ready: NaN and inf become None, numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def report_lines(summary: dict[str, Any]) -> list[str]:
    """The stitched summary as readable lines: per-window RankIC, then model vs baselines over all OOS days."""
    horizons = [h for h in REPORTED_HORIZONS if h in summary["horizons"]]
    sources = list(summary["metrics"])
    lines = [f"backtest OOS {summary['oos_start']}..{summary['oos_end']}: {summary['oos_days']} sessions, "
             f"{len(summary['windows'])} retrains", *summary["warnings"]]  # fmt: skip
    columns = [(f"{s}_rank_ic_{h}d", f"{s} {h}d") for h in horizons for s in sources]
    lines.append(f"  {'RankIC by retrain':<47}" + "".join(f"{label:>12}" for _, label in columns))
    for row in summary["windows"]:
        where = f"as-of {row['as_of']}, OOS {row['oos']}"
        lines.append(f"  {where:<47}" + "".join(_cell(row.get(key), 12) for key, _ in columns))
    names = {"ic": "IC", "rank_ic": "RankIC", "rank_icir": "RankICIR", "ls_sharpe": "LS Sharpe"}
    columns = [(f"{m}_{h}d", f"{name} {h}d") for h in horizons for m, name in names.items()]
    lines.append(f"  {'all OOS days':<12}" + "".join(f"{label:>14}" for _, label in columns))
    for source in sources:
        lines.append(f"  {source:<12}" + "".join(_cell(summary["metrics"][source][key], 14) for key, _ in columns))
    if summary["oracle_ratio"]:
        ratios = summary["oracle_ratio"]
        lines.append("  model RankIC / oracle RankIC: " + ", ".join(f"{h}d {_cell(ratios[f'rank_ic_{h}d'], 0)}"
                                                                    for h in horizons))  # fmt: skip
    return lines


def _cell(value: float | None, width: int) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:>{width}.4f}"
