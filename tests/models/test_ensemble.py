"""Seed ensembles: per-day ranks as pandas computes them, the members' mean, export and the one-file checkpoint."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save

from atft.config import ModelConfig
from atft.models import SeedEnsemble, build_model
from atft.models.ensemble import day_ranks
from atft.registry.integrity import MODEL, WEIGHTS
from atft.registry.loading import build_checkpoint
from tests.models.test_models import HORIZONS, SHA, TINY, WIDTH, make_batch
from tests.registry.conftest import make_manifest


def pandas_ranks(scores: np.ndarray, day: np.ndarray, present: np.ndarray) -> np.ndarray:
    """The reference: average ranks within each (day, present) group, as percentiles centred on 0, times √12."""
    frame = pd.DataFrame({"score": scores, "group": day * 2 + ~present})
    ranks = frame.groupby("group")["score"].rank(method="average")
    size = frame.groupby("group")["score"].transform("size")
    return (((ranks - 0.5) / size - 0.5) * math.sqrt(12)).to_numpy()


def ensemble(members: int = 3, name: str = "atft_gat_fan", seed: int = 0) -> SeedEnsemble:
    torch.manual_seed(seed)
    return build_model(ModelConfig(**TINY, name=name, ensemble=members), WIDTH, HORIZONS, SHA).eval()


def test_day_ranks_are_pandas_average_ranks_within_each_day_over_its_present_stocks() -> None:
    rng = np.random.default_rng(0)
    day = np.repeat([0, 1, 2], [7, 1, 12])
    scores = rng.normal(size=day.size).round(1)  # rounding makes ties
    present = rng.random(day.size) > 0.2
    got = day_ranks(torch.tensor(scores, dtype=torch.float64), torch.tensor(day), torch.tensor(present))
    np.testing.assert_allclose(got.numpy(), pandas_ranks(scores, day, present), atol=1e-12)
    assert len(set(scores[(day == 2) & present])) < ((day == 2) & present).sum()  # ties were tested


def test_a_constant_member_ranks_every_stock_the_same_so_a_collapse_stays_visible() -> None:
    day = torch.tensor([0, 0, 0, 1, 1])
    ranks = day_ranks(torch.full((5,), 0.3), day, torch.ones(5, dtype=torch.bool))
    assert torch.equal(ranks, torch.zeros(5))


def test_the_ensemble_scores_the_mean_of_its_members_day_ranks() -> None:
    model, batch = ensemble(), make_batch((5, 7, 4))
    present = batch.x_mask[:, -1].numpy()
    expected = np.mean([
        np.stack([pandas_ranks(s[:, k], batch.day.numpy(), present) for k in range(len(HORIZONS))], axis=1)
        for s in (member(*batch.inputs()).detach().numpy() for member in model.members)
    ], axis=0)  # fmt: skip
    np.testing.assert_allclose(model(*batch.inputs()).detach().numpy(), expected, atol=1e-6)


def test_members_are_different_models_sharing_the_input_scaling() -> None:
    model, batch = ensemble(), make_batch()
    first, second = (m(*batch.inputs()) for m in model.members[:2])
    assert not torch.allclose(first, second)
    mean, std = torch.linspace(-1, 1, WIDTH), torch.linspace(0.5, 2, WIDTH)
    model.set_input_scaling(mean, std)
    for member in model.members:
        assert torch.equal(member.input_mean, mean) and torch.equal(member.input_std, std)


@pytest.mark.filterwarnings("ignore:The tensor attributes")  # nn.GRU re-assigns its flat weights while traced
def test_the_exported_ensemble_takes_the_same_inputs_and_matches_eager_on_any_day_size() -> None:
    model, batch = ensemble(members=2), make_batch()
    rows, edges = torch.export.Dim("rows", min=1), torch.export.Dim("edges", min=0)
    program = torch.export.export(
        model, args=batch.inputs(), dynamic_shapes=({0: rows}, {0: rows}, {1: edges}, {0: edges}, {0: rows})
    )
    for other in (batch, make_batch((9, 4, 11), seed=1), make_batch((1,), seed=2)):
        torch.testing.assert_close(program.module()(*other.inputs()), model(*other.inputs()))


def test_a_checkpoint_is_one_file_of_every_member_and_refuses_a_member_count_it_does_not_hold() -> None:
    manifest = make_manifest(width=WIDTH)
    model = build_model(ModelConfig(**TINY, ensemble=3), WIDTH, HORIZONS, manifest.sha256).eval()
    model.set_input_scaling(torch.randn(WIDTH), torch.rand(WIDTH) + 0.5)
    assert {key.split(".")[1] for key in model.state_dict() if key.startswith("members.")} == {"0", "1", "2"}
    weights = save({k: v.contiguous() for k, v in model.state_dict().items()})
    description = {**model.describe(), "manifest_sha256": manifest.sha256}
    assert description["model"] == "atft_gat_fan" and description["config"]["ensemble"] == 3
    loaded = build_checkpoint({MODEL: json.dumps(description).encode(), WEIGHTS: weights}, manifest)
    batch = make_batch()
    torch.testing.assert_close(loaded(*batch.inputs()), model(*batch.inputs()))
    description["config"]["ensemble"] = 4
    with pytest.raises(ValueError, match=r"members\.3\."):
        build_checkpoint({MODEL: json.dumps(description).encode(), WEIGHTS: weights}, manifest)
