"""Registry fixtures: tiny real models staged by ``atft.training.session.stage``, and everything a publish needs."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from atft.config import ModelConfig
from atft.models import ContractModel, build_model
from atft.registry import Registry
from atft.training.session import Windows, stage
from atft.training.trainer import EpochRecord, TrainResult
from schemas.manifest import CSZSettings, FeatureColumn, FeatureManifest

HORIZONS = [1, 5]
LOOKBACK = 8
TINY = ModelConfig(lookback=LOOKBACK, hidden=8, var_hidden=2, fan_window=4, gat_heads=1, dropout=0.0)
WINDOWS = Windows(date(2024, 1, 4), date(2024, 3, 29), date(2024, 4, 10), date(2024, 5, 31))
EVAL = {"eval_start": date(2024, 6, 14), "eval_end": date(2024, 7, 31)}
PASSED = {"passed": True, "results": [{"gate": "rank_ic_5d >= 0.01", "value": 0.031, "passed": True}]}
METRICS = {"rank_ic_1d": 0.021, "rank_ic_5d": 0.031, "sharpe_5d": 1.12, "collapse_ratio_1d": 0.4}
FINGERPRINT = "features_0123456789ab:sha256:" + "ab" * 32


def make_manifest(width: int = 6, code_version: str = "test") -> FeatureManifest:
    features = tuple(FeatureColumn(f"f{i:03d}", "float32", "price", 1) for i in range(width))
    targets = tuple(FeatureColumn(f"target_{h}d", "float32", "target", 0) for h in HORIZONS)
    return FeatureManifest(features, targets, CSZSettings(5.0, 10, 1e-8, 1, "none"), code_version)


def publish_kwargs(**overrides: Any) -> dict[str, Any]:
    """Everything ``Registry.publish`` takes besides the staged directory and the manifest."""
    predictions = pd.DataFrame(
        {
            "Date": pd.to_datetime(["2024-06-14"] * 3 + ["2024-06-17"] * 3),
            "Code": ["1301", "1332", "1333"] * 2,
            "pred_1d": [0.1, -0.2, 0.3, 0.0, 0.5, -0.4],
            "pred_5d": [0.2, -0.1, 0.1, 0.3, -0.3, 0.05],
        }
    )
    defaults = {
        "metrics": METRICS,
        "gates": PASSED,
        "windows": {**asdict(WINDOWS), **EVAL},
        "data_fingerprint": FINGERPRINT,
        "predictions": predictions,
    }
    return defaults | overrides


@pytest.fixture
def manifest() -> FeatureManifest:
    return make_manifest()


@pytest.fixture(name="make_manifest")
def make_manifest_fixture():
    """Factory: ``make_manifest(width=6, code_version="test")``, features f000.. and one target per horizon."""
    return make_manifest


@pytest.fixture(name="publish_kwargs")
def publish_kwargs_fixture():
    """Factory: ``publish_kwargs(**overrides)``, what ``publish`` takes besides the staged dir and the manifest."""
    return publish_kwargs


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


@pytest.fixture
def staged(tmp_path: Path, manifest: FeatureManifest):
    """Factory: ``staged(seed=0, manifest=<the manifest fixture>) -> (model, staged_dir)``: a freshly built model
    with non-trivial input scaling, written by the real staging step."""
    count = 0

    def make(seed: int = 0, manifest: FeatureManifest = manifest) -> tuple[ContractModel, Path]:
        nonlocal count
        count += 1
        torch.manual_seed(seed)
        model = build_model(TINY, manifest.width, HORIZONS, manifest.sha256)
        model.set_input_scaling(torch.randn(manifest.width), torch.rand(manifest.width) + 0.5)
        record = EpochRecord(1, 0.9, {"listnet": 0.8}, {5: 0.05}, {5: 0.04}, 0.3, False, 1e-3, 1.0, 100.0, 0.1)
        result = TrainResult(model.state_dict(), [record], best_epoch=1, best_valid_rank_ic=0.05, device="cpu")
        return model.eval(), stage(model, result, manifest, WINDOWS, tmp_path / f"staged-{count}")

    return make


@pytest.fixture
def published(registry: Registry, staged, manifest: FeatureManifest):
    """Factory: ``published(seed=0, promote=True) -> (version, model)``."""

    def make(seed: int = 0, promote: bool = True) -> tuple[str, ContractModel]:
        model, directory = staged(seed)
        return registry.publish(directory, manifest, **publish_kwargs(), promote=promote), model

    return make


@pytest.fixture
def scores():
    """``scores(model)``: the model's scores for one fixed random day, to compare a loaded model with its original.
    Every ordered pair of distinct stocks is an edge; a few steps are missing."""
    stocks = 7

    def run(model: ContractModel) -> torch.Tensor:
        gen = torch.Generator().manual_seed(0)
        src, dst = torch.nonzero(~torch.eye(stocks, dtype=torch.bool)).T
        edge_attr = torch.stack([torch.rand(src.shape[0], generator=gen) * 2 - 1, torch.zeros(src.shape[0])], dim=1)
        x = torch.randn(stocks, LOOKBACK, model.width, generator=gen)
        mask = torch.rand(stocks, LOOKBACK, generator=gen) > 0.1
        with torch.no_grad():
            return model(x, mask, torch.stack([src, dst]), edge_attr, torch.zeros(stocks, dtype=torch.long))

    return run
