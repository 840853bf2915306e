"""The windows of one rolling retrain, counted back in trading days from its as-of date.

    train | purge | valid | purge | eval | purge (ends on as_of)

Each purge is as long as the longest label's span (execution lag + longest horizon: the label of day t ends
at the close of t+lag+h), so no label of one window reaches into the next: the model never learns from, or
early-stops on, returns of the days it is judged on. The evaluation window ends
on the last day whose longest-horizon label is known on the as-of date, so every horizon is judged on every
evaluation day. Train starts no earlier than the features' warm-up (the longest feature lookback), and is
shortened, not shifted, when history is short.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date

import duckdb

from atft.config import PipelineConfig
from atft.features.store import feature_dates
from atft.training.session import Windows
from schemas.manifest import FeatureManifest

MIN_TRAIN_DAYS = 20


@dataclass(frozen=True)
class RetrainWindows:
    train_start: date
    train_end: date
    valid_start: date
    valid_end: date
    eval_start: date
    eval_end: date

    @property
    def training(self) -> Windows:
        return Windows(self.train_start, self.train_end, self.valid_start, self.valid_end)

    def as_dict(self) -> dict[str, date]:
        return asdict(self)


def plan_retrain(
    con: duckdb.DuckDBPyConnection, manifest: FeatureManifest, as_of: date, config: PipelineConfig
) -> RetrainWindows:
    """The windows of the retrain on ``as_of`` over the days of ``manifest``'s table: what a scheduled retrain, the
    backtest and the benchmarks all plan by."""
    return retrain_windows(feature_dates(con, manifest.table_name), as_of, config, manifest.warm_up)


def retrain_windows(dates: Sequence[date], as_of: date, config: PipelineConfig, warm_up: int) -> RetrainWindows:
    """Windows for a retrain on ``as_of`` over the feature table's ``dates`` (sorted trading days).

    ``warm_up``: leading sessions whose features are incomplete (the manifest's longest lookback).
    """
    usable = [d for d in dates if d <= as_of]
    purge = config.features.label_span(max(config.features.horizons))
    eval_days, valid_days = config.evaluation.eval_days, config.retrain.valid_days
    needed = warm_up + MIN_TRAIN_DAYS + 3 * purge + valid_days + eval_days
    if len(usable) < needed:
        raise ValueError(
            f"{len(usable)} sessions of features up to {as_of} are too few for a retrain: it needs {needed} "
            f"({warm_up} warm-up, {MIN_TRAIN_DAYS}+ train, {valid_days} valid, {eval_days} eval, 3 purges of {purge})"
        )
    eval_last = len(usable) - 1 - purge
    eval_first = eval_last - eval_days + 1
    valid_first = eval_first - purge - valid_days
    train_last = valid_first - purge - 1
    train_days = config.retrain.train_days
    train_first = warm_up if train_days is None else max(warm_up, train_last - train_days + 1)
    return RetrainWindows(
        usable[train_first], usable[train_last], usable[valid_first], usable[eval_first - purge - 1],
        usable[eval_first], usable[eval_last],
    )  # fmt: skip
