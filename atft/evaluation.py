"""Held-out evaluation: a model's predictions over an evaluation window, their metrics, and a predictions table.

The evaluation window starts a purge of the longest label span (execution lag + longest horizon) after the last
day whose label the model saw (the end of validation), so no label it learnt from or early-stopped on overlaps
the days it is judged on.
Labels inside the window are whatever the feature table has realised: a day near the table's end simply has
no long-horizon label yet. Signal metrics use the CS-Z labels the model learns; the long-short book trades the
raw forward returns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import duckdb
import numpy as np
import pandas as pd

from atft.baselines import baseline_scores, csz_columns, dense_rows
from atft.config import ModelConfig, PipelineConfig
from atft.data.arrays import FeatureArrays, load_arrays
from atft.data.dataset import history_days
from atft.metrics import daily_rank_ic, evaluate_predictions
from atft.models import ContractModel
from atft.portfolio import simulate_long_short
from atft.prediction import mean_input_weights, predict_days
from atft.threads import govern
from atft.training.session import Windows, prepare_data
from schemas.manifest import FeatureManifest


@dataclass(frozen=True)
class Evaluation:
    start: date
    end: date
    metrics: dict[str, float]
    predictions: pd.DataFrame  # Date, Code, pred_<h>d, target_<h>d (raw forward return, NaN when unrealised)
    curves: pd.DataFrame  # per Date: rank_ic_<h>d and equity_<h>d (the long-short book after costs)
    input_weights: pd.Series | None = None  # mean variable-selection weight per input, when asked for and there is one

    @property
    def days(self) -> int:
        return int(self.predictions["Date"].nunique())


def evaluation_window(dates: Sequence[date], after: date, purge: int, length: int) -> tuple[date, date]:
    """``length`` sessions of ``dates`` starting ``purge`` sessions after ``after`` (the last day seen in training).

    Fewer than ``length`` sessions available is fine (the window ends with the data); none is an error.
    """
    later = [d for d in dates if d > after]
    if len(later) <= purge:
        raise ValueError(
            f"no evaluation days: {len(later)} sessions after {after}, and the purge alone needs {purge + 1}"
        )
    window = later[purge : purge + length]
    return window[0], window[-1]


def evaluate_model(
    con: duckdb.DuckDBPyConnection,
    model: ContractModel,
    manifest: FeatureManifest,
    config: PipelineConfig,
    start: date,
    end: date,
    input_weights: bool = False,
) -> Evaluation:
    """Predict every trading stock of every day in [start, end] and compute the metrics of ``config.evaluation``;
    with ``input_weights``, also the model's variable-selection weights averaged over the window (where it has them).

    Windows and graphs follow the model's own settings, as trained (a champion may predate a config change).
    """
    arrays, days = _window(con, manifest, model.config, start, end)
    # Labels up to the lag + horizon past the last day: realised ones count, unrealised ones are already invalid.
    cutoff = days[-1] + arrays.manifest.label_span(max(arrays.horizons))
    pred, label, mask = predict_days(model, arrays, days, config, label_cutoff=cutoff)
    result = _judged(arrays, days, pred, label, mask, config, start, end)
    weights = mean_input_weights(model, arrays, days, config) if input_weights else None
    if weights is None:
        return result
    names = [f.name for f in manifest.features]
    return dataclasses.replace(result, input_weights=pd.Series(weights, index=names, name="weight"))


def _judged(
    arrays: FeatureArrays,
    days: list[int],
    scores: np.ndarray,
    label: np.ndarray,
    mask: np.ndarray,
    config: PipelineConfig,
    start: date,
    end: date,
) -> Evaluation:
    returns = arrays.forward_returns[days]
    portfolio = config.evaluation.portfolio
    metrics = evaluate_predictions(scores, label, mask, arrays.horizons, portfolio, returns=returns)
    curves = pd.DataFrame(index=pd.Index(arrays.dates[days].date, name="Date"))
    for k, h in enumerate(arrays.horizons):
        curves[f"rank_ic_{h}d"] = daily_rank_ic(scores[..., k], label[..., k], mask[..., k])
        book = simulate_long_short(scores[..., k], returns[..., k], mask[..., k], portfolio, horizon=h)
        curves[f"equity_{h}d"] = book.equity
    return Evaluation(start, end, metrics, predictions_frame(arrays, days, scores), curves)


def evaluate_baselines(
    con: duckdb.DuckDBPyConnection,
    manifest: FeatureManifest,
    config: PipelineConfig,
    windows: Windows,
    start: date,
    end: date,
) -> dict[str, Evaluation]:
    """Each of ``config.evaluation.baselines`` on [start, end], judged as :func:`evaluate_model` judges a model.

    Each is fitted on the training days the model trained on (``prepare_data`` of the same ``windows``, the same
    purge) and early-stopped, where it stops early, on the same validation days; it is judged on the same stock-days
    and CS-Z labels as the model, with the same book.
    """
    training = prepare_data(con, manifest, config, windows)
    arrays, days = _window(con, manifest, config.model, start, end)
    _, label, mask = dense_rows(arrays, days)
    columns = csz_columns(manifest)
    threads = govern(config.train.threads).threads
    results = {}
    for name in config.evaluation.baselines:
        scores = baseline_scores(
            name, training.arrays, training.train_days, training.valid.days, arrays, days, columns, threads
        )
        results[name] = _judged(arrays, days, scores, label, mask, config, start, end)
    return results


def _window(
    con: duckdb.DuckDBPyConnection, manifest: FeatureManifest, model: ModelConfig, start: date, end: date
) -> tuple[FeatureArrays, list[int]]:
    """The arrays of [start, end] with the model's history, and its days that have a full lookback."""
    arrays = load_arrays(con, manifest, start, end, history=history_days(model))
    days = [i for i, d in enumerate(arrays.dates.date) if start <= d <= end and i >= model.lookback - 1]
    if not days:
        raise ValueError(f"{manifest.table_name} has no day in {start}..{end} with {model.lookback - 1} earlier days")
    return arrays, days


def predictions_frame(arrays: FeatureArrays, days: list[int], pred: np.ndarray) -> pd.DataFrame:
    """One row per trading stock-day: ``pred`` is dense ``[len(days), stocks, H]`` in ``arrays.codes`` order."""
    day_pos, stock = np.nonzero(arrays.present[days])
    frame = pd.DataFrame({"Date": arrays.dates[np.asarray(days)[day_pos]].date, "Code": arrays.codes[stock]})
    for k, h in enumerate(arrays.horizons):
        frame[f"pred_{h}d"] = pred[day_pos, stock, k].astype(np.float32)
    for k, h in enumerate(arrays.horizons):
        frame[f"target_{h}d"] = arrays.forward_returns[days][day_pos, stock, k]
    return frame
