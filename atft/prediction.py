"""Predicting days: the one path from feature arrays to dense scores, shared by the trainer's validation, the
evaluation window, daily scoring and the backtest, so that they cannot drift apart (one device choice, one autocast,
one thread policy, the model's own lookback and graph)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from atft.config import PipelineConfig
from atft.data.arrays import FeatureArrays
from atft.data.dataset import DayDataset, day_loader
from atft.models import ContractModel
from atft.threads import govern, tick


def predict_days(
    model: ContractModel,
    arrays: FeatureArrays,
    days: Sequence[int],
    config: PipelineConfig,
    label_cutoff: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense [days, stocks, H] predictions, labels and label mask of ``days`` (indices into ``arrays``).

    Windows and graphs follow the model's own settings, as trained (a champion may predate a config change); the
    device, batch size and threads follow ``config.train``. ``label_cutoff`` as in :class:`DayDataset`."""
    dataset = DayDataset(arrays, list(days), model.config.lookback, model.config.graph, label_cutoff=label_cutoff)
    govern(config.train.threads)
    loader = day_loader(dataset, config.train.days_per_batch, shuffle=False)
    return predict(model, loader, select_device(config.train.device))


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense [days, max stocks, H] predictions, labels and label mask over the loader's days, in order."""
    model.to(device).eval()
    preds, labels, masks = [], [], []
    for batch in loader:
        tick()
        batch = batch.to(device)
        with autocast(device):
            pred = model(*batch.inputs()).float()
        preds.append(batch.dense(pred, float("nan")).cpu().numpy())
        labels.append(batch.dense(batch.y, float("nan")).cpu().numpy())
        masks.append(batch.dense(batch.y_mask, False).cpu().numpy())
    width = max(p.shape[1] for p in preds)
    return tuple(np.concatenate([_pad(a, width, fill) for a in arrays]) for arrays, fill in (
        (preds, np.nan), (labels, np.nan), (masks, False)))  # fmt: skip


@torch.no_grad()
def mean_input_weights(
    model: ContractModel, arrays: FeatureArrays, days: Sequence[int], config: PipelineConfig
) -> np.ndarray | None:
    """[F] the variable-selection weights of ``model`` averaged over every stock of ``days``: which inputs it looks
    at. None for a model without a variable selection network."""
    if not all(hasattr(member, "input_weights") for member in getattr(model, "members", [model])):
        return None
    dataset = DayDataset(arrays, list(days), model.config.lookback, model.config.graph)
    govern(config.train.threads)
    device = select_device(config.train.device)
    model.to(device).eval()
    total, rows = None, 0
    for batch in day_loader(dataset, config.train.days_per_batch, shuffle=False):
        tick()
        batch = batch.to(device)
        x, x_mask = batch.inputs()[:2]
        weights = model.input_weights(x, x_mask).float().sum(0)
        total = weights if total is None else total + weights
        rows += x.shape[0]
    return None if total is None else (total / rows).cpu().numpy()


def select_device(preference: str) -> torch.device:
    """The device of ``train.device``: ``auto`` takes CUDA where there is one; ``cuda`` without one is an error."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


def autocast(device: torch.device) -> torch.autocast:
    """bf16 on CUDA (no loss scaling needed); plain fp32 on CPU, where autocast is disabled."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def _pad(array: np.ndarray, width: int, fill: object) -> np.ndarray:
    pad = [(0, 0), (0, width - array.shape[1])] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, pad, constant_values=fill)
