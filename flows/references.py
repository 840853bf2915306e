"""What flows and tasks hand each other: the resolved config and typed, frozen references to what a stage made.

A run resolves its config once, at its entry (:func:`resolve`), into a :class:`RunConfig`: the frozen file it read
and the settings in it. Every subflow and task of the run takes that object, never a path to parse again, so a YAML
edited during a long training changes nothing in the run. Stages then pass references (table names, paths, hashes,
verdicts), never frames or tensors. They are pydantic models, so the Prefect UI shows them as parameters and results.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from atft.config import PipelineConfig, resolve_config
from atft.training.session import Windows
from atft.warehouse import Warehouse
from schemas.manifest import FeatureManifest

# Dotted config keys and their values, e.g. {"train.epochs": 4}: what a deployment run or a caller changes in the
# config for one run; resolved with the config into the run's frozen file.
Overrides = dict[str, Any] | None


class Reference(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RunConfig(Reference):
    """A pipeline config resolved once for a run: ``path`` is the frozen file (the record of what the run used)."""

    path: str
    settings: PipelineConfig

    @property
    def stem(self) -> str:
        """The config's file name without its suffix (``demo``): run names and artifact keys come from it."""
        return Path(self.path).stem

    def key(self, stage: str, suffix: str) -> str:
        """An artifact key, ``<stage>-<stem>-<suffix>``, in the characters Prefect allows."""
        return f"{stage}-{self.stem}-{suffix}".replace("_", "-").lower()

    def warehouse(self, read_only: bool = True) -> Warehouse:
        return Warehouse.of(self.settings.warehouse, read_only=read_only)


def resolve(
    config: str | Path | RunConfig, warehouse: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> RunConfig:
    """``config`` as a :class:`RunConfig`: a path is read, with ``overrides`` (dotted keys) and ``warehouse`` (the
    same as ``{"warehouse.path": warehouse}``) applied, and frozen under ``<train.staging_dir>/configs``. A
    :class:`RunConfig` is returned as it is, unless something overrides it."""
    changes = dict(overrides or {}) | ({"warehouse.path": str(warehouse)} if warehouse else {})
    if isinstance(config, RunConfig):
        if not changes:
            return config
        config = config.path
    path, settings = resolve_config(config, changes)
    return RunConfig(path=str(path), settings=settings)


class FeatureRef(Reference):
    """A built feature table and its manifest; ``contract_checked`` once the table's columns matched it in this run."""

    table: str
    manifest_sha256: str
    manifest_path: str
    through: date | None
    mode: str
    contract_checked: bool = False

    def manifest(self) -> FeatureManifest:
        return FeatureManifest.read(self.manifest_path)


class WarmStartRecord(Reference):
    """The version a retrain started from (None: from scratch), and why."""

    from_version: str | None
    reason: str


class StagedModel(Reference):
    """A trained model staged in ``staging_dir`` (weights, manifest, history), and how its training went."""

    staging_dir: str
    model: str
    features: FeatureRef
    windows: Windows
    best_epoch: int
    member_best_epochs: list[int]
    best_valid_rank_ic: float
    collapsed: bool
    device: str
    epochs_run: int
    warm_start: WarmStartRecord

    def trained(self) -> str:
        """How training went: "atft_gat_fan, best epoch 3 of 5", or each seed-ensemble member's best epoch."""
        if len(self.member_best_epochs) > 1:
            return (f"{self.model}, seed ensemble of {len(self.member_best_epochs)}, best epochs "
                    f"{', '.join(map(str, self.member_best_epochs))} ({self.epochs_run} epochs in all)")  # fmt: skip
        return f"{self.model}, best epoch {self.best_epoch} of {self.epochs_run}"


class GateVerdict(Reference):
    """The gates' verdict on a staged challenger, and where its evaluation files are (beside its weights)."""

    passed: bool
    reasons: list[str]
    champion: str | None
    eval_start: date
    eval_end: date
    metrics_path: str
    baselines_path: str
    gates_path: str
    predictions_path: str
    charts: list[str] = []  # PNG pictures of the training and the evaluation, published with the version


class PublishedVersion(Reference):
    """A registry version that became the champion, and the champion it replaced."""

    version: str
    path: str
    replaced: str | None


class ChampionRef(Reference):
    """The champion version whose files and contract with ``table`` were verified."""

    version: str
    table: str


class ScoredDay(Reference):
    """One day's predictions written to the warehouse by ``version``."""

    version: str
    as_of: date
    stocks: int
    feature_table: str
    table: str


class ReplayedWindow(Reference):
    """One retrain of a backtest replay: where its out-of-sample predictions are, and how its training went."""

    window: int
    predictions_path: str
    best_epoch: int
    epochs_run: int
    best_valid_rank_ic: float
    collapsed: bool
    seconds: float
    rank_ic: dict[str, float]
    warm_start: str | None


class BacktestRecord(Reference):
    """A backtest replay's stitched out-of-sample record."""

    run_dir: str
    predictions_path: str
    summary_path: str
    report_path: str  # the report and its charts as one standalone HTML page
    charts: list[str]  # per reported horizon, cumulative daily RankIC and long-short equity (PNG)
    windows: int
