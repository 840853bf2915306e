"""Exposure-neutral scores: per-day residuals of the scores on named inputs, inside the model, exportable."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save
from torch.export import Dim

from atft.config import ModelConfig
from atft.metrics import daily_rank_ic, summarise
from atft.models import build_model
from atft.models.neutral_scores import neutralise
from atft.prediction import predict
from atft.registry.integrity import MODEL, WEIGHTS
from atft.registry.loading import build_checkpoint
from atft.training.session import TrainingData, train_model
from tests.data.test_risk_labels import _config, risky
from tests.models.test_models import HORIZONS, MODELS, TINY, WIDTH, build, make_batch
from tests.registry.conftest import make_manifest
from tests.training.test_trainer import loaders

NAMES = [f"f{i}" for i in range(WIDTH)]


def test_each_days_residuals_match_a_least_squares_fit_of_its_present_rows() -> None:
    gen = torch.Generator().manual_seed(0)
    day = torch.tensor([0] * 9 + [1] * 12 + [2] * 6)
    scores = torch.randn(27, 2, generator=gen, dtype=torch.float64)
    exposures = torch.randn(27, 2, generator=gen, dtype=torch.float64)
    present = torch.ones(27, dtype=torch.bool)
    present[[2, 15]] = False
    out = neutralise(scores, exposures, day, present)
    for d in range(3):
        rows = ((day == d) & present).numpy()
        design = np.column_stack([np.ones(rows.sum()), exposures.numpy()[rows]])
        fitted = design @ np.linalg.lstsq(design, scores.numpy()[rows], rcond=None)[0]
        np.testing.assert_allclose(out.numpy()[rows], scores.numpy()[rows] - fitted, atol=1e-5)
        assert np.abs(design.T @ out.numpy()[rows]).max() < 1e-5  # orthogonal to the intercept and the exposures


def test_a_day_with_constant_exposures_keeps_its_centred_scores_and_gradients_flow() -> None:
    scores = torch.randn(6, 1, dtype=torch.float64, requires_grad=True)
    exposures = torch.ones(6, 1, dtype=torch.float64)
    out = neutralise(scores, exposures, torch.zeros(6, dtype=torch.long), torch.ones(6, dtype=torch.bool))
    torch.testing.assert_close(out, scores - scores.mean(), atol=1e-5, rtol=0)
    (out.square().sum()).backward()
    assert torch.isfinite(scores.grad).all()


@pytest.mark.parametrize("name", MODELS)
def test_a_models_scores_carry_no_exposure_to_the_named_inputs(name: str) -> None:
    model = build(name, neutral_to=["f1", "f4"]).eval()
    batch = make_batch((40, 35))
    with pytest.raises(RuntimeError, match="never located"):
        model(*batch.inputs())
    model.set_neutral_columns(NAMES)
    scores = model(*batch.inputs()).detach()
    for d in range(2):
        rows = (batch.day == d) & batch.x_mask[:, -1]
        for column in (1, 4):
            exposure = batch.x[rows, -1, column]
            for k in range(len(HORIZONS)):
                assert abs(torch.corrcoef(torch.stack([scores[rows, k], exposure]))[0, 1]) < 1e-4
    assert not torch.allclose(scores, build(name).eval()(*batch.inputs()))


def test_an_unknown_input_is_refused_and_models_without_the_option_keep_their_state_dict() -> None:
    with pytest.raises(ValueError, match=r"model.neutral_to names \['rv_60'\].*its inputs are: f0, f1"):
        build("atft_gat_fan", neutral_to=["rv_60"]).set_neutral_columns(NAMES)
    assert "neutral_columns" not in build("atft_gat_fan").state_dict()


@pytest.mark.filterwarnings("ignore:The tensor attributes")  # nn.GRU re-assigns its flat weights while traced
def test_the_located_inputs_travel_with_the_checkpoint_and_export() -> None:
    manifest = make_manifest(width=WIDTH)
    model = build_model(ModelConfig(**TINY, neutral_to=["f2"], ensemble=2), WIDTH, HORIZONS, manifest.sha256).eval()
    model.set_neutral_columns(NAMES)
    assert model.members[1].neutral_columns.tolist() == [2]
    weights = save({k: v.contiguous() for k, v in model.state_dict().items()})
    loaded = build_checkpoint({MODEL: json.dumps(model.describe()).encode(), WEIGHTS: weights}, manifest)
    batch = make_batch()
    torch.testing.assert_close(loaded(*batch.inputs()), model(*batch.inputs()))

    single = build("atft_gat_fan", neutral_to=["f2"]).eval()
    single.set_neutral_columns(NAMES)
    rows, edges = Dim("rows", min=1), Dim("edges", min=0)
    program = torch.export.export(
        single, args=batch.inputs(), dynamic_shapes=({0: rows}, {0: rows}, {1: edges}, {0: edges}, {0: rows})
    )
    for other in (batch, make_batch((9, 4, 11), seed=1)):
        torch.testing.assert_close(program.module()(*other.inputs()), single(*other.inputs()))


def test_a_model_trained_with_neutral_scores_ranks_by_the_reward_and_not_the_bet() -> None:
    """The bet on f0 that the raw labels pay (see tests/data/test_risk_labels.py) cannot enter the scores at all."""
    arrays = risky()
    train, valid = loaders(arrays)
    data = TrainingData(arrays, train.dataset, valid.dataset, list(train.dataset.days))
    config = _config([])
    config = config.model_copy(update={"model": config.model.model_copy(update={"neutral_to": ["f0"]})})
    model, _ = train_model(config, arrays.manifest, data)
    pred, _, mask = predict(model, valid, torch.device("cpu"))
    x = arrays.x[valid.dataset.days]
    assert abs(summarise(daily_rank_ic(pred[..., 1], x[..., 0], mask[..., 1]))[0]) < 0.05
    assert summarise(daily_rank_ic(pred[..., 1], x[..., 1], mask[..., 1]))[0] > 0.3
