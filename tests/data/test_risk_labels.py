"""Risk-adjusted training labels: divided by each stock's own risk, named exposures regressed out, that day only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from atft.config import LossConfig, PipelineConfig
from atft.data.arrays import FeatureArrays, StoredCube
from atft.data.risk_labels import risk_adjusted_targets, with_risk_adjusted_labels
from atft.metrics import daily_rank_ic, summarise
from atft.prediction import predict
from atft.training.session import TrainingData, risk_adjusted, train_model
from tests.training.test_trainer import HORIZONS, loaders, planted, small_model


def risky(seed: int = 0) -> FeatureArrays:
    """Labels dominated by a bet on input f0, whose payoff varies from day to day around +2, plus a small steady
    reward for input f1 and noise."""
    arrays = planted(seed)
    rng = np.random.default_rng(seed + 100)
    x = arrays.x
    payoff = rng.normal(loc=2.0, scale=1.0, size=(x.shape[0], 1, 1))
    y = payoff * x[..., :1] + 0.5 * x[..., 1:2] + rng.normal(size=arrays.targets.shape)
    y = (y - y.mean(1, keepdims=True)) / y.std(1, keepdims=True)
    return dataclasses.replace(arrays, targets=y.astype(np.float32))


def test_residuals_are_orthogonal_to_the_exposures_and_z_scored_per_day() -> None:
    arrays = risky()
    neutral, _ = risk_adjusted_targets(arrays, ["f0", "f2"])
    x = arrays.x
    for d, k in [(0, 0), (17, 1), (79, 0)]:
        design = np.column_stack([np.ones(x.shape[1]), x[d, :, 0], x[d, :, 2]])
        coef = np.linalg.lstsq(design, arrays.targets[d, :, k].astype(np.float64), rcond=None)[0]
        residual = arrays.targets[d, :, k] - design @ coef
        np.testing.assert_allclose(neutral[d, :, k], residual / residual.std(), atol=1e-5)
        assert abs(np.corrcoef(neutral[d, :, k], x[d, :, 0])[0, 1]) < 1e-5
        assert abs(neutral[d, :, k].mean()) < 1e-5 and neutral[d, :, k].std() == pytest.approx(1.0, abs=1e-5)
    # The bet dominated the raw labels; the steady reward is what is left of them.
    assert np.mean([abs(stats.spearmanr(arrays.targets[d, :, 0], x[d, :, 0])[0]) for d in range(80)]) > 0.6
    assert np.mean([stats.spearmanr(neutral[d, :, 0], x[d, :, 1])[0] for d in range(80)]) > 0.3


def test_invalid_labels_absent_stocks_and_thin_days_take_no_part() -> None:
    arrays = risky()
    valid = arrays.target_valid.copy()
    valid[5, :7, 0] = False
    targets = arrays.targets.copy()
    targets[5, :7, 0] = 1e6  # an invalid label's value must not move the fit
    present = arrays.present.copy()
    present[9, :3] = False
    valid[20, 3:, 1] = False  # 3 valid stocks: not more than the intercept and two exposures plus one
    arrays = dataclasses.replace(arrays, targets=targets, target_valid=valid, present=present)
    neutral, _ = risk_adjusted_targets(arrays, ["f0", "f2"])

    x = arrays.x
    design = np.column_stack([np.ones(STOCKS_LEFT := x.shape[1] - 7), x[5, 7:, 0], x[5, 7:, 2]])
    y = targets[5, 7:, 0].astype(np.float64)
    residual = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    np.testing.assert_allclose(neutral[5, 7:, 0], residual / residual.std(), atol=1e-5)
    assert STOCKS_LEFT > 3 and np.isnan(neutral[5, :7, 0]).all()
    assert np.isnan(neutral[9, :3]).all() and np.isfinite(neutral[9, 3:]).all()
    assert np.isnan(neutral[20, :, 1]).all() and np.isfinite(neutral[20, :, 0]).all()
    assert not with_risk_adjusted_labels(arrays, ["f0", "f2"]).target_valid[20, :, 1].any()


def test_a_days_labels_use_that_days_exposures_only() -> None:
    arrays = risky()
    before, _ = risk_adjusted_targets(arrays, ["f0"])
    later = arrays.x.copy()
    later[41:] = np.random.default_rng(9).normal(size=later[41:].shape)
    changed = dataclasses.replace(arrays, cube=StoredCube(later.shape, "float32", _array=later))
    after, _ = risk_adjusted_targets(changed, ["f0"])
    np.testing.assert_array_equal(before[:41], after[:41])
    assert not np.allclose(before[41:], after[41:])


def test_sector_neutral_labels_are_each_stocks_label_over_its_sectors_mean_that_day() -> None:
    arrays = risky()
    sector = arrays.sector.copy()
    sector[:, :4] = -1  # stocks without a sector form one group of their own
    move = np.random.default_rng(3).normal(scale=3.0, size=(sector.shape[0], 6))  # each group's move, each day
    targets = arrays.targets + np.take_along_axis(move, sector + 1, axis=1)[..., None]
    arrays = dataclasses.replace(arrays, sector=sector, targets=targets.astype(np.float32))

    neutral, valid = risk_adjusted_targets(arrays, sector_neutral=True)
    assert valid.all()
    for d, k in [(0, 0), (33, 1), (79, 0)]:
        y = arrays.targets[d, :, k].astype(np.float64)
        over_sector = y - pd.Series(y).groupby(sector[d]).transform("mean").to_numpy()
        np.testing.assert_allclose(neutral[d, :, k], over_sector / over_sector.std(), atol=1e-5)

    # With an input as well, the residuals are orthogonal to it and to every sector, the unknown one included.
    both, _ = risk_adjusted_targets(arrays, ["f0"], sector_neutral=True)
    for group in range(-1, 5):
        np.testing.assert_allclose(both[..., 0][sector == group].reshape(len(sector), -1).sum(axis=1), 0.0, atol=1e-4)
    assert max(abs(np.corrcoef(both[d, :, 0], arrays.x[d, :, 0])[0, 1]) for d in range(80)) < 1e-5


def test_an_unknown_input_is_refused_with_the_known_ones_listed() -> None:
    with pytest.raises(ValueError, match=r"loss.neutralize names \['rv_60'\].*its inputs are: f0, f1"):
        risk_adjusted_targets(planted(), ["f0", "rv_60"])
    with pytest.raises(ValueError, match=r"loss.scale_by names \['atr'\]"):
        risk_adjusted_targets(planted(), scale_by="atr")


def test_scaling_divides_each_label_by_its_stocks_risk_and_drops_missing_risk() -> None:
    arrays = risky()
    x = arrays.x.copy()
    x[..., 4] = np.abs(x[..., 4]) + 0.5
    x[3, 11, 4] = 0.0  # a missing input
    scaled = dataclasses.replace(arrays, cube=StoredCube(x.shape, "float32", _array=x))
    labels, valid = risk_adjusted_targets(scaled, scale_by="f4")
    expected = np.delete(arrays.targets[3, :, 0], 11) / np.delete(x[3, :, 4], 11).astype(np.float64)
    expected -= expected.mean()
    np.testing.assert_allclose(np.delete(labels[3, :, 0], 11), expected / expected.std(), atol=1e-5)
    assert not valid[3, 11].any() and np.isnan(labels[3, 11]).all() and valid[4, 11].all()

    x[6, 2, 4] = -0.25
    negative = dataclasses.replace(arrays, cube=StoredCube(x.shape, "float32", _array=x))
    with pytest.raises(ValueError, match=r"scale_by input f4 must not be negative; it is -0.25 for stock 1302 on "
                                         r"2024-01-09 \(1 such stock-days\)"):  # fmt: skip
        risk_adjusted_targets(negative, scale_by="f4")


def test_scaling_removes_the_reward_for_a_risky_stocks_spread() -> None:
    """Zero-mean labels whose spread grows with f4, a stock's own risk: the top-one ListNet's target, each stock's
    chance of the day's best label, then grows with f4 too; divided by f4, it no longer does."""
    arrays = planted()
    rng = np.random.default_rng(5)
    x = arrays.x.copy()
    x[..., 4] = np.exp(x[:1, :, 4])  # a fixed risk per stock
    noise = rng.normal(size=arrays.targets.shape) * x[..., 4:5]
    risky_spread = dataclasses.replace(arrays, cube=StoredCube(x.shape, "float32", _array=x),
                                       targets=noise.astype(np.float32))  # fmt: skip

    def top_share_by_risk(labels: np.ndarray) -> float:
        top = torch.softmax(torch.from_numpy(np.nan_to_num(labels[..., 0])), dim=1).mean(0).numpy()
        return stats.spearmanr(top, x[0, :, 4])[0]

    assert top_share_by_risk(risky_spread.targets) > 0.8
    assert abs(top_share_by_risk(risk_adjusted_targets(risky_spread, scale_by="f4")[0])) < 0.3


def _config(neutralize: list[str]) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "name": "neutral",
            "source": {"kind": "synthetic"},
            "model": small_model().config.model_dump(),
            "features": {"horizons": HORIZONS},
            "loss": {"neutralize": neutralize},
            "train": {"epochs": 3, "patience": 5, "learning_rate": 3e-3, "device": "cpu", "threads": 1,
                      "compile": False, "primary_horizon": 5},
        }
    )  # fmt: skip


def test_only_the_training_labels_change() -> None:
    arrays = risky()
    train, valid = loaders(arrays)
    data = TrainingData(arrays, train.dataset, valid.dataset, list(train.dataset.days))
    assert risk_adjusted(data, LossConfig()) is data
    for loss in (LossConfig(neutralize=["f0"]), LossConfig(sector_neutral=True)):
        fitted_on = risk_adjusted(data, loss)
        assert fitted_on.valid is data.valid and fitted_on.arrays is data.arrays
        assert fitted_on.train.days == data.train.days and fitted_on.train.label_cutoff == data.train.label_cutoff
        assert not np.allclose(fitted_on.train.arrays.targets, arrays.targets, equal_nan=True)


def test_a_model_trained_on_neutral_labels_drops_the_bet_and_keeps_the_reward() -> None:
    """The same network and seed, on the same days: the raw labels teach it to rank by f0, the bet they paid; with
    f0 regressed out of its labels it ranks by f1, the steady reward, and no longer by f0."""
    arrays = risky()
    train, valid = loaders(arrays)
    data = TrainingData(arrays, train.dataset, valid.dataset, list(train.dataset.days))
    x = torch.from_numpy(arrays.x[valid.dataset.days])

    def loading(neutralize: list[str], column: int) -> float:
        model, _ = train_model(_config(neutralize), arrays.manifest, data)
        pred, _, mask = predict(model, valid, torch.device("cpu"))
        return summarise(daily_rank_ic(pred[..., 1], x[..., column].numpy(), mask[..., 1]))[0]

    assert loading([], 0) > 0.5
    assert abs(loading(["f0"], 0)) < 0.15 and loading(["f0"], 1) > 0.3
