"""Training a seed ensemble: each member from its own seed, member 0 the single model, one result for the whole."""

from __future__ import annotations

import numpy as np
import torch

from atft.config import PipelineConfig
from atft.metrics import daily_rank_ic, summarise
from atft.models import SeedEnsemble
from atft.prediction import predict
from atft.training.session import TrainingData, train_model
from atft.training.trainer import EpochRecord
from atft.training.warm_start import WarmStart
from tests.training.test_trainer import HORIZONS, loaders, planted, small_model


def _config(ensemble: int, epochs: int = 2) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "name": "ensemble",
            "source": {"kind": "synthetic"},
            "model": small_model().config.model_dump() | {"ensemble": ensemble},
            "features": {"horizons": HORIZONS},
            # One pinned thread and eager mode: the same seed gives the same weights bit for bit.
            "train": {"epochs": epochs, "patience": 5, "learning_rate": 3e-3, "device": "cpu", "threads": 1,
                      "compile": False, "primary_horizon": 5},
        }
    )  # fmt: skip


def _data() -> TrainingData:
    arrays = planted()
    train, valid = loaders(arrays)
    return TrainingData(arrays, train.dataset, valid.dataset, list(train.dataset.days))


def test_member_i_is_the_single_model_of_seed_plus_i_and_the_result_scores_the_ensemble() -> None:
    data = _data()
    records: list[EpochRecord] = []
    ensemble, result = train_model(_config(3), data.arrays.manifest, data, records.append)
    assert isinstance(ensemble, SeedEnsemble) and len(ensemble.members) == 3
    single, _ = train_model(_config(1), data.arrays.manifest, data)
    for name, value in single.state_dict().items():
        assert torch.equal(ensemble.members[0].state_dict()[name], value), name
    second = _config(1).model_copy(update={"train": _config(1).train.model_copy(update={"seed": 8})})
    member_1, _ = train_model(second, data.arrays.manifest, data)
    assert all(torch.equal(ensemble.members[1].state_dict()[k], v) for k, v in member_1.state_dict().items())

    assert [(r.member, r.epoch) for r in records] == [(m, e) for m in range(3) for e in (1, 2)]
    assert all(r.members == 3 for r in records) and "member 2 of 3, epoch 1" in records[2].line()
    assert records[0].eta_s > records[1].eta_s > records[3].eta_s > records[5].eta_s == 0  # later members counted
    assert result.history == records and len(result.member_best_epochs) == 3
    assert result.best_epoch == max(result.member_best_epochs)

    pred, label, mask = predict(ensemble, loaders(data.arrays)[1], torch.device("cpu"))
    rank_ic = summarise(daily_rank_ic(pred[..., 1], label[..., 1], mask[..., 1]))[0]
    assert result.best_valid_rank_ic == rank_ic and rank_ic > 0.3  # the planted signal, found by the whole
    assert set(result.state_dict) == set(ensemble.state_dict())
    assert np.isfinite(pred[mask]).all()


def test_a_warm_ensemble_fine_tunes_every_member_from_the_champions_own_member() -> None:
    data = _data()
    champion, _ = train_model(_config(2, epochs=1), data.arrays.manifest, data)
    config = _config(2)
    config = config.model_copy(
        update={"train": config.train.model_copy(update={"warm_start_epochs": 1, "warm_start_learning_rate": 1e-30})}
    )
    start = WarmStart("v1", "fine-tuning champion v1", champion.state_dict())
    model, result = train_model(config, data.arrays.manifest, data, start=start)
    assert [r.member for r in result.history] == [0, 1]
    for name, value in champion.state_dict().items():
        if "input_" not in name:  # the scaling is refitted on the new training days
            torch.testing.assert_close(model.state_dict()[name], value, msg=name)
