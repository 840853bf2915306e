"""An exponential moving average of a model's weights: the model that is validated, kept and published.

On targets as noisy as daily returns, the weights after the last step of an epoch are one draw from the noise of
its last few batches. Their moving average over the steps before is a smoother estimate of the same model, and
costs one in-place interpolation per step. Training continues from the raw weights; the average is only swapped
in to validate, to snapshot the best state, and then restored.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class WeightAverage:
    """``shadow = decay * shadow + (1 - decay) * weights`` after every step, from the weights it starts with."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"a weight average needs a decay in (0, 1), got {decay}")
        self.decay = decay
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.shadow = [p.detach().clone() for p in self.parameters]

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.parameters], 1 - self.decay)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the model for the duration, the raw ones back afterwards (in place: a compiled
        block keeps seeing the same tensors)."""
        with torch.no_grad():
            raw = [p.detach().clone() for p in self.parameters]
            torch._foreach_copy_(self.parameters, self.shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.parameters, raw)
