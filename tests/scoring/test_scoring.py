"""Daily scoring: one row per trading stock, the same scores as evaluation, idempotent writes, refused drift."""

from __future__ import annotations

import math
import shutil
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import torch

from atft.config import PipelineConfig
from atft.evaluation import Evaluation, evaluate_model
from atft.features.build import build_features
from atft.ingest import ingest
from atft.registry import CheckpointRefused, Registry
from atft.scoring import ScoringError, load_champion, score_day, write_predictions
from atft.training.session import Windows, prepare_data, stage, train_model
from atft.warehouse import Warehouse
from schemas.contract import ContractViolation
from schemas.manifest import FeatureManifest

WINDOWS = Windows(date(2022, 6, 1), date(2022, 6, 30), date(2022, 7, 20), date(2022, 8, 5))
# Starts three weeks before the day compared, so that its day graph has the full trailing window in both runs.
EVAL = (date(2022, 9, 5), date(2022, 9, 30))


@dataclass(frozen=True)
class Market:
    config: PipelineConfig
    warehouse: Path
    registry: Registry
    manifest: FeatureManifest
    staged: Path
    evaluation: Evaluation


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Market:
    """30 synthetic stocks over 2022, a tiny model trained for one epoch, published as the champion."""
    tmp = tmp_path_factory.mktemp("scoring")
    config = PipelineConfig.model_validate({
        "name": "scoring",
        "source": {"kind": "synthetic", "seed": 4, "n_stocks": 30, "start": "2022-01-04", "end": "2022-12-28"},
        "universe": {"code_pattern": r"^\d{4}$"},
        "warehouse": {"path": str(tmp / "market.duckdb")},
        "features": {"cs_z": {"min_stocks": 10}, "manifest_dir": str(tmp / "manifests")},
        "model": {"lookback": 8, "hidden": 16, "var_hidden": 2, "fan_window": 4},
        "train": {"epochs": 1, "days_per_batch": 8, "device": "cpu", "staging_dir": str(tmp / "staging")},
        "registry": {"path": str(tmp / "registry")},
    })  # fmt: skip
    ingest(config)
    manifest = FeatureManifest.read(build_features(config).manifest_path)
    with Warehouse(config.warehouse.path, read_only=True) as wh:
        model, result = train_model(config, manifest, prepare_data(wh.con, manifest, config, WINDOWS))
        evaluation = evaluate_model(wh.con, model, manifest, config, *EVAL)
        fingerprint = wh.fingerprint(manifest.table_name)
    staged = stage(model, result, manifest, WINDOWS, tmp / "staged")
    registry = Registry(config.registry.path)
    registry.publish(
        staged,
        manifest,
        metrics={k: v for k, v in evaluation.metrics.items() if math.isfinite(v)},
        gates={"passed": True, "results": []},
        windows={**asdict(WINDOWS), "eval_start": EVAL[0], "eval_end": EVAL[1]},
        data_fingerprint=fingerprint,
        predictions=evaluation.predictions,
    )
    return Market(config, config.warehouse.path, registry, manifest, staged, evaluation)


def copy_warehouse(market: Market, tmp_path: Path) -> Path:
    path = tmp_path / "copy.duckdb"
    shutil.copy(market.warehouse, path)
    return path


def score_into(path: Path, registry: Registry, config: PipelineConfig, as_of: date | None = None) -> pd.DataFrame:
    """What the flow does: score with the champion from a read-only connection, then write."""
    with Warehouse(path, read_only=True) as wh:
        frame = score_day(wh.con, load_champion(registry, wh.con), config, as_of)
    with Warehouse(path) as wh:
        write_predictions(wh, frame)
    return frame


def stored(path: Path) -> pd.DataFrame:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.sql("SELECT * FROM predictions ORDER BY model_version, Date, Code").df()


def feature_days(path: Path, table: str) -> list[date]:
    with duckdb.connect(str(path), read_only=True) as con:
        return [d for (d,) in con.execute(f"SELECT DISTINCT Date FROM {table} ORDER BY Date").fetchall()]


def test_one_row_per_trading_stock_of_the_day_with_the_champion_version(market, tmp_path):
    path = copy_warehouse(market, tmp_path)
    frame = score_into(path, market.registry, market.config)
    table = market.manifest.table_name
    last = feature_days(path, table)[-1]
    with duckdb.connect(str(path), read_only=True) as con:
        trading = [
            c for (c,) in con.execute(f"SELECT Code FROM {table} WHERE Date = ? ORDER BY Code", [last]).fetchall()
        ]
    assert list(frame.columns) == [
        "Date", "Code", "model_version", "pred_1d", "pred_5d", "pred_10d", "pred_20d", "rank_5d", "scored_at",
    ]  # fmt: skip
    assert set(frame["Date"]) == {last} and frame["Code"].tolist() == trading
    assert set(frame["model_version"]) == {market.registry.champion().champion}
    assert sorted(frame["rank_5d"]) == list(range(1, len(trading) + 1))
    assert frame.loc[frame["rank_5d"] == 1, "pred_5d"].item() == frame["pred_5d"].max()
    assert frame["pred_5d"].std() > 0

    rows = stored(path)
    assert len(rows) == len(trading) and rows["Code"].tolist() == trading
    np.testing.assert_array_equal(rows["pred_5d"].to_numpy(), frame["pred_5d"].to_numpy())
    assert (rows["scored_at"] == frame["scored_at"].iloc[0]).all()


def test_scores_equal_what_evaluation_gives_for_the_day(market):
    day = EVAL[1]
    with Warehouse(market.warehouse, read_only=True) as wh:
        frame = score_day(wh.con, load_champion(market.registry, wh.con), market.config, day)
    evaluated = market.evaluation.predictions
    evaluated = evaluated[evaluated["Date"] == day].reset_index(drop=True)
    assert frame["Code"].tolist() == evaluated["Code"].tolist()
    for h in (1, 5, 10, 20):
        np.testing.assert_allclose(frame[f"pred_{h}d"], evaluated[f"pred_{h}d"], rtol=1e-5, atol=1e-6)


def test_rescoring_replaces_the_rows_and_a_second_version_lives_beside_them(market, tmp_path):
    path = copy_warehouse(market, tmp_path)
    registry = Registry(shutil.copytree(market.config.registry.path, tmp_path / "registry"))
    first = score_into(path, registry, market.config, EVAL[1])
    again = score_into(path, registry, market.config, EVAL[1])
    rows = stored(path)
    assert len(rows) == len(first)
    np.testing.assert_array_equal(rows["pred_5d"].to_numpy(), first["pred_5d"].to_numpy())
    assert (rows["scored_at"] == again["scored_at"].iloc[0]).all()

    old = registry.champion().champion
    new = registry.publish(market.staged, market.manifest, **_republish(registry, old))
    second = score_into(path, registry, market.config, EVAL[1])
    rows = stored(path)
    assert set(second["model_version"]) == {new}
    assert rows.groupby("model_version").size().to_dict() == {old: len(first), new: len(first)}
    kept = rows[rows["model_version"] == old]
    assert (kept["scored_at"] == again["scored_at"].iloc[0]).all()


def _republish(registry: Registry, version: str) -> dict:
    """Everything ``publish`` needs to publish the same staged model again as a new version."""
    record = registry.show(version)
    return {
        "metrics": record.metrics,
        "gates": record.gates,
        "windows": record.metadata["windows"],
        "data_fingerprint": record.metadata["data_fingerprint"],
        "predictions": registry.predictions(version),
    }


def test_a_failed_write_leaves_the_previous_rows(market, tmp_path):
    path = copy_warehouse(market, tmp_path)
    frame = score_into(path, market.registry, market.config)
    before = stored(path)
    doubled = pd.concat([frame.assign(pred_5d=0.0), frame.head(1)])  # a duplicate key fails the insert
    with Warehouse(path) as wh, pytest.raises(duckdb.ConstraintException):
        write_predictions(wh, doubled)
    pd.testing.assert_frame_equal(stored(path), before)


def test_a_version_with_other_horizons_adds_its_columns(market, tmp_path):
    path = copy_warehouse(market, tmp_path)
    frame = score_into(path, market.registry, market.config)
    other = frame[["Date", "Code", "scored_at"]].assign(model_version="v-other", pred_60d=0.5, rank_60d=1)
    with Warehouse(path) as wh:
        write_predictions(wh, other)
        with pytest.raises(ValueError, match=r"unknown.*target_5d"):
            write_predictions(wh, frame.assign(target_5d=0.0))
    rows = stored(path)
    assert rows.loc[rows["model_version"] == "v-other", "pred_5d"].isna().all()
    assert rows.loc[rows["model_version"] != "v-other", "pred_60d"].isna().all()


def test_unusable_predictions_are_refused(market):
    with Warehouse(market.warehouse, read_only=True) as wh:
        champion = load_champion(market.registry, wh.con)
        no_such_horizon = market.config.model_copy(
            update={"train": market.config.train.model_copy(update={"primary_horizon": 3})}
        )
        with pytest.raises(ScoringError, match=r"primary_horizon 3 is not one of .*\[1, 5, 10, 20\]"):
            score_day(wh.con, champion, no_such_horizon)
        with torch.no_grad():
            for parameter in champion.model.parameters():
                parameter.fill_(float("nan"))
        with pytest.raises(ScoringError, match=r"non-finite predictions for \d+ stocks"):
            score_day(wh.con, champion, market.config)


@pytest.mark.parametrize(
    ("drift", "named"),
    [("ALTER TABLE {t} RENAME COLUMN Code TO code", "code"), ("ALTER TABLE {t} DROP COLUMN {cs_z}", "{cs_z}")],
    ids=["code-renamed", "cs-z-dropped"],
)
def test_drifted_features_are_refused_naming_the_column(market, tmp_path, drift, named):
    path = copy_warehouse(market, tmp_path)
    score_into(path, market.registry, market.config)
    before = stored(path)
    with Warehouse(market.warehouse, read_only=True) as wh:
        loaded_before_the_drift = load_champion(market.registry, wh.con)
    cs_z = next(n for n in market.manifest.feature_names if n.endswith("_cs_z"))
    with duckdb.connect(str(path)) as con:
        con.execute(drift.format(t=market.manifest.table_name, cs_z=cs_z))
    named = named.format(cs_z=cs_z)

    with Warehouse(path, read_only=True) as wh:
        with pytest.raises(CheckpointRefused, match=named) as refused:
            load_champion(market.registry, wh.con)
        # A checkpoint loaded earlier is still checked when it reads the drifted table.
        with pytest.raises(ContractViolation, match=named):
            score_day(wh.con, loaded_before_the_drift, market.config)
    assert refused.value.diff is not None and not refused.value.diff.empty
    pd.testing.assert_frame_equal(stored(path), before)


def test_no_champion_is_a_clear_failure(market, tmp_path):
    empty = tmp_path / "empty-registry"
    with (
        Warehouse(market.warehouse, read_only=True) as wh,
        pytest.raises(ScoringError, match=f"nothing published yet in {empty}; run a retrain"),
    ):
        load_champion(Registry(empty), wh.con)


def test_a_day_the_feature_table_lacks_is_a_clear_failure(market):
    last = feature_days(market.warehouse, market.manifest.table_name)[-1]
    with Warehouse(market.warehouse, read_only=True) as wh:
        champion = load_champion(market.registry, wh.con)
        for day in (date(2022, 9, 25), date(2023, 1, 4)):  # a Sunday, and a day after the table's end
            with pytest.raises(ScoringError, match=f"{day} is not a day of .*its last date is {last}"):
                score_day(wh.con, champion, market.config, day)


def test_no_look_ahead_later_rows_do_not_change_a_days_scores(market, tmp_path):
    day = EVAL[1]
    path = copy_warehouse(market, tmp_path)
    with Warehouse(path, read_only=True) as wh:
        full = score_day(wh.con, load_champion(market.registry, wh.con), market.config, day)
    with duckdb.connect(str(path)) as con:
        con.execute(f"DELETE FROM {market.manifest.table_name} WHERE Date > ?", [day])
    assert feature_days(path, market.manifest.table_name)[-1] == day
    with Warehouse(path, read_only=True) as wh:
        truncated = score_day(wh.con, load_champion(market.registry, wh.con), market.config)  # default: last day
    columns = ["Date", "Code", "pred_1d", "pred_5d", "pred_10d", "pred_20d", "rank_5d"]
    pd.testing.assert_frame_equal(truncated[columns], full[columns])
