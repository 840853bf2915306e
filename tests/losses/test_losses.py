"""Per-day ranking losses: NumPy references with explicit loops over days, masking, invariances, the combined
RankingLoss, and the collapse contrast between the default loss and an MSE-dominated one."""

from __future__ import annotations

from collections.abc import Callable
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
import torch

from atft.config import LossConfig
from atft.losses import (
    RankingLoss,
    huber_loss,
    ic_loss,
    listnet_loss,
    rank_gauss,
    sharpe_loss,
    variance_floor_penalty,
)

EPS = 1e-8
SHAPES = [(1, 1, 1), (2, 3, 1), (5, 7, 3), (6, 40, 4), (9, 2, 2)]


def _inputs(
    shape: tuple[int, int, int], seed: int, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random pred, y (return-sized, with a day offset) and mask. With 3+ days, day 0 has 1 valid stock and day 1
    none: days that must contribute nothing."""
    g = torch.Generator().manual_seed(seed)
    d, _, h = shape
    pred = torch.randn(shape, generator=g).to(dtype)
    y = (0.02 * torch.randn(shape, generator=g) + 0.01 * torch.randn(d, 1, h, generator=g)).to(dtype)
    mask = torch.rand(shape, generator=g) > 0.3
    if d > 2:
        mask[0] = False
        mask[0, 0] = True
        mask[1] = False
    return pred, y, mask


# --- NumPy references: explicit loops over horizons and days, float64 ---------------------------------------------


def _per_day(pred, y, mask, day_loss: Callable[[np.ndarray, np.ndarray], float]) -> np.ndarray:
    out = np.zeros(pred.shape[2])
    for h in range(pred.shape[2]):
        values = []
        for d in range(pred.shape[0]):
            valid = mask[d, :, h]
            if valid.sum() >= 2:
                values.append(day_loss(pred[d, valid, h], y[d, valid, h]))
        out[h] = np.mean(values) if values else 0.0
    return out


def _z(v: np.ndarray) -> np.ndarray:
    return (v - v.mean()) / max(v.std(), EPS)


def _np_huber(pred, y, mask, delta):
    def day(p, t):
        r = np.abs(p - _z(t))
        return np.where(r < delta, 0.5 * r**2, delta * (r - 0.5 * delta)).mean()

    return _per_day(pred, y, mask, day)


def _np_listnet(pred, y, mask, tau):
    def day(p, t):
        target = np.exp(_z(t) / tau)
        target /= target.sum()
        logits = p / tau
        log_p = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
        return -(target * log_p).sum()

    return _per_day(pred, y, mask, day)


def _np_ic(pred, y, mask):
    def day(p, t):
        p, t = p - p.mean(), t - t.mean()
        return 1.0 - p @ t / (np.linalg.norm(p) * np.linalg.norm(t) + EPS)

    return _per_day(pred, y, mask, day)


def _np_variance_floor(pred, mask, floor):
    return _per_day(pred, pred, mask, lambda p, _: max(floor - p.std(), 0.0) ** 2)


def _np_sharpe(pred, y, mask):
    out = np.zeros(pred.shape[2])
    for h in range(pred.shape[2]):
        returns = []
        for d in range(pred.shape[0]):
            valid = mask[d, :, h]
            if valid.sum() >= 2:
                w = pred[d, valid, h] - pred[d, valid, h].mean()
                returns.append(w @ y[d, valid, h] / max(np.abs(w).sum(), EPS))
        if len(returns) >= 2:
            out[h] = -np.mean(returns) / (np.std(returns, ddof=1) + EPS)
    return out


CASES = {
    "huber": (lambda p, y, m: huber_loss(p, y, m, delta=0.7), lambda p, y, m: _np_huber(p, y, m, 0.7)),
    "listnet": (lambda p, y, m: listnet_loss(p, y, m, tau=0.5), lambda p, y, m: _np_listnet(p, y, m, 0.5)),
    "listnet_both": (
        lambda p, y, m: listnet_loss(p, y, m, tau=0.5, sides="both"),
        lambda p, y, m: 0.5 * (_np_listnet(p, y, m, 0.5) + _np_listnet(-p, -y, m, 0.5)),
    ),
    "ic": (ic_loss, _np_ic),
    "sharpe": (sharpe_loss, _np_sharpe),
    "variance": (
        lambda p, y, m: variance_floor_penalty(p, m, floor=1.2),
        lambda p, y, m: _np_variance_floor(p, m, 1.2),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matches_numpy_reference(name: str, shape: tuple[int, int, int], dtype: torch.dtype) -> None:
    loss_fn, reference = CASES[name]
    pred, y, mask = _inputs(shape, seed=len(name) + sum(shape), dtype=dtype)
    got = loss_fn(pred, y, mask)
    # bf16 inputs are computed in float32: the reference sees the same (rounded) values.
    expected = reference(pred.double().numpy(), y.double().numpy(), mask.numpy())
    assert got.dtype == torch.float32 and got.shape == (shape[2],)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(CASES))
def test_masked_entries_change_neither_loss_nor_gradient(name: str) -> None:
    loss_fn, _ = CASES[name]
    pred, y, mask = _inputs((6, 30, 3), seed=1)

    def loss_and_grad(p: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = p.clone().requires_grad_(True)
        loss = loss_fn(p, t, mask)
        (grad,) = torch.autograd.grad(loss.sum(), p)
        return loss.detach(), grad

    loss, grad = loss_and_grad(pred, y)
    garbage = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e30]).repeat(pred.numel() // 4 + 1)
    garbage = garbage[: pred.numel()].view(pred.shape)
    loss2, grad2 = loss_and_grad(torch.where(mask, pred, garbage), torch.where(mask, y, garbage.flip(0)))
    assert torch.isfinite(grad).all() and torch.isfinite(grad2).all() and torch.isfinite(loss2).all()
    assert torch.equal(loss, loss2)
    assert torch.equal(grad[mask], grad2[mask])
    assert (grad2[~mask] == 0).all()
    assert grad[mask].abs().sum() > 0  # the loss does depend on the valid entries


@pytest.mark.parametrize("name", ["huber", "listnet", "ic"])
def test_per_day_shift_and_positive_scale_of_y_do_not_matter(name: str) -> None:
    loss_fn, _ = CASES[name]
    pred, y, mask = _inputs((5, 25, 2), seed=2)
    g = torch.Generator().manual_seed(3)
    scale = torch.rand(5, 1, 2, generator=g) * 100 + 0.01
    shift = torch.randn(5, 1, 2, generator=g)
    torch.testing.assert_close(loss_fn(pred, y * scale + shift, mask), loss_fn(pred, y, mask), rtol=1e-5, atol=1e-5)
    # A negative scale reverses the ranking: the loss must see it.
    assert not torch.allclose(loss_fn(pred, -y, mask), loss_fn(pred, y, mask), atol=1e-3)


def test_ic_loss_is_zero_for_perfect_and_two_for_reversed_predictions() -> None:
    _, y, mask = _inputs((4, 20, 3), seed=4)
    torch.testing.assert_close(ic_loss(y, y, mask), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(ic_loss(-y, y, mask), torch.full((3,), 2.0), atol=1e-5, rtol=0)
    # Scale-free in pred too: IC measures ranking, not size.
    torch.testing.assert_close(ic_loss(1e3 * y + 5, y, mask), torch.zeros(3), atol=1e-5, rtol=0)


def test_sharpe_needs_two_days_with_a_book_and_has_the_right_sign() -> None:
    pred, y, mask = _inputs((1, 30, 2), seed=5)
    assert torch.equal(sharpe_loss(pred, y, mask), torch.zeros(2))
    # Three days but only one with >= 2 valid stocks: still no std across days.
    pred, y, mask = _inputs((3, 30, 2), seed=5)
    mask[2] = False
    assert torch.equal(sharpe_loss(pred, y, mask), torch.zeros(2))
    pred, y, mask = _inputs((8, 30, 2), seed=6)
    assert (sharpe_loss(y, y, mask) < 0).all()
    assert (sharpe_loss(-y, y, mask) > 0).all()


def test_variance_floor_is_zero_above_the_floor_and_pushes_a_collapsed_day_apart() -> None:
    pred, _, mask = _inputs((4, 30, 2), seed=7)
    assert torch.equal(variance_floor_penalty(pred, mask, floor=0.5), torch.zeros(2))  # std of randn ~ 1
    constant = torch.full((4, 30, 2), 3.0, requires_grad=True)
    penalty = variance_floor_penalty(constant, mask, floor=0.5)
    torch.testing.assert_close(penalty, torch.full((2,), 0.25))
    # Exactly constant predictions are a stationary point of any std-based penalty (symmetry); the gradient must
    # still be finite there. One step from a nearly collapsed state must widen the spread.
    (grad,) = torch.autograd.grad(penalty.sum(), constant)
    assert torch.isfinite(grad).all()
    near = (3.0 + 1e-3 * torch.randn(4, 30, 2, generator=torch.Generator().manual_seed(8))).requires_grad_(True)
    (grad,) = torch.autograd.grad(variance_floor_penalty(near, mask, floor=0.5).sum(), near)
    stepped = (near - 10.0 * grad).detach()
    before = torch.stack([near[d, mask[d, :, 0], 0].std() for d in range(2, 4)])
    after = torch.stack([stepped[d, mask[d, :, 0], 0].std() for d in range(2, 4)])
    assert (after > 2 * before).all()


@pytest.mark.parametrize("sides", ["top", "both"])
def test_ranking_loss_is_the_configured_weighted_sum(sides: str) -> None:
    config = LossConfig(
        huber_weight=0.3,
        huber_delta=0.5,
        listnet_weight=0.7,
        listnet_tau=2.0,
        listnet_sides=sides,
        ic_weight=1.1,
        sharpe_weight=0.2,
        variance_floor=1.5,
        variance_weight=0.9,
        horizon_weights={1: 2.0, 5: 1.0, 20: 1.0},
    )
    horizons = [1, 5, 10, 20]  # 10 is not configured: weight 0
    pred, y, mask = _inputs((6, 25, 4), seed=9)
    pred.requires_grad_(True)
    total, parts = RankingLoss(config, horizons)(pred, y, mask)
    components = {
        "huber": huber_loss(pred, y, mask, 0.5),
        "listnet": listnet_loss(pred, y, mask, 2.0, sides),
        "ic": ic_loss(pred, y, mask),
        "sharpe": sharpe_loss(pred, y, mask),
        "variance": variance_floor_penalty(pred, mask, 1.5),
    }
    h_w = torch.tensor([0.5, 0.25, 0.0, 0.25])
    weights = {"huber": 0.3, "listnet": 0.7, "ic": 1.1, "sharpe": 0.2, "variance": 0.9}
    expected = sum((h_w * weights[k] * v).sum() for k, v in components.items())
    torch.testing.assert_close(total, expected)
    assert total.dim() == 0 and total.requires_grad
    assert set(parts) == {*components, "total"}
    for k, v in components.items():
        assert parts[k] == pytest.approx(float((h_w * v).sum().detach()), rel=1e-6, abs=1e-7)
    assert parts["total"] == pytest.approx(float(total.detach()), rel=1e-6)
    # Horizon 10 has weight 0: its predictions get no gradient.
    (grad,) = torch.autograd.grad(total, pred)
    assert (grad[..., 2] == 0).all() and (grad[..., [0, 1, 3]] != 0).any()


def _fitted_scores(y: torch.Tensor, sides: str) -> np.ndarray:
    """One free score per stock, the same every day, fitted by ListNet alone to the days of ``y`` [D, N]."""
    scores = torch.zeros(y.shape[1], requires_grad=True)
    optimiser = torch.optim.Adam([scores], lr=0.05)
    mask = torch.ones(*y.shape, 1, dtype=torch.bool)
    for _ in range(300):
        loss = listnet_loss(scores.expand_as(y).unsqueeze(-1), y.unsqueeze(-1), mask, tau=1.0, sides=sides).sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return scores.detach().numpy()


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(pd.Series(a).corr(pd.Series(b), method="spearman"))


def test_top_one_listnet_rewards_volatility_and_two_sided_does_not() -> None:
    """100 stocks whose returns all average zero, with volatilities from 0.5 to 2: nothing to rank them by. The
    top-one ListNet still ranks them by volatility (each one's chance of topping a day); the two-sided one leaves
    them unranked, and with a planted mean return it ranks by that mean, not by the volatility beside it."""
    g = torch.Generator().manual_seed(0)
    days, stocks = 512, 100
    vol = torch.linspace(0.5, 2.0, stocks)
    noise = torch.randn(days, stocks, generator=g) * vol
    assert _spearman(_fitted_scores(noise, "top"), vol.numpy()) > 0.9
    assert abs(_spearman(_fitted_scores(noise, "both"), vol.numpy())) < 0.3
    planted = torch.randperm(stocks, generator=g).float() / stocks * 0.5  # mean returns unrelated to volatility
    assert _spearman(_fitted_scores(noise + planted, "both"), planted.numpy()) > 0.8


@pytest.mark.parametrize("shape", SHAPES)
def test_rank_gauss_is_the_normal_score_of_each_days_rank_over_its_valid_stocks(shape: tuple[int, int, int]) -> None:
    _, y, mask = _inputs(shape, seed=11)
    got = rank_gauss(y, mask)
    for d in range(shape[0]):
        for k in range(shape[2]):
            valid = mask[d, :, k].numpy()
            expected = np.zeros(shape[1])
            if valid.any():
                ranks = pd.Series(y[d, valid, k].numpy()).rank(method="first").to_numpy() - 1
                expected[valid] = [NormalDist().inv_cdf((r + 0.5) / valid.sum()) for r in ranks]
            np.testing.assert_allclose(got[d, :, k].numpy(), expected, atol=1e-5)


def test_a_rank_gauss_label_trains_on_the_days_order_only() -> None:
    """Any increasing per-day transform of the labels (here cubing, which makes the tails dominate) leaves the loss
    unchanged with ``label: rank_gauss``, and changes it with the CS-Z label as it is."""
    pred, y, mask = _inputs((6, 25, 4), seed=12)
    z = (y - y.mean(1, keepdim=True)) / y.std(1, keepdim=True)
    ranked = RankingLoss(LossConfig(label="rank_gauss"), [1, 5, 10, 20])
    plain = RankingLoss(LossConfig(), [1, 5, 10, 20])
    assert ranked(pred, z**3, mask)[0] == pytest.approx(float(ranked(pred, z, mask)[0]), rel=1e-6)
    assert abs(float(plain(pred, z**3, mask)[0] - plain(pred, z, mask)[0])) > 1e-2


def test_ranking_loss_rejects_zero_weights_and_wrong_horizon_count() -> None:
    with pytest.raises(ValueError, match="horizon weight is 0"):
        RankingLoss(LossConfig(), [2, 3])
    pred, y, mask = _inputs((3, 10, 3), seed=10)
    with pytest.raises(ValueError, match="horizons"):
        RankingLoss(LossConfig(), [1, 5, 10, 20])(pred, y, mask)


# --- Collapse: the default loss keeps the spread, an MSE-dominated one shrinks it ---------------------------------

N_FEATURES, HORIZONS, SIGNAL_CORR = 8, [1, 5, 10, 20], 0.05


def _planted_problem(seed: int, days: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random features; every horizon's return has correlation SIGNAL_CORR with feature 0, the rest is noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(days, 100, N_FEATURES, generator=g)
    noise = torch.randn(days, 100, len(HORIZONS), generator=g)
    y = 0.02 * (SIGNAL_CORR * x[..., :1] + (1 - SIGNAL_CORR**2) ** 0.5 * noise)
    return x, y, torch.rand(y.shape, generator=g) > 0.1


def _train_linear(config: LossConfig) -> tuple[float, float]:
    """Adam on a linear model, 16-day batches; median per-day prediction std and mean IC on held-out days."""
    torch.manual_seed(0)
    model = torch.nn.Linear(N_FEATURES, len(HORIZONS))
    loss_fn = RankingLoss(config, HORIZONS)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y, mask = _planted_problem(seed=0, days=64)
    for _ in range(25):
        for start in range(0, 64, 16):
            loss, _ = loss_fn(model(x[start : start + 16]), y[start : start + 16], mask[start : start + 16])
            opt.zero_grad()
            loss.backward()
            opt.step()
    x, y, mask = _planted_problem(seed=1, days=256)
    with torch.no_grad():
        pred = model(x)
    return float(pred.std(dim=1).median()), float(1 - ic_loss(pred, y, mask).mean())


def test_default_loss_keeps_the_prediction_spread_where_mse_collapses_it() -> None:
    """Measured (seeded, CPU; median per-day std, held-out IC), from an initial std of ~0.55:
    default LossConfig 0.156, 0.039; default without the variance floor 0.093, 0.040; Huber only 0.058, 0.038.

    MSE against z-scored labels is minimised by a prediction whose std is about the signal's correlation rho
    (0.05 here). ListNet's optimal scale is about the same (its target softmax(z) carries the signal only at
    strength ~rho), and IC and Sharpe are scale-free; so the default settles where ListNet's pull meets the
    floor penalty, about (rho + 2 * floor) / 3 = 0.15: below the 0.2 floor, yet almost three times the MSE spread.
    All three learn the ranking: the collapse is in the spread, which the downstream collapse check watches.
    """
    default = LossConfig()
    std, ic = _train_linear(default)
    no_floor_std, _ = _train_linear(default.model_copy(update={"variance_weight": 0.0}))
    mse_std, mse_ic = _train_linear(
        LossConfig(huber_weight=1.0, listnet_weight=0.0, ic_weight=0.0, sharpe_weight=0.0, variance_weight=0.0)
    )
    assert ic > 0.02 and mse_ic > 0.02
    assert std > 0.7 * default.variance_floor and std > 2 * mse_std and mse_std < 0.1
    assert no_floor_std < 0.6 * default.variance_floor  # the floor penalty is what holds the spread
