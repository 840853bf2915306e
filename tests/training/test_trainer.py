"""The trainer's guards and mechanics, on small in-memory arrays with a planted signal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from atft.config import GraphConfig, LossConfig, ModelConfig, TrainConfig
from atft.data.arrays import FeatureArrays, StoredCube
from atft.data.dataset import DayDataset, day_loader
from atft.losses import RankingLoss
from atft.metrics import daily_rank_ic
from atft.models import build_model
from atft.prediction import predict
from atft.training.trainer import (
    COMPILE_MIN_STOCK_DAYS,
    EpochRecord,
    TrainingDiverged,
    _compiled,
    _warmup_cosine,
    fit,
    fit_input_scaling,
    overrun_warning,
    prediction_std,
)
from schemas.manifest import CSZSettings, FeatureColumn, FeatureManifest

DAYS, STOCKS, WIDTH, LOOKBACK = 80, 60, 6, 8
HORIZONS = [1, 5]


def planted(seed: int = 0, strength: float = 1.0) -> FeatureArrays:
    """Targets are a fixed nonlinear function of today's features plus noise: learnable from the last step."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(DAYS, STOCKS, WIDTH)).astype(np.float32)
    signal = x[..., 0] - 0.5 * x[..., 1] + x[..., 2] * x[..., 3]
    y = strength * signal[..., None] + rng.normal(size=(DAYS, STOCKS, len(HORIZONS)))
    y = (y - y.mean(1, keepdims=True)) / y.std(1, keepdims=True)
    features = tuple(FeatureColumn(f"f{i}", "float32", "price", 1) for i in range(WIDTH))
    targets = tuple(FeatureColumn(f"target_{h}d", "float32", "target", 0) for h in HORIZONS)
    manifest = FeatureManifest(features, targets, CSZSettings(5.0, 10, 1e-8, 1, "none"), "test")
    return FeatureArrays(
        manifest=manifest,
        horizons=HORIZONS,
        dates=pd.bdate_range("2024-01-01", periods=DAYS),
        codes=np.array([f"{1300 + i}" for i in range(STOCKS)], dtype=object),
        cube=StoredCube(x.shape, "float32", _array=x),
        present=np.ones((DAYS, STOCKS), dtype=bool),
        targets=y.astype(np.float32),
        target_valid=np.ones(y.shape, dtype=bool),
        forward_returns=0.01 * y.astype(np.float32),
        returns=rng.normal(size=(DAYS, STOCKS)).astype(np.float32) * 0.01,
        sector=np.tile(np.arange(STOCKS) % 5, (DAYS, 1)).astype(np.int16),
    )


def loaders(arrays: FeatureArrays, split: int = 60) -> tuple:
    graph = GraphConfig(window=10, top_k=3, min_abs_corr=0.0)
    train = DayDataset(arrays, list(range(LOOKBACK - 1, split)), LOOKBACK, graph, label_cutoff=split - 1)
    valid = DayDataset(arrays, list(range(split, DAYS)), LOOKBACK, graph)
    return day_loader(train, 4, shuffle=True), day_loader(valid, 4, shuffle=False)


def small_model(name: str = "atft_gat_fan") -> nn.Module:
    config = ModelConfig(name=name, lookback=LOOKBACK, hidden=32, var_hidden=4, fan_window=4, patch_len=4,
                         patch_stride=2, transformer_layers=1, attention_heads=2, dropout=0.0)  # fmt: skip
    return build_model(config, WIDTH, HORIZONS, "test")


class Constant(nn.Module):
    """The degenerate model: the same score for every stock."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(len(HORIZONS)))

    def forward(self, x, x_mask, edge_index, edge_attr, day):
        return self.bias.expand(x.shape[0], -1)


@pytest.mark.parametrize("name", ["atft_gat_fan", "apex"])
def test_a_tiny_planted_problem_is_fitted(name):
    torch.manual_seed(0)
    arrays = planted()
    train, valid = loaders(arrays)
    config = TrainConfig(epochs=12, learning_rate=3e-3, patience=12, primary_horizon=5, device="cpu")
    model = small_model(name)
    model.set_input_scaling(*fit_input_scaling(arrays, list(range(LOOKBACK - 1, 60))))
    result = fit(model, train, valid, RankingLoss(LossConfig(), HORIZONS), config, HORIZONS)
    model.load_state_dict(result.state_dict)
    train_eval = day_loader(train.dataset, 4, shuffle=False)
    pred, label, mask = predict(model, train_eval, torch.device("cpu"))
    train_rank_ic = np.nanmean(daily_rank_ic(pred[..., 1], label[..., 1], mask[..., 1]))
    assert train_rank_ic > 0.5, train_rank_ic
    assert result.best_valid_rank_ic > 0.3 and not result.collapsed


def test_a_constant_prediction_model_is_flagged_as_collapsed():
    arrays = planted()
    train, valid = loaders(arrays)
    config = TrainConfig(epochs=2, patience=2, primary_horizon=5, device="cpu")
    seen = []
    result = fit(Constant(), train, valid, RankingLoss(LossConfig(), HORIZONS), config, HORIZONS, seen.append)
    assert [r.collapsed for r in seen] == [True, True] and result.collapsed
    assert seen[0].prediction_std < 1e-6 and "COLLAPSE" in seen[0].line()  # 0 up to float32 rounding of the mean
    # Progress: the first epoch projects the second at its own speed, the last has nothing left.
    assert seen[0].eta_s == pytest.approx(seen[0].seconds, rel=0.2) and seen[1].eta_s == 0
    assert ", ETA " in seen[0].line() and "ETA" not in seen[1].line()
    assert all(r.threads >= 1 for r in seen) and "torch threads" in result.thread_policy
    stock_days = 2 * (60 - LOOKBACK + 1) * STOCKS
    assert result.compiled == f"nothing (auto: {stock_days:,} stock-days to train, below {COMPILE_MIN_STOCK_DAYS:,})"


def test_train_compile_chooses_the_per_step_block_on_cpu_and_says_why_not_otherwise(monkeypatch):
    cpu = torch.device("cpu")
    big = COMPILE_MIN_STOCK_DAYS
    model = small_model()
    stepped, what = _compiled(model, TrainConfig(compile="auto"), cpu, big)
    assert stepped is model and what == "the per-step block on CPU (torch.compile, inductor)"
    assert model._compiled_per_step is not None  # torch.compile is lazy: nothing is compiled until a step runs
    assert _compiled(small_model(), TrainConfig(compile=True), cpu, 10)[1].startswith("the per-step block")
    assert _compiled(small_model(), TrainConfig(compile=False), cpu, big)[1] == "nothing (train.compile is false)"
    monkeypatch.setattr("atft.training.trainer.shutil.which", lambda _: None)
    assert "no C++ compiler" in _compiled(small_model(), TrainConfig(compile="auto"), cpu, big)[1]
    for other, name in ((Constant(), "Constant"), (small_model("apex"), "APEX")):
        what = _compiled(other, TrainConfig(compile=True), cpu, big)[1]
        assert what == f"nothing ({name} has no block compiled on CPU)"


def test_an_overrun_is_projected_from_the_first_epoch_only():
    record = EpochRecord(1, 0.0, {}, {}, {}, 1.0, False, 1e-3, seconds=100.0, stock_days_per_s=1.0, data_seconds=0.0,
                         eta_s=700.0)  # fmt: skip
    assert overrun_warning(record, elapsed_s=130.0, epochs=8, timeout_s=600).startswith("at 100 s per epoch, 8 epochs")
    assert overrun_warning(record, elapsed_s=130.0, epochs=8, timeout_s=900) is None
    later = EpochRecord(2, 0.0, {}, {}, {}, 1.0, False, 1e-3, 100.0, 1.0, 0.0, eta_s=600.0)
    assert overrun_warning(later, elapsed_s=230.0, epochs=8, timeout_s=600) is None


def test_a_non_finite_loss_stops_training_with_a_clear_error():
    class Broken(Constant):
        def forward(self, x, x_mask, edge_index, edge_attr, day):
            return super().forward(x, x_mask, edge_index, edge_attr, day) * float("nan") + x[:, -1, :2]

    train, valid = loaders(planted())
    config = TrainConfig(epochs=1, primary_horizon=5, device="cpu")
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 1, step 1"):
        fit(Broken(), train, valid, RankingLoss(LossConfig(), HORIZONS), config, HORIZONS)


def test_input_scaling_is_fitted_on_training_days_only():
    arrays = planted()
    mean, std = fit_input_scaling(arrays, list(range(10, 40)))
    arrays.x[40:] += 100.0  # the validation period, wildly different
    again_mean, again_std = fit_input_scaling(arrays, list(range(10, 40)))
    assert torch.equal(mean, again_mean) and torch.equal(std, again_std)
    assert torch.allclose(mean, torch.tensor(arrays.x[10:40].reshape(-1, WIDTH).mean(0)), atol=1e-5)


def test_warmup_then_cosine_decay():
    factor = _warmup_cosine(100, 0.1)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.5, abs=0.02) and factor(100) == pytest.approx(0.0, abs=1e-9)


def test_prediction_std_is_the_median_daily_cross_sectional_std():
    pred = np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0], [0.0, 2.0, np.nan]])
    mask = np.array([[True, True, True], [True, True, True], [True, True, False]])
    assert prediction_std(pred, mask) == pytest.approx(np.median([np.std([1, 2, 3]), 0.0, 1.0]))


@pytest.mark.parametrize("decay", [0.0, 0.9])
def test_with_a_weight_average_the_kept_state_is_the_average_and_training_goes_on_from_the_raw_weights(decay):
    arrays = planted()
    train, valid = loaders(arrays)
    model = small_model()
    model.set_input_scaling(*fit_input_scaling(arrays, list(range(LOOKBACK - 1, 60))))
    config = TrainConfig(epochs=1, primary_horizon=5, device="cpu", weight_average_decay=decay)
    result = fit(model, train, valid, RankingLoss(LossConfig(), HORIZONS), config, HORIZONS)
    kept_raw = [torch.equal(result.state_dict[name], p.detach()) for name, p in model.named_parameters()]
    # One epoch, so the kept state is that epoch's: the raw weights without an average, their average with one.
    assert all(kept_raw) if decay == 0 else not any(kept_raw)
