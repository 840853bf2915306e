"""The trainer: one code path on CPU (fp32) and CUDA (bf16 autocast), early stopping on validation RankIC.

It guards against the failures this platform exists to prevent: a non-finite loss or gradient stops the
run with a clear error, and the per-day prediction std is measured every epoch, so a collapse to a
constant is reported when it happens instead of being discovered after publication. It returns the best
state and the history in memory; publication is someone else's job.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from atft.config import TrainConfig
from atft.data.arrays import FeatureArrays
from atft.losses import RankingLoss
from atft.metrics import daily_ic, daily_rank_ic, summarise
from atft.models import ContractModel
from atft.prediction import autocast, predict, select_device
from atft.threads import govern, tick
from atft.training.weight_average import WeightAverage

# train.compile "auto" compiles on CPU from this many stock-days to train (epochs x training stock-days): where the
# compiled block (~5,500 stock-days/s against ~3,100 eager, bench_step.py) repays even a cold compile (~20 s; ~3 s
# from inductor's on-disk cache, as every later model on the host). A one-epoch S&P retrain (~240k) compiles; the
# demo's (~75k) does not.
COMPILE_MIN_STOCK_DAYS = 150_000


class TrainingDiverged(RuntimeError):
    """The loss or a gradient became NaN or infinite."""


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    components: dict[str, float]
    valid_rank_ic: dict[int, float]  # horizon -> mean daily RankIC
    valid_ic: dict[int, float]
    prediction_std: float  # median over validation days of the per-day std of primary-horizon predictions
    collapsed: bool
    learning_rate: float
    seconds: float
    stock_days_per_s: float
    data_seconds: float  # of ``seconds``, waiting for batches
    threads: int = 0  # torch CPU threads at the epoch's end
    eta_s: float = 0.0  # the remaining epochs at the mean speed so far (early stopping may end sooner)
    member: int = 0  # of a seed ensemble, which member this epoch trained (0 for a single model)
    members: int = 1

    def line(self) -> str:
        ric = ", ".join(f"{h}d {v:+.4f}" for h, v in self.valid_rank_ic.items())
        flag = "  COLLAPSE" if self.collapsed else ""
        who = f"member {self.member + 1} of {self.members}, " if self.members > 1 else ""
        return (
            f"{who}epoch {self.epoch}: loss {self.train_loss:.4f}; valid RankIC {ric}; "
            f"pred std {self.prediction_std:.4f}{flag}; {self.seconds:.1f} s ({self.stock_days_per_s:,.0f} "
            f"stock-days/s, data {self.data_seconds:.1f} s, "
            f"{self.threads} threads){eta_text(self.eta_s)}"
        )


@dataclass
class TrainResult:
    state_dict: dict[str, torch.Tensor]  # the best epoch's weights, on CPU
    history: list[EpochRecord]
    best_epoch: int
    best_valid_rank_ic: float
    device: str
    collapsed: bool = field(default=False)  # the best epoch's predictions had collapsed
    thread_policy: str = ""  # the thread policy it ran under, and every change the host's load made to it
    compiled: str = ""  # what torch.compile compiled, or why nothing
    warm_start: dict[str, object] | None = None  # the version it started from and why (``WarmStart.describe``)
    member_best_epochs: list[int] = field(default_factory=list)  # of a seed ensemble, each member's best epoch

    def history_dicts(self) -> list[dict[str, object]]:
        return [asdict(record) for record in self.history]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fit_input_scaling(arrays: FeatureArrays, days: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and std over the training days' rows only: nothing fitted crosses the split."""
    rows = arrays.x[days][arrays.present[days]].astype(np.float64)
    mean = np.nanmean(rows, axis=0)
    std = np.nanstd(rows, axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(np.isfinite(std) & (std > 1e-8), std, 1.0)
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)


def fit(
    model: nn.Module,
    train: DataLoader,
    valid: DataLoader,
    loss_fn: RankingLoss,
    config: TrainConfig,
    horizons: list[int],
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainResult:
    """Train ``model``; returns the state of the epoch with the best validation RankIC at the primary horizon."""
    if config.primary_horizon not in horizons:
        raise ValueError(f"train.primary_horizon {config.primary_horizon} is not one of the horizons {horizons}")
    device = select_device(config.device)
    governor = govern(config.threads)
    changes_before = len(governor.changes)
    policy = governor.describe()
    model = model.to(device)
    step_model, compiled = _compiled(model, config, device, config.epochs * train.dataset.stock_days())
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    total_steps = max(1, config.epochs * len(train))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(total_steps, config.warmup_fraction))
    primary = horizons.index(config.primary_horizon)
    average = WeightAverage(model, config.weight_average_decay) if config.weight_average_decay else None
    history: list[EpochRecord] = []
    best: tuple[float, int, dict[str, torch.Tensor], bool] | None = None
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        began = time.perf_counter()
        loss, components, stock_days, data_seconds = _train_epoch(
            step_model, train, loss_fn, optimizer, scheduler, config, device, epoch, average
        )
        with average.applied() if average else nullcontext():
            pred, label, mask = predict(step_model, valid, device)
            snapshot = _snapshot(model)
        rank_ic = _per_horizon(daily_rank_ic, pred, label, mask, horizons)
        ic = _per_horizon(daily_ic, pred, label, mask, horizons)
        std = prediction_std(pred[..., primary], mask[..., primary])
        seconds = time.perf_counter() - began
        record = EpochRecord(
            epoch=epoch,
            train_loss=loss,
            components=components,
            valid_rank_ic=rank_ic,
            valid_ic=ic,
            prediction_std=std,
            collapsed=not std >= config.collapse_std,
            learning_rate=scheduler.get_last_lr()[0],
            seconds=seconds,
            stock_days_per_s=stock_days / seconds,
            data_seconds=data_seconds,
            threads=governor.threads,
            eta_s=(time.perf_counter() - started) / epoch * (config.epochs - epoch),
        )
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        score = rank_ic[config.primary_horizon]
        score = score if math.isfinite(score) else -math.inf
        if best is None or score > best[0]:
            best = (score, epoch, snapshot, record.collapsed)
        elif epoch - best[1] >= config.patience:
            break
    assert best is not None
    return TrainResult(
        state_dict=best[2],
        history=history,
        best_epoch=best[1],
        best_valid_rank_ic=best[0],
        device=str(device),
        collapsed=best[3],
        thread_policy="; ".join([policy, *governor.changes[changes_before:]]),
        compiled=compiled,
    )


def _compiled(model: nn.Module, config: TrainConfig, device: torch.device, stock_days: int) -> tuple[nn.Module, str]:
    """The module to step, and what ``train.compile`` compiled in it, or why nothing."""
    if config.compile is False:
        return model, "nothing (train.compile is false)"
    if device.type == "cuda":
        if config.compile is True:
            return torch.compile(model), "the whole model (CUDA)"
        return model, "nothing (train.compile auto compiles on CPU only)"
    if config.compile == "auto" and stock_days < COMPILE_MIN_STOCK_DAYS:
        return model, f"nothing (auto: {stock_days:,} stock-days to train, below {COMPILE_MIN_STOCK_DAYS:,})"
    if config.compile == "auto" and not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "c++", "clang++")):
        # Inductor builds C++ kernels at the first step; without a compiler that step would fail the run.
        return model, "nothing (auto: no C++ compiler on this host for inductor; install g++ or set CXX)"
    if not (isinstance(model, ContractModel) and model.compile_for_cpu()):
        return model, f"nothing ({type(model).__name__} has no block compiled on CPU)"
    return model, "the per-step block on CPU (torch.compile, inductor)"


def _train_epoch(
    model: nn.Module,
    loader: DataLoader,
    loss_fn: RankingLoss,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    config: TrainConfig,
    device: torch.device,
    epoch: int,
    average: WeightAverage | None,
) -> tuple[float, dict[str, float], int, float]:
    model.train()
    total, steps, stock_days, waited = 0.0, 0, 0, 0.0
    sums: dict[str, float] = {}
    fetched = time.perf_counter()
    for step, batch in enumerate(loader, start=1):
        waited += time.perf_counter() - fetched
        tick()
        batch = batch.to(device, non_blocking=True)
        with autocast(device):
            pred = model(*batch.inputs())
        loss, components = loss_fn(batch.dense(pred.float()), batch.dense(batch.y), batch.dense(batch.y_mask, False))
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"loss became {loss.item()} at epoch {epoch}, step {step} (components {components})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        if not torch.isfinite(norm):
            raise TrainingDiverged(f"gradient norm became {norm.item()} at epoch {epoch}, step {step}")
        optimizer.step()
        scheduler.step()
        if average is not None:
            average.update()
        total += loss.item()
        steps += 1
        stock_days += int(batch.x_mask[:, -1].sum())  # stocks trading that day; absent ones are masked rows
        for name, value in components.items():
            sums[name] = sums.get(name, 0.0) + value
        fetched = time.perf_counter()
    return total / max(steps, 1), {k: v / max(steps, 1) for k, v in sums.items()}, stock_days, waited


def eta_text(seconds: float) -> str:
    """ ", ETA 3 min 20 s" for what is left; nothing once it is done."""
    if seconds <= 0:
        return ""
    minutes, rest = divmod(round(seconds), 60)
    return f", ETA {minutes} min {rest} s" if minutes else f", ETA {rest} s"


def overrun_warning(record: EpochRecord, elapsed_s: float, epochs: int, timeout_s: float) -> str | None:
    """After the first epoch (of an ensemble's first member): a warning if all ``epochs`` (of every member) at its speed
    would run past ``timeout_s``, else None."""
    if record.epoch != 1 or record.member or elapsed_s + record.eta_s <= timeout_s:
        return None
    return (
        f"at {record.seconds:.0f} s per epoch, {epochs} epochs need about {(elapsed_s + record.eta_s) / 60:.0f} min in "
        f"all, past the {timeout_s / 60:.0f}-min timeout (train.timeout_s): the run will be stopped unless early "
        "stopping ends it sooner; lower train.epochs or raise train.timeout_s"
    )


def prediction_std(pred: np.ndarray, mask: np.ndarray) -> float:
    """Median over days of the per-day std of predictions across stocks: ~0 means the model collapsed."""
    values = np.where(mask, pred, np.nan)
    counts = mask.sum(axis=1)
    with np.errstate(invalid="ignore"):
        daily = np.nanstd(values[counts >= 2], axis=1)
    return float(np.median(daily)) if daily.size else float("nan")


def _per_horizon(
    metric: Callable[..., np.ndarray], pred: np.ndarray, label: np.ndarray, mask: np.ndarray, horizons: list[int]
) -> dict[int, float]:
    return {h: summarise(metric(pred[..., k], label[..., k], mask[..., k]))[0] for k, h in enumerate(horizons)}


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().to("cpu").clone() for name, value in model.state_dict().items()}


def _warmup_cosine(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor
