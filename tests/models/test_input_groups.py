"""model.input_groups: the layers read the named feature groups only, while the model keeps the manifest's contract."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import save

from atft.config import ModelConfig
from atft.data.arrays import FeatureArrays
from atft.models import InputWidthError, build_model
from atft.prediction import mean_input_weights, predict
from atft.registry.integrity import MODEL, WEIGHTS
from atft.registry.loading import build_checkpoint
from atft.training.session import TrainingData, train_model
from schemas.manifest import FeatureManifest
from tests.data.test_risk_labels import _config
from tests.models.test_models import HORIZONS, MODELS, SHA, TINY, WIDTH, make_batch
from tests.registry.conftest import make_manifest
from tests.training.test_trainer import loaders, planted

# Inputs 0, 1 and 4 are raw prices; 2, 3 and 5 their cross-sectional z-scores.
GROUPS = ("price", "price", "cs_z", "cs_z", "price", "cs_z")
READ = [2, 3, 5]


def build(name: str, groups: tuple[str, ...] = GROUPS, **overrides):
    torch.manual_seed(0)
    config = ModelConfig(**{**TINY, "input_groups": ["cs_z"], **overrides}, name=name)
    return build_model(config, WIDTH, HORIZONS, SHA, groups)


def regrouped(manifest: FeatureManifest, groups: tuple[str, ...]) -> FeatureManifest:
    """The manifest with each input's group replaced by ``groups``'."""
    features = tuple(dataclasses.replace(c, group=g) for c, g in zip(manifest.features, groups, strict=True))
    return dataclasses.replace(manifest, features=features)


def perturbed_outside(batch, columns: list[int]):
    """The batch with every input but ``columns`` replaced by other values."""
    x = torch.randn_like(batch.x)
    x[..., columns] = batch.x[..., columns]
    return dataclasses.replace(batch, x=x)


@pytest.mark.parametrize("name", MODELS)
def test_scores_depend_on_the_named_groups_only_and_the_contract_stays_the_manifests(name: str) -> None:
    model = build(name).eval()
    assert model.width == WIDTH and model.layer_width == len(READ)
    batch = make_batch((6, 9))
    scores = model(*batch.inputs())
    torch.testing.assert_close(model(*perturbed_outside(batch, READ).inputs()), scores)
    assert not torch.allclose(model(*perturbed_outside(batch, [0, 1, 4]).inputs()), scores)
    with pytest.raises(InputWidthError, match="does not match the manifest's 6"):
        model(*dataclasses.replace(batch, x=batch.x[..., READ]).inputs())


def test_bad_groups_are_refused_with_what_there_is() -> None:
    with pytest.raises(ValidationError, match=r"unknown feature group\(s\) \['csz'\]"):
        ModelConfig(input_groups=["csz"])
    with pytest.raises(ValueError, match=r"input_groups names \['volume'\].*its groups are: cs_z, price"):
        build("atft_gat_fan", input_groups=["volume", "cs_z"])
    with pytest.raises(ValueError, match="needs the manifest's feature groups"):
        build("apex", groups=None)
    with pytest.raises(InputWidthError, match="5 feature groups for 6 inputs"):
        build("apex", groups=GROUPS[:5])
    assert "input_columns" not in build_model(ModelConfig(**TINY), WIDTH, HORIZONS, SHA).state_dict()


def test_the_read_inputs_travel_with_an_ensembles_checkpoint() -> None:
    manifest = regrouped(make_manifest(width=WIDTH), GROUPS)
    config = ModelConfig(**TINY, input_groups=["cs_z"], ensemble=2)
    model = build_model(config, WIDTH, HORIZONS, manifest.sha256, manifest.feature_groups).eval()
    assert model.members[1].input_columns.tolist() == READ
    weights = save({k: v.contiguous() for k, v in model.state_dict().items()})
    loaded = build_checkpoint({MODEL: json.dumps(model.describe()).encode(), WEIGHTS: weights}, manifest)
    batch = make_batch()
    torch.testing.assert_close(loaded(*batch.inputs()), model(*batch.inputs()))


def test_a_trained_model_ignores_the_groups_it_does_not_read() -> None:
    """Through the training session, which builds the model from the manifest: the planted signal's raw part
    (inputs 0 and 1, group price) is out of reach, and the variable selection puts no weight on it."""
    arrays = planted()
    arrays: FeatureArrays = dataclasses.replace(arrays, manifest=regrouped(arrays.manifest, GROUPS))
    train, valid = loaders(arrays)
    data = TrainingData(arrays, train.dataset, valid.dataset, list(train.dataset.days))
    config = _config([])
    model_config = config.model.model_copy(update={"input_groups": ["cs_z"]})
    config = config.model_copy(update={"model": model_config, "train": config.train.model_copy(update={"epochs": 1})})
    model, _ = train_model(config, arrays.manifest, data)
    assert model.layer_width == len(READ)

    scores, _, _ = predict(model, valid, torch.device("cpu"))
    x = arrays.x.copy()
    x[..., [0, 1, 4]] = 0.0
    blind = dataclasses.replace(arrays, cube=dataclasses.replace(arrays.cube, _array=x))
    _, blind_valid = loaders(blind)
    torch.testing.assert_close(torch.as_tensor(predict(model, blind_valid, torch.device("cpu"))[0]),
                               torch.as_tensor(scores))  # fmt: skip
    weights = mean_input_weights(model, arrays, list(valid.dataset.days), config)
    assert weights[[0, 1, 4]].tolist() == [0.0, 0.0, 0.0] and weights[READ].sum() == pytest.approx(1.0, abs=1e-5)
