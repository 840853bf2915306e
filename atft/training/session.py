"""One training run over explicit windows: contract first, then data, model, fit, and a staged result.

The contract is checked before a model is built or a device touched: a drifted feature table never
costs a training run. The staged result is safe to load anywhere: weights as safetensors (no pickled
code), everything else as JSON, with the manifest hash that the weights were trained against.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
from safetensors.torch import save_file
from torch import nn

from atft.config import LossConfig, PipelineConfig, TrainConfig
from atft.data.arrays import FeatureArrays, load_arrays
from atft.data.dataset import DayDataset, day_loader, history_days
from atft.data.risk_labels import with_risk_adjusted_labels
from atft.features.store import feature_schema
from atft.losses import RankingLoss
from atft.metrics import daily_rank_ic, summarise
from atft.models import ContractModel, build_model
from atft.models.ensemble import SeedEnsemble
from atft.prediction import predict, select_device
from atft.registry.integrity import HISTORY, MODEL, WEIGHTS
from atft.registry.loading import build_checkpoint
from atft.training.trainer import (
    EpochRecord,
    TrainResult,
    fit,
    fit_input_scaling,
    prediction_std,
    seed_everything,
)
from atft.training.warm_start import COLD, WarmStart
from schemas.contract import check_contract
from schemas.manifest import FeatureManifest


@dataclass(frozen=True)
class Windows:
    train_start: date
    train_end: date
    valid_start: date
    valid_end: date

    def __post_init__(self) -> None:
        if not self.train_start <= self.train_end < self.valid_start <= self.valid_end:
            raise ValueError(f"windows must be ordered train_start <= train_end < valid_start <= valid_end, got {self}")

    @classmethod
    def trailing(cls, dates: Sequence[date], valid_days: int, purge: int, warm_up: int) -> Windows:
        """Validation on the last ``valid_days`` dates; training from the end of the features' ``warm_up`` to
        ``purge`` sessions before validation, so that no training label reaches into it."""
        if len(dates) < warm_up + purge + valid_days + 20:
            raise ValueError(
                f"{len(dates)} days of features are too few for a {warm_up}-day warm-up, a {purge}-day purge "
                f"and {valid_days} validation days"
            )
        valid_start = len(dates) - valid_days
        return cls(dates[warm_up], dates[valid_start - purge - 1], dates[valid_start], dates[-1])


@dataclass(frozen=True)
class TrainingData:
    arrays: FeatureArrays
    train: DayDataset
    valid: DayDataset
    train_days: list[int]


def check_features(con: duckdb.DuckDBPyConnection, manifest: FeatureManifest, expected_sha256: str) -> None:
    """Refuse a feature table whose columns, or whose manifest, differ from what the run was promised."""
    check_contract(feature_schema(con, manifest.table_name), manifest, actual_hash=expected_sha256)


def prepare_data(con: duckdb.DuckDBPyConnection, manifest: FeatureManifest, config: PipelineConfig,
                 windows: Windows) -> TrainingData:  # fmt: skip
    """Arrays for both windows, and datasets whose labels stop at each window's end (the purge)."""
    lookback = config.model.lookback
    arrays = load_arrays(con, manifest, windows.train_start, windows.valid_end, history=history_days(config.model))
    dates = arrays.dates.date

    def days(start: date, end: date) -> list[int]:
        return [i for i, d in enumerate(dates) if start <= d <= end and i >= lookback - 1]

    train_days, valid_days = days(windows.train_start, windows.train_end), days(windows.valid_start, windows.valid_end)
    if not train_days or not valid_days:
        raise ValueError(f"no feature rows in a window: {len(train_days)} train days, {len(valid_days)} valid days")
    train = DayDataset(arrays, train_days, lookback, config.model.graph, label_cutoff=train_days[-1])
    valid = DayDataset(arrays, valid_days, lookback, config.model.graph, label_cutoff=valid_days[-1])
    return TrainingData(arrays, train, valid, train_days)


def train_model(
    config: PipelineConfig,
    manifest: FeatureManifest,
    data: TrainingData,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    start: WarmStart = COLD,
) -> tuple[nn.Module, TrainResult]:
    """Build the configured model from the manifest's width, fit it, and load its best state.

    With ``loss.scale_by``, ``loss.neutralize`` or ``loss.sector_neutral`` the members learn from risk-adjusted
    labels (see ``atft.data.risk_labels``), derived here from the training arrays' labels, after any control has
    replaced them; validation keeps the true ones.
    With a warm ``start`` (see ``atft.training.warm_start``) the model begins from its weights and trains for
    ``train.warm_start_epochs`` at ``train.warm_start_learning_rate``. A seed ensemble (``model.ensemble`` > 1)
    fits its members one after another, member ``i`` from seed ``train.seed + i`` (see :func:`fit_members`).
    """
    horizons = data.arrays.horizons
    model = initial_model(config, manifest, data, start)
    train = start.train_settings(config.train)
    members = list(model.members) if isinstance(model, SeedEnsemble) else [model]
    fitted_on = risk_adjusted(data, config.loss)
    results = fit_members(members, fitted_on, RankingLoss(config.loss, horizons), train, horizons, on_epoch)
    for member, result in zip(members, results, strict=True):
        member.load_state_dict(result.state_dict)
    result = results[0] if len(results) == 1 else ensemble_result(model, results, data, train, horizons)
    result.warm_start = start.describe()
    return model.cpu(), result


def risk_adjusted(data: TrainingData, loss: LossConfig) -> TrainingData:
    """``data`` whose training set learns from the risk-adjusted labels ``loss`` asks for; ``data`` itself when it
    asks for none. The validation set, the arrays its scores are read from, and the input scaling are shared."""
    if not loss.neutralize and loss.scale_by is None and not loss.sector_neutral:
        return data
    train = data.train
    arrays = with_risk_adjusted_labels(train.arrays, loss.neutralize, loss.scale_by, loss.sector_neutral)
    return dataclasses.replace(
        data, train=DayDataset(arrays, train.days, train.lookback, train.graph, label_cutoff=train.label_cutoff)
    )


def initial_model(
    config: PipelineConfig, manifest: FeatureManifest, data: TrainingData, start: WarmStart = COLD
) -> ContractModel:
    """The model as :func:`train_model` begins to fit it: the ``start``'s weights, or each member's from its own
    seed, and the input scaling fitted on ``data``'s training days. Its labels are never read."""
    horizons = data.arrays.horizons
    contract = (manifest.width, horizons, manifest.sha256, manifest.feature_groups)
    model = build_model(config.model, *contract)
    if start.state_dict is not None:
        model.load_state_dict(start.state_dict, strict=True)
    else:
        # Each member initialised from its own seed: member 0 of an ensemble is the single model of the same seed.
        members = list(model.members) if isinstance(model, SeedEnsemble) else [model]
        for i, member in enumerate(members):
            seed_everything(config.train.seed + i)
            member.load_state_dict(build_model(member.config, *contract).state_dict())
    # After the weights: a version's input scaling is always fitted on its own training days.
    model.set_input_scaling(*fit_input_scaling(data.arrays, data.train_days))
    model.set_neutral_columns(manifest.feature_names)
    return model


def fit_members(
    members: Sequence[nn.Module],
    data: TrainingData,
    loss_fn: RankingLoss,
    train: TrainConfig,
    horizons: list[int],
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> list[TrainResult]:
    """Fit each member on the same windows, member ``i`` with seed ``train.seed + i`` (its batch order and dropout).

    Epoch records carry their member, and their ETA covers the members still to come at the speed seen so far."""
    results: list[TrainResult] = []
    seconds: list[float] = []
    for i, member in enumerate(members):
        seed = train.seed + i
        seed_everything(seed)

        def report(record: EpochRecord, i: int = i) -> None:
            seconds.append(record.seconds)
            record.member, record.members = i, len(members)
            record.eta_s += (len(members) - i - 1) * train.epochs * sum(seconds) / len(seconds)
            if on_epoch is not None:
                on_epoch(record)

        results.append(fit(
            member,
            day_loader(data.train, train.days_per_batch, shuffle=True, seed=seed, num_workers=train.num_workers),
            day_loader(data.valid, train.days_per_batch, shuffle=False),
            loss_fn,
            train,
            horizons,
            report,
        ))  # fmt: skip
    return results


def ensemble_result(
    model: nn.Module, members: Sequence[TrainResult], data: TrainingData, train: TrainConfig, horizons: list[int]
) -> TrainResult:
    """One result for a fitted seed ensemble: its state, every member's epochs, and its own validation RankIC and
    prediction spread (the ensemble's, not a member's). ``best_epoch`` is the latest epoch a member kept."""
    device = select_device(train.device)
    pred, label, mask = predict(model, day_loader(data.valid, train.days_per_batch, shuffle=False), device)
    primary = horizons.index(train.primary_horizon)
    rank_ic = summarise(daily_rank_ic(pred[..., primary], label[..., primary], mask[..., primary]))[0]
    std = prediction_std(pred[..., primary], mask[..., primary])
    first = members[0]
    return TrainResult(
        state_dict={name: value.detach().cpu().clone() for name, value in model.state_dict().items()},
        history=[record for member in members for record in member.history],
        best_epoch=max(member.best_epoch for member in members),
        best_valid_rank_ic=rank_ic,
        device=first.device,
        collapsed=not std >= train.collapse_std,
        thread_policy=first.thread_policy,
        compiled=first.compiled,
        member_best_epochs=[member.best_epoch for member in members],
    )


def stage(model: nn.Module, result: TrainResult, manifest: FeatureManifest, windows: Windows, directory: Path) -> Path:
    """Write the trained state for a later publish step: weights.safetensors, model.json, history.json."""
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in result.state_dict.items()}, directory / WEIGHTS)
    description = {
        **model.describe(),
        "manifest_sha256": manifest.sha256,
        "windows": {k: str(v) for k, v in asdict(windows).items()},
        "best_epoch": result.best_epoch,
        "member_best_epochs": result.member_best_epochs,
        "best_valid_rank_ic": result.best_valid_rank_ic,
        "collapsed": result.collapsed,
        "device": result.device,
        "warm_start": result.warm_start,
    }
    (directory / MODEL).write_text(json.dumps(description, indent=2, default=_json_default))
    (directory / HISTORY).write_text(json.dumps(result.history_dicts(), indent=2, default=_json_default))
    return directory


def load_staged(directory: Path, manifest: FeatureManifest) -> ContractModel:
    """The staged model, rebuilt from its description and safetensors weights (nothing unpickled), in eval mode."""
    return build_checkpoint({name: (Path(directory) / name).read_bytes() for name in (MODEL, WEIGHTS)}, manifest)


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
