"""Warm start from the champion: only the same model on the same manifest, and every refusal says why."""

from __future__ import annotations

from pathlib import Path

import torch

from atft.config import PipelineConfig
from atft.models import build_model
from atft.registry import Registry
from atft.training.session import TrainingData, stage, train_model
from atft.training.trainer import EpochRecord, TrainResult
from atft.training.warm_start import WarmStart, _config_differences, champion_start, stored_model_config
from tests.registry.conftest import HORIZONS, TINY, WINDOWS, make_manifest, publish_kwargs
from tests.training.test_trainer import HORIZONS as PLANTED_HORIZONS
from tests.training.test_trainer import loaders, planted, small_model


def _publish(tmp_path: Path, manifest, config=TINY, horizons=HORIZONS) -> tuple[str, dict]:
    torch.manual_seed(3)
    model = build_model(config, manifest.width, horizons, manifest.sha256)
    model.set_input_scaling(torch.randn(manifest.width), torch.rand(manifest.width) + 0.5)
    record = EpochRecord(1, 0.9, {}, {5: 0.05}, {5: 0.04}, 0.3, False, 1e-3, 1.0, 100.0, 0.1)
    result = TrainResult(model.state_dict(), [record], best_epoch=1, best_valid_rank_ic=0.05, device="cpu")
    staged = stage(model, result, manifest, WINDOWS, tmp_path / "staged")
    version = Registry(tmp_path / "registry").publish(staged, manifest, **publish_kwargs())
    return version, model.state_dict()


def test_the_champion_of_the_same_model_is_the_start_with_its_exact_weights(tmp_path: Path) -> None:
    manifest = make_manifest()
    version, weights = _publish(tmp_path, manifest)
    start = champion_start(tmp_path / "registry", manifest, TINY, HORIZONS)
    assert start.version == version and version in start.reason
    assert start.describe() == {"from_version": version, "reason": start.reason}
    assert start.state_dict.keys() == weights.keys()
    assert all(torch.equal(start.state_dict[k], weights[k]) for k in weights)


def test_without_a_champion_it_trains_from_scratch_and_says_so(tmp_path: Path) -> None:
    start = champion_start(tmp_path / "registry", make_manifest(), TINY, HORIZONS)
    assert start.version is None and start.state_dict is None
    assert start.reason.startswith("no champion in") and "training from scratch" in start.reason


def test_a_champion_of_another_manifest_is_not_the_start(tmp_path: Path) -> None:
    version, _ = _publish(tmp_path, make_manifest(width=6))
    other = make_manifest(width=7)
    start = champion_start(tmp_path / "registry", other, TINY, HORIZONS)
    assert start.version is None and start.state_dict is None
    assert f"champion {version} was trained on manifest" in start.reason and other.sha256 in start.reason


def test_a_champion_of_another_model_config_or_horizons_is_not_the_start_and_the_difference_is_named(
    tmp_path: Path,
) -> None:
    manifest = make_manifest()
    _publish(tmp_path, manifest)
    wider = TINY.model_copy(update={"hidden": 16, "graph": TINY.graph.model_copy(update={"top_k": 3})})
    start = champion_start(tmp_path / "registry", manifest, wider, HORIZONS)
    assert start.version is None
    assert "model.hidden 8 -> 16" in start.reason and "model.graph.top_k" in start.reason
    start = champion_start(tmp_path / "registry", manifest, TINY, [1, 5, 10])
    assert start.version is None and "horizons [1, 5] -> [1, 5, 10]" in start.reason


def test_a_tampered_champion_is_not_the_start(tmp_path: Path) -> None:
    manifest = make_manifest()
    version, _ = _publish(tmp_path, manifest)
    weights = next((tmp_path / "registry").glob(f"{version}/weights.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    start = champion_start(tmp_path / "registry", manifest, TINY, HORIZONS)
    assert start.version is None and f"champion {version} cannot be loaded" in start.reason


def test_a_warm_retrain_starts_from_the_weights_and_fine_tunes_with_its_own_epochs_and_rate() -> None:
    arrays = planted()
    train, valid = loaders(arrays)
    data = TrainingData(arrays, train.dataset, valid.dataset, list(train.dataset.days))
    champion = small_model()
    config = PipelineConfig.model_validate(
        {
            "name": "warm",
            "source": {"kind": "synthetic"},
            "model": champion.config.model_dump(),
            "features": {"horizons": PLANTED_HORIZONS},
            # A learning rate too small to move any weight: what comes out is what went in.
            "train": {"epochs": 5, "warm_start_epochs": 1, "warm_start_learning_rate": 1e-30, "device": "cpu"},
        }
    )
    start = WarmStart("v-champion", "fine-tuning champion v-champion", champion.state_dict())
    manifest = arrays.manifest
    model, result = train_model(config, manifest, data, start=start)
    assert len(result.history) == 1 and result.warm_start == start.describe()
    for name, value in champion.state_dict().items():
        if not name.startswith("input_"):  # the scaling is refitted on the new training days
            torch.testing.assert_close(model.state_dict()[name], value, msg=name)


def test_a_field_added_since_the_champion_was_published_counts_at_its_default() -> None:
    stored = TINY.model_dump(mode="json")
    del stored["neutral_to"]  # a champion published before the field existed was built without it
    current = TINY.model_dump(mode="json")
    assert _config_differences(stored_model_config(stored), current) == []
    newer = TINY.model_copy(update={"neutral_to": ["f000"]}).model_dump(mode="json")
    assert _config_differences(stored_model_config(stored), newer) == ["model.neutral_to [] -> ['f000']"]
    assert stored_model_config({"hidden": "wide"}) == {"hidden": "wide"}
