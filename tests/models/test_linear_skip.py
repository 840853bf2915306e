"""model.linear_skip: a linear map of named groups' inputs on the day itself, added to ATFT-GAT-FAN's scores."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import save

from atft.config import ModelConfig
from atft.data.arrays import FeatureArrays
from atft.models import build_model
from atft.registry.integrity import MODEL, WEIGHTS
from atft.registry.loading import build_checkpoint
from atft.training.session import TrainingData, train_model
from tests.data.test_risk_labels import _config
from tests.models.test_input_groups import GROUPS, READ, regrouped
from tests.models.test_models import HORIZONS, SHA, TINY, WIDTH, assert_exports_as_eager, make_batch
from tests.registry.conftest import make_manifest
from tests.training.test_trainer import loaders, planted


def build(skip: list[str], groups: tuple[str, ...] | None = GROUPS, **overrides):
    torch.manual_seed(0)
    return build_model(ModelConfig(**TINY, linear_skip=skip, **overrides), WIDTH, HORIZONS, SHA, groups)


def test_an_untrained_skip_changes_nothing_and_a_fitted_one_adds_a_linear_map_of_the_day_itself_and_exports() -> None:
    plain, skipped = build([]).eval(), build(["cs_z"]).eval()
    assert skipped.skip_columns.tolist() == READ
    for batch in (make_batch(), make_batch((4, 9), seed=1)):
        torch.testing.assert_close(skipped(*batch.inputs()), plain(*batch.inputs()))
    weight, bias = torch.randn(len(HORIZONS), len(READ)), torch.randn(len(HORIZONS))
    with torch.no_grad():
        skipped.linear_skip.weight.copy_(weight)
        skipped.linear_skip.bias.copy_(bias)
    for batch in (make_batch(), make_batch((4, 9), seed=1)):
        added = skipped(*batch.inputs()) - plain(*batch.inputs())
        torch.testing.assert_close(added, batch.x[:, -1, READ] @ weight.T + bias)
    assert_exports_as_eager(skipped)


def test_bad_skips_are_refused_naming_the_option_and_a_model_without_it_keeps_its_state_dict() -> None:
    with pytest.raises(ValidationError, match=r"unknown feature group\(s\) \['csz'\]"):
        ModelConfig(linear_skip=["csz"])
    with pytest.raises(ValidationError, match="linear_skip is an option of atft_gat_fan only"):
        ModelConfig(name="apex", linear_skip=["cs_z"])
    with pytest.raises(ValueError, match=r"linear_skip names \['volume'\].*its groups are: cs_z, price"):
        build(["volume"])
    with pytest.raises(ValueError, match="linear_skip is set: building the model needs the manifest's feature groups"):
        build(["cs_z"], groups=None)
    assert not {"skip_columns", "linear_skip.weight", "linear_skip.bias"} & set(build([]).state_dict())


def test_the_skip_travels_with_an_ensembles_checkpoint() -> None:
    manifest = regrouped(make_manifest(width=WIDTH), GROUPS)
    config = ModelConfig(**TINY, linear_skip=["cs_z"], ensemble=2)
    model = build_model(config, WIDTH, HORIZONS, manifest.sha256, manifest.feature_groups).eval()
    with torch.no_grad():
        for member in model.members:
            member.linear_skip.weight.normal_()
    weights = save({k: v.contiguous() for k, v in model.state_dict().items()})
    loaded = build_checkpoint({MODEL: json.dumps(model.describe()).encode(), WEIGHTS: weights}, manifest)
    batch = make_batch()
    torch.testing.assert_close(loaded(*batch.inputs()), model(*batch.inputs()))


def test_the_skip_learns_the_linear_part_of_a_planted_signal_that_the_layers_cannot_read() -> None:
    """Through the training session: the planted signal is f0 - 0.5 f1 + f2 f3. The layers read the cs_z group (f2,
    f3, f5) only and the skip the price group (f0, f1, f4), so f0 and f1 reach the scores through the skip alone: it
    must weigh them about 1 to -0.5, and f4, which carries nothing, near zero."""
    arrays = planted()
    arrays: FeatureArrays = dataclasses.replace(arrays, manifest=regrouped(arrays.manifest, GROUPS))
    train, valid = loaders(arrays)
    data = TrainingData(arrays, train.dataset, valid.dataset, list(train.dataset.days))
    config = _config([])
    model_config = config.model.model_copy(update={"input_groups": ["cs_z"], "linear_skip": ["price"]})
    config = config.model_copy(update={"model": model_config, "train": config.train.model_copy(update={"epochs": 10})})
    model, _ = train_model(config, arrays.manifest, data)
    assert model.skip_columns.tolist() == [0, 1, 4]
    f0, f1, f4 = model.linear_skip.weight.detach().mean(0).tolist()
    assert f0 > 0.05 and -0.8 < f1 / f0 < -0.25 and abs(f4) < f0 / 5
