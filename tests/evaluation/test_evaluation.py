"""Held-out evaluation of a staged model: window purge, predictions aligned with the table, metrics from them."""

from __future__ import annotations

import dataclasses
from datetime import date

import duckdb
import numpy as np
import pytest

from atft import baselines, evaluation, prediction
from atft.config import (
    CSZConfig,
    EvaluationConfig,
    FeaturesConfig,
    ModelConfig,
    PipelineConfig,
    SyntheticSourceConfig,
    TrainConfig,
    UniverseConfig,
    WarehouseConfig,
)
from atft.data.arrays import load_arrays
from atft.data.dataset import history_days
from atft.evaluation import evaluate_baselines, evaluate_model, evaluation_window
from atft.features.build import build_features
from atft.gates import evaluate_gates
from atft.ingest import ingest
from atft.metrics import evaluate_predictions
from atft.training.session import Windows, load_staged, prepare_data, stage, train_model
from schemas.manifest import FeatureManifest

WINDOWS = Windows(date(2022, 5, 2), date(2022, 8, 31), date(2022, 9, 30), date(2022, 10, 31))


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluation")
    config = PipelineConfig(
        name="eval-test",
        source=SyntheticSourceConfig(kind="synthetic", seed=5, n_stocks=30, start=date(2022, 1, 4),
                                     end=date(2022, 12, 28)),
        universe=UniverseConfig(code_pattern=r"^\d{4}$"),
        warehouse=WarehouseConfig(path=tmp / "w.duckdb"),
        features=FeaturesConfig(cs_z=CSZConfig(min_stocks=10), manifest_dir=tmp / "manifests"),
        model=ModelConfig(lookback=8, hidden=16, var_hidden=2, fan_window=4),
        train=TrainConfig(epochs=1, days_per_batch=8),
    )  # fmt: skip
    ingest(config, on_progress=lambda _: None)
    manifest = FeatureManifest.read(build_features(config, on_progress=lambda _: None).manifest_path)
    with duckdb.connect(str(config.warehouse.path), read_only=True) as con:
        model, result = train_model(config, manifest, prepare_data(con, manifest, config, WINDOWS))
    return config, manifest, stage(model, result, manifest, WINDOWS, tmp / "staged"), model


def test_the_window_starts_a_purge_after_the_last_seen_day():
    dates = [date(2024, 1, d) for d in range(1, 31)]
    assert evaluation_window(dates, date(2024, 1, 10), purge=5, length=7) == (date(2024, 1, 16), date(2024, 1, 22))
    assert evaluation_window(dates, date(2024, 1, 20), purge=5, length=20) == (date(2024, 1, 26), date(2024, 1, 30))
    with pytest.raises(ValueError, match="purge alone needs 6"):
        evaluation_window(dates, date(2024, 1, 26), purge=5, length=7)


@pytest.mark.parametrize("lag", [0, 1])
def test_the_evaluation_keeps_labels_up_to_lag_plus_horizon_past_the_window(staged, monkeypatch, lag):
    config, manifest, directory, _ = staged
    real_window, real_dataset, reach = evaluation._window, prediction.DayDataset, []

    def lagged_window(*args):
        arrays, days = real_window(*args)
        return dataclasses.replace(arrays, manifest=dataclasses.replace(manifest, execution_lag=lag)), days

    def spy(arrays, days, lookback, graph, label_cutoff):
        reach.append(label_cutoff - days[-1])
        return real_dataset(arrays, days, lookback, graph, label_cutoff=label_cutoff)

    monkeypatch.setattr(evaluation, "_window", lagged_window)
    monkeypatch.setattr(prediction, "DayDataset", spy)  # the one path every evaluation predicts by
    with duckdb.connect(str(config.warehouse.path), read_only=True) as con:
        evaluate_model(con, load_staged(directory, manifest), manifest, config, date(2022, 12, 1), date(2022, 12, 9))
    # Every realised label of the window's days counts: the last day's longest one ends lag + 20 sessions later.
    assert reach == [lag + 20]


def test_a_staged_model_loads_and_predicts_as_trained(staged):
    _, manifest, directory, trained = staged
    loaded = load_staged(directory, manifest)
    for name, value in trained.state_dict().items():
        assert np.array_equal(loaded.state_dict()[name].numpy(), value.numpy()), name


def test_predictions_line_up_with_the_table_and_give_the_metrics(staged):
    config, manifest, directory, _ = staged
    start, end = date(2022, 11, 30), date(2022, 12, 28)
    with duckdb.connect(str(config.warehouse.path), read_only=True) as con:
        result = evaluate_model(con, load_staged(directory, manifest), manifest, config, start, end)
        table = con.execute(
            f"SELECT Date, Code, target_5d, target_5d_cs_z, target_5d_valid FROM {manifest.table_name} "
            "WHERE Date BETWEEN ? AND ?",
            [start, end],
        ).df()
    frame = result.predictions
    assert len(frame) == len(table) and result.days == table["Date"].nunique()
    joined = frame.merge(table.assign(Date=table["Date"].dt.date), on=["Date", "Code"], validate="one_to_one")
    assert np.allclose(joined["target_5d_x"], joined["target_5d_y"], equal_nan=True)
    assert frame[[f"pred_{h}d" for h in (1, 5, 10, 20)]].notna().all().all()
    # The window's last days have no 5-day label yet: the table says so, and the metrics skip them.
    usable = joined[joined["target_5d_valid"]]
    assert usable["Date"].max() < end
    daily = usable.groupby("Date")[["pred_5d", "target_5d_cs_z"]].apply(
        lambda day: day["pred_5d"].rank().corr(day["target_5d_cs_z"].rank())
    )
    assert result.metrics["rank_ic_5d"] == pytest.approx(daily.mean(), abs=1e-6)
    assert set(result.metrics) >= {"ic_1d", "ls_sharpe_5d", "max_drawdown_5d", "jpx_sharpe_5d", "collapse_ratio_1d"}


def test_daily_curves_and_input_weights_agree_with_the_metrics(staged):
    config, manifest, directory, _ = staged
    with duckdb.connect(str(config.warehouse.path), read_only=True) as con:
        result = evaluate_model(con, load_staged(directory, manifest), manifest, config, date(2022, 11, 30),
                                date(2022, 12, 28), input_weights=True)  # fmt: skip
    curves = result.curves
    assert list(curves.index) == sorted(result.predictions["Date"].unique())
    assert curves["rank_ic_5d"].mean() == pytest.approx(result.metrics["rank_ic_5d"], abs=1e-9)
    # The equity curve compounds the book whose drawdown the metrics report.
    equity = curves["equity_5d"].to_numpy()
    drawdown = (1 - equity / np.maximum.accumulate(np.concatenate([[1.0], equity]))[1:]).max()
    assert drawdown == pytest.approx(result.metrics["max_drawdown_5d"], abs=1e-9)
    # Softmax weights per stock-step, averaged: non-negative, one per input, summing to one.
    weights = result.input_weights
    assert list(weights.index) == [f.name for f in manifest.features]
    assert (weights >= 0).all() and weights.sum() == pytest.approx(1.0, abs=1e-5)


def test_a_window_without_days_is_an_error(staged):
    config, manifest, directory, _ = staged
    model = load_staged(directory, manifest)
    with duckdb.connect(str(config.warehouse.path), read_only=True) as con, pytest.raises(ValueError, match="no rows"):
        evaluate_model(con, model, manifest, config, date(2023, 3, 1), date(2023, 3, 9))


def test_predictions_frame_has_one_row_per_trading_stock_day(staged):
    config, manifest, directory, _ = staged
    with duckdb.connect(str(config.warehouse.path), read_only=True) as con:
        result = evaluate_model(con, load_staged(directory, manifest), manifest, config, date(2022, 12, 1),
                                date(2022, 12, 9))  # fmt: skip
    assert not result.predictions.duplicated(["Date", "Code"]).any()
    assert isinstance(result.predictions["Date"].iloc[0], date)


def test_baselines_learn_only_from_the_models_training_and_validation_labels(staged, monkeypatch):
    config, manifest, _, _ = staged
    config = config.model_copy(update={"evaluation": EvaluationConfig(baselines=["ridge", "lightgbm"])})
    with duckdb.connect(str(config.warehouse.path), read_only=True) as con:
        model_data = prepare_data(con, manifest, config, WINDOWS)
        seen, real = [], baselines.labelled_rows

        def spy(arrays, days, columns, horizon):
            # Plant a huge label on every stock-day whose label ends past the window: none may reach a fit.
            k = arrays.horizons.index(horizon)
            crossing = [d for d in days if d + horizon > days[-1]]
            planted = arrays.targets.copy()
            planted[crossing, :, k] = 1e6
            features, target = real(dataclasses.replace(arrays, targets=planted), days, columns, horizon)
            assert np.all(np.abs(target) < 1e3), f"a label crossing the window's end at {horizon}d was learnt"
            seen.append(tuple(days))
            return features, target

        monkeypatch.setattr(baselines, "labelled_rows", spy)
        results = evaluate_baselines(con, manifest, config, WINDOWS, date(2022, 11, 30), date(2022, 12, 28))
    assert set(results) == {"ridge", "lightgbm"}
    assert set(seen) == {tuple(model_data.train_days), tuple(model_data.valid.days)}


def test_a_challenger_worse_than_ridge_is_rejected_naming_ridge_and_both_values(staged):
    config, manifest, _, _ = staged
    evaluation = EvaluationConfig(gates=[], baselines=["ridge"])
    start, end = date(2022, 11, 30), date(2022, 12, 28)
    with duckdb.connect(str(config.warehouse.path), read_only=True) as con:
        ridge = evaluate_baselines(con, manifest, config.model_copy(update={"evaluation": evaluation}), WINDOWS,
                                   start, end)["ridge"].metrics  # fmt: skip
        data = prepare_data(con, manifest, config, WINDOWS)
        arrays = load_arrays(con, manifest, start, end, history=history_days(config.model))
    days = [i for i, d in enumerate(arrays.dates.date) if start <= d <= end and i >= config.model.lookback - 1]
    # The challenger: ridge's own scores turned upside down, so it ranks worse than ridge wherever ridge has skill.
    anti = -baselines.ridge_scores(data.arrays, data.train_days, arrays, days, baselines.csz_columns(manifest))
    _, label, mask = baselines.dense_rows(arrays, days)
    challenger = evaluate_predictions(anti, label, mask, arrays.horizons, evaluation.portfolio,
                                      returns=arrays.forward_returns[days])  # fmt: skip
    assert ridge["rank_ic_5d"] > 0 > challenger["rank_ic_5d"]
    report = evaluate_gates(challenger, evaluation, arrays.horizons, baseline_metrics={"ridge": ridge})
    assert not report.passed
    (reason,) = report.reasons()
    assert "ridge" in reason and f"{challenger['rank_ic_5d']:.4g}" in reason and f"{ridge['rank_ic_5d']:.4g}" in reason
