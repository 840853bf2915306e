"""Held-out evaluation of a staged model: window purge, predictions aligned with the table, metrics from them."""

from __future__ import annotations

from datetime import date

import duckdb
import numpy as np
import pytest

from atft.config import (
    CSZConfig,
    FeaturesConfig,
    ModelConfig,
    PipelineConfig,
    SyntheticSourceConfig,
    TrainConfig,
    UniverseConfig,
    WarehouseConfig,
)
from atft.evaluation import evaluate_model, evaluation_window
from atft.features.build import build_features
from atft.ingest import ingest
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
