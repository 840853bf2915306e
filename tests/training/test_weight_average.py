"""The weight average: the exponential moving average it claims, swapped in and out without touching training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from atft.training.weight_average import WeightAverage


def test_the_average_follows_its_formula_and_is_swapped_in_only_inside_applied():
    model = nn.Linear(3, 2)
    start = [p.detach().clone() for p in model.parameters()]
    average = WeightAverage(model, decay=0.9)
    expected = [s.clone() for s in start]
    for step in range(1, 4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(float(step))
        average.update()
        expected = [0.9 * e + 0.1 * p.detach() for e, p in zip(expected, model.parameters(), strict=True)]
    raw = [p.detach().clone() for p in model.parameters()]
    with average.applied():
        for p, e in zip(model.parameters(), expected, strict=True):
            torch.testing.assert_close(p.detach(), e)
    for p, r in zip(model.parameters(), raw, strict=True):  # training goes on from the raw weights
        assert torch.equal(p.detach(), r)
    assert not torch.allclose(raw[0], expected[0])


def test_a_decay_outside_zero_and_one_is_refused():
    for decay in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="decay in \\(0, 1\\)"):
            WeightAverage(nn.Linear(2, 1), decay)
