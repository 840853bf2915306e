"""Per-day ranking losses on dense ``[days, stocks, horizons]`` tensors (see ``DayBatch.dense``).

Every loss is computed per trading day over that day's valid stocks (``mask`` True), then averaged over the
days with at least 2 valid stocks; each function returns one value per horizon, shape ``[H]``. Inputs are cast
to float32 first (bf16 under autocast loses too much in the per-day sums). Masked entries may hold anything,
NaN and inf included: they are replaced by safe values with ``torch.where`` before any arithmetic, so they
reach neither the loss nor the gradient.

On low-signal returns an MSE-type loss is minimised by predicting the day's mean, so predictions collapse;
``RankingLoss`` therefore keeps the Huber weight small, leans on ListNet and IC, and penalises a per-day
prediction std below a floor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from atft.config import LossConfig

EPS = 1e-8
# sqrt is clamped at this from below: the gradient of sqrt at 0 is inf, and 0 * inf is NaN.
_TINY = 1e-20
# Logit for masked stocks: exp underflows to exactly 0 in float32, while staying finite (no inf - inf).
_MASKED_LOGIT = -1e9
MIN_STOCKS = 2


def _prepare(mask: Tensor, *values: Tensor) -> tuple[tuple[Tensor, ...], Tensor, Tensor]:
    """float32 values with 0 at masked entries, the valid-stock count per day [D, 1, H], and the valid days [D, H]."""
    if any(v.dim() != 3 or v.shape != mask.shape for v in values):
        shapes = [tuple(v.shape) for v in (*values, mask)]
        raise ValueError(f"pred, y and mask must all be [days, stocks, horizons] of one shape; got {shapes}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool, got {mask.dtype}")
    count = mask.sum(dim=1, keepdim=True)
    return tuple(torch.where(mask, v.float(), 0.0) for v in values), count, count.squeeze(1) >= MIN_STOCKS


def _centre(x: Tensor, mask: Tensor, count: Tensor) -> Tensor:
    """x minus its mean over the day's valid stocks; 0 at masked entries. x must already be 0 there."""
    mean = x.sum(dim=1, keepdim=True) / count.clamp_min(1)
    return torch.where(mask, x - mean, 0.0)


def _std(centred: Tensor, count: Tensor) -> Tensor:
    """Population std (ddof=0) per day over the valid stocks, [D, 1, H]."""
    return (centred.square().sum(dim=1, keepdim=True) / count.clamp_min(1)).clamp_min(_TINY).sqrt()


def _zscore(y: Tensor, mask: Tensor, count: Tensor) -> Tensor:
    """Per-day z-score over the valid stocks, ddof=0; a (near-)constant day has std floored at EPS."""
    centred = _centre(y, mask, count)
    return centred / _std(centred, count).clamp_min(EPS)


def _day_mean(per_day: Tensor, valid_day: Tensor) -> Tensor:
    """[D, H] per-day values -> [H] mean over the valid days; 0 for a horizon without any."""
    total = torch.where(valid_day, per_day, 0.0).sum(dim=0)
    return total / valid_day.sum(dim=0).clamp_min(1)


def rank_gauss(y: Tensor, mask: Tensor) -> Tensor:
    """Per day and horizon, the valid stocks' labels mapped to normal scores ``Φ⁻¹((rank + 0.5) / count)``; 0 where
    masked. ``[D, S, H]`` in and out, float32, no gradient (labels only).

    The order of a day is all a ranking model can learn; the size of a 5-sigma news move is not. After this transform
    every day's labels have the same spread and no tail, so a handful of extreme returns no longer dominates the
    per-day ListNet target or the Pearson IC. Ties keep their order of appearance (a stable sort).
    """
    with torch.no_grad():
        (values,), count, _ = _prepare(mask, y)
        keyed = torch.where(mask, values, torch.inf)
        order = torch.argsort(keyed, dim=1, stable=True)
        ranks = torch.empty_like(order).scatter_(1, order, torch.arange(y.shape[1], device=y.device)
                                                 .view(1, -1, 1).expand_as(order))  # fmt: skip
        quantile = (ranks.float() + 0.5) / count.clamp_min(1)
        return torch.where(mask, torch.special.ndtri(quantile.clamp(EPS, 1 - EPS)), 0.0)


def huber_loss(pred: Tensor, y: Tensor, mask: Tensor, delta: float) -> Tensor:
    """Huber between pred and the per-day z-scored target (ddof=0), mean over valid stocks, then over days: [H]."""
    (pred, y), count, valid_day = _prepare(mask, pred, y)
    per_stock = F.huber_loss(pred, _zscore(y, mask, count), reduction="none", delta=delta)
    per_day = torch.where(mask, per_stock, 0.0).sum(dim=1) / count.squeeze(1).clamp_min(1)
    return _day_mean(per_day, valid_day)


def listnet_loss(pred: Tensor, y: Tensor, mask: Tensor, tau: float, sides: Literal["top", "both"] = "top") -> Tensor:
    """ListNet top-one cross-entropy per day, ``-(softmax(z(y)/tau) * log_softmax(pred/tau)).sum()``: [H].

    ``sides="both"`` averages it with the same loss of the bottom one, ``listnet(-pred, -y)``. The top side alone is
    minimised by scores that rank each stock's chance of being the day's best, and for stocks whose returns average
    zero that chance grows with their volatility: it teaches a long-volatility tilt no label asked for. The bottom
    side rewards the opposite by the same amount, so together they leave a stock's volatility unrewarded and keep
    only what separates its chance of topping the day from its chance of bottoming it."""
    if sides == "both":
        return 0.5 * (listnet_loss(pred, y, mask, tau) + listnet_loss(-pred, -y, mask, tau))
    (pred, y), count, valid_day = _prepare(mask, pred, y)
    # z-score first: raw returns are ~1e-2, which would make softmax(y) almost uniform and the target uninformative.
    target = torch.softmax(torch.where(mask, _zscore(y, mask, count) / tau, _MASKED_LOGIT), dim=1)
    log_p = torch.log_softmax(torch.where(mask, pred / tau, _MASKED_LOGIT), dim=1)
    # Masked stocks have target exactly 0 and a finite log_p, so they add exactly 0.
    return _day_mean(-(target * log_p).sum(dim=1), valid_day)


def ic_loss(pred: Tensor, y: Tensor, mask: Tensor) -> Tensor:
    """``1 - Pearson(pred, y)`` per day over the valid stocks, ``(p·y) / (‖p‖‖y‖ + EPS)`` after centring: [H]."""
    (pred, y), count, valid_day = _prepare(mask, pred, y)
    p, t = _centre(pred, mask, count), _centre(y, mask, count)
    norm_p = p.square().sum(dim=1).clamp_min(_TINY).sqrt()
    norm_t = t.square().sum(dim=1).clamp_min(_TINY).sqrt()
    corr = (p * t).sum(dim=1) / (norm_p * norm_t + EPS)
    return _day_mean(1.0 - corr, valid_day)


def sharpe_loss(pred: Tensor, y: Tensor, mask: Tensor) -> Tensor:
    """Negative Sharpe, across the batch's days, of a daily long-short book with weights pred demeaned over the
    valid stocks and scaled to unit gross exposure; daily return ``Σ w·y``, std with ddof=1: [H].

    A day needs at least 2 valid stocks to hold a book; a day with constant predictions holds a flat book (r = 0).
    """
    (pred, y), count, valid_day = _prepare(mask, pred, y)
    centred = _centre(pred, mask, count)
    weights = centred / centred.abs().sum(dim=1, keepdim=True).clamp_min(EPS)
    returns = (weights * y).sum(dim=1)  # [D, H]
    n_days = valid_day.sum(dim=0)
    mean = _day_mean(returns, valid_day)
    sq_dev = torch.where(valid_day, returns - mean, 0.0).square().sum(dim=0)
    std = (sq_dev / (n_days - 1).clamp_min(1)).clamp_min(_TINY).sqrt()
    # The std across days is undefined with a single day: such a horizon contributes 0, not a spurious value.
    return torch.where(n_days >= 2, -mean / (std + EPS), 0.0)


def variance_floor_penalty(pred: Tensor, mask: Tensor, floor: float) -> Tensor:
    """``relu(floor - std)^2`` per day, std of pred over the valid stocks (ddof=0), averaged over days: [H]."""
    (pred,), count, valid_day = _prepare(mask, pred)
    std = _std(_centre(pred, mask, count), count).squeeze(1)
    return _day_mean(F.relu(floor - std).square(), valid_day)


class RankingLoss(torch.nn.Module):
    """The training objective: per horizon a weighted sum of the per-day losses, then a horizon-weighted sum.

    ``forward`` returns the scalar total and, for logging, each component averaged over horizons with the
    (normalised) horizon weights, plus the total, as plain floats.
    """

    horizon_weights: Tensor

    def __init__(self, config: LossConfig, horizons: Sequence[int]) -> None:
        super().__init__()
        raw = [config.horizon_weights.get(h, 0.0) for h in horizons]
        if sum(raw) <= 0:
            raise ValueError(
                f"every horizon weight is 0 for horizons {list(horizons)} (configured: {config.horizon_weights})"
            )
        self.config = config
        self.horizons = list(horizons)
        self.register_buffer("horizon_weights", torch.tensor(raw, dtype=torch.float32) / sum(raw), persistent=False)

    def forward(self, pred: Tensor, y: Tensor, mask: Tensor) -> tuple[Tensor, dict[str, float]]:
        if pred.shape[-1] != len(self.horizons):
            raise ValueError(f"pred has {pred.shape[-1]} horizons, the loss was built for {self.horizons}")
        c = self.config
        if c.label == "rank_gauss":
            y = rank_gauss(y, mask)
        weighted = {
            "huber": (c.huber_weight, huber_loss(pred, y, mask, c.huber_delta)),
            "listnet": (c.listnet_weight, listnet_loss(pred, y, mask, c.listnet_tau, c.listnet_sides)),
            "ic": (c.ic_weight, ic_loss(pred, y, mask)),
            "sharpe": (c.sharpe_weight, sharpe_loss(pred, y, mask)),
            "variance": (c.variance_weight, variance_floor_penalty(pred, mask, c.variance_floor)),
        }
        per_horizon = sum(w * loss for w, loss in weighted.values())
        total = (self.horizon_weights * per_horizon).sum()
        # One stacked transfer instead of one device sync per component.
        logged = torch.stack([(self.horizon_weights * loss).sum() for _, loss in weighted.values()] + [total])
        values = logged.detach().cpu().tolist()
        return total, dict(zip([*weighted, "total"], values, strict=True))
