"""Pipeline config: one YAML file per use case under ``deployments/``, parsed into typed settings.

Unknown or mistyped keys are rejected with a message that names the key, so a typo never silently
falls back to a default.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas.columns import CANONICAL_QUOTE_COLUMNS
from schemas.manifest import FEATURE_GROUPS

REQUIRED_QUOTE_COLUMNS: tuple[str, ...] = CANONICAL_QUOTE_COLUMNS[:7]
# listed_info columns a listings file may map; ValidFrom and ValidTo are not in files (see ListingsFileConfig).
LISTING_FILE_COLUMNS: tuple[str, ...] = ("Code", "CompanyName", "Sector17Code", "Sector33Code", "MarketCode")
# Listing labels a quotes file may carry beside its quotes, one per row, constant per stock.
QUOTE_FILE_LABELS: tuple[str, ...] = ("Sector17Code",)


class ConfigError(ValueError):
    """A pipeline config that cannot be used; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SignalMixConfig(_Strict):
    """Multipliers on the synthetic market's four planted signal parts, each of about unit variance at 1."""

    reversal: float = Field(1.0, ge=0)
    volume: float = Field(1.0, ge=0)
    lead_lag: float = Field(1.0, ge=0)
    regime: float = Field(0.0, ge=0)


class SyntheticSourceConfig(_Strict):
    """A deterministic J-Quants-shaped market on the JPX calendar, fixed by ``seed``."""

    kind: Literal["synthetic"]
    seed: int = Field(7, ge=0)
    # 4-digit codes 1300..9999 bound the universe.
    n_stocks: int = Field(300, gt=0, le=8_700)
    start: date = date(2021, 1, 4)
    end: date = date(2024, 12, 30)
    # Stocks generated per chunk: bounds memory for large universes.
    chunk_stocks: int = Field(250, gt=0)
    # Scales the planted predictable component; 0 makes the market pure noise.
    signal_strength: float = Field(1.0, ge=0)
    signal_mix: SignalMixConfig = SignalMixConfig()
    split_probability: float = Field(0.15, ge=0, le=1)
    late_listing_fraction: float = Field(0.08, ge=0, le=1)
    delisting_fraction: float = Field(0.05, ge=0, le=1)
    halt_probability: float = Field(0.0015, ge=0, le=0.5)

    @model_validator(mode="after")
    def _ordered(self) -> SyntheticSourceConfig:
        if self.end <= self.start:
            raise ValueError(f"end {self.end} must be after start {self.start}")
        return self


class ListingsFileConfig(_Strict):
    """A CSV or Parquet file of one row per stock: its sector labels, name and market, mapped like the quotes.

    The file has no dates: each label holds for the stock's whole history, and a changed label replaces the
    old one on the next ingest. Labels given as names ("Health Care") are fine: the columns are text.
    """

    path: Path
    format: Literal["auto", "parquet", "csv"] = "auto"
    # source column -> listed_info column (LISTING_FILE_COLUMNS); Code is required.
    columns: dict[str, str]
    # Source columns that exist in the file but are deliberately not loaded.
    ignore_columns: list[str] = []

    @field_validator("columns")
    @classmethod
    def _listing_targets(cls, columns: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(columns.values()) - set(LISTING_FILE_COLUMNS))
        if unknown:
            raise ValueError(f"maps to unknown listing column(s) {unknown}; allowed: {list(LISTING_FILE_COLUMNS)}")
        doubled = sorted({c for c in columns.values() if list(columns.values()).count(c) > 1})
        if doubled:
            raise ValueError(f"several source columns map to {doubled}")
        if "Code" not in columns.values() or len(columns) < 2:
            raise ValueError("must map a column to Code and at least one column to a label")
        return columns


class FilesSourceConfig(_Strict):
    """CSV or Parquet files, one file or a directory of per-stock files, with a declared mapping."""

    kind: Literal["files"]
    path: Path
    format: Literal["auto", "parquet", "csv"] = "auto"
    # source column -> canonical column. Matching is exact: no case folding, no guessing. Besides the quote
    # columns, one column may map to Sector17Code: the stock's sector, the same on all its rows.
    columns: dict[str, str]
    # Source columns that exist in the files but are deliberately not loaded.
    ignore_columns: list[str] = []
    # Regex with a named group ``code`` that takes Code from each file name instead of a column.
    code_from_filename: str | None = None
    # Values for optional canonical columns the files do not carry (e.g. already split-adjusted prices).
    fill: dict[str, float] = {}
    # A separate file of sector labels (and names, markets) per stock.
    listings: ListingsFileConfig | None = None

    @field_validator("columns")
    @classmethod
    def _canonical_targets(cls, columns: dict[str, str]) -> dict[str, str]:
        allowed = [*CANONICAL_QUOTE_COLUMNS, *QUOTE_FILE_LABELS]
        unknown = sorted(set(columns.values()) - set(allowed))
        if unknown:
            raise ValueError(f"maps to unknown canonical column(s) {unknown}; canonical: {allowed}")
        doubled = sorted({c for c in columns.values() if list(columns.values()).count(c) > 1})
        if doubled:
            raise ValueError(f"several source columns map to {doubled}")
        return columns

    @field_validator("code_from_filename")
    @classmethod
    def _has_code_group(cls, pattern: str | None) -> str | None:
        if pattern is not None and "code" not in re.compile(pattern).groupindex:
            raise ValueError(f"regex {pattern!r} needs a named group (?P<code>...)")
        return pattern

    @field_validator("fill")
    @classmethod
    def _fill_optional_only(cls, fill: dict[str, float]) -> dict[str, float]:
        bad = sorted(set(fill) - {"TurnoverValue", "AdjustmentFactor"})
        if bad:
            raise ValueError(f"only TurnoverValue and AdjustmentFactor may be filled, not {bad}")
        return fill

    @model_validator(mode="after")
    def _labels_from_one_place(self) -> FilesSourceConfig:
        listed = set(self.listings.columns.values()) - {"Code"} if self.listings else set()
        twice = sorted(set(self.columns.values()) & listed)
        if twice:
            raise ValueError(f"{twice} mapped both in columns and in listings.columns; map each label in one place")
        return self


class JQuantsSourceConfig(_Strict):
    """The J-Quants API. Credentials come from the environment or a Prefect Secret block, never from here."""

    kind: Literal["jquants"]
    base_url: str = "https://api.jquants.com/v1"
    # Name of a Prefect Secret block holding the refresh token; when unset, environment variables.
    credentials_block: str | None = None
    max_retries: int = Field(5, ge=0)
    backoff_seconds: float = Field(1.0, ge=0)
    timeout_seconds: float = Field(30.0, gt=0)


SourceConfig = Annotated[SyntheticSourceConfig | FilesSourceConfig | JQuantsSourceConfig, Field(discriminator="kind")]


class UniverseConfig(_Strict):
    # J-Quants codes are 4 characters plus an optional check digit; the demo market uses 4 digits.
    code_pattern: str = r"^[0-9][0-9A-Z]{3}0?$"
    # Restrict ingestion to these codes; None keeps everything the source delivers.
    codes: list[str] | None = None

    @field_validator("code_pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        re.compile(pattern)
        return pattern


class WarehouseConfig(_Strict):
    path: Path = Path("data/warehouse.duckdb")
    # How long a run waits for others that hold the warehouse (DuckDB admits one writer and, while it
    # writes, no reader) before failing with who holds it: longer than the longest ingest or feature build.
    lock_timeout_s: float = Field(1800.0, ge=0)


class JumpsConfig(_Strict):
    """Day-over-day jump bounds (log-symmetric: 0.4 is a rise to 1.4x or a fall to 1/1.4); null turns one off.

    A jump taken back the next day is quarantined as a suspected bad tick, a one-way jump only flagged.
    Prices: 0.4 catches the bar glitches of the real S&P file and nothing on the synthetic market. Volume:
    off, since volume spikes that revert the next day are ordinary (index rebalancing, news).
    """

    price: float | None = Field(0.4, gt=0)
    volume: float | None = Field(None, gt=0)


class ValidationConfig(_Strict):
    # What to do with a row-level anomaly (missing price, close outside [low, high], ...).
    row_anomalies: Literal["quarantine", "abort"] = "quarantine"
    # Abort when more than this fraction of received rows is rejected: a wrong calendar or a broken
    # file should fail loudly instead of quarantining most of the data.
    max_rejected_fraction: float = Field(0.01, ge=0, le=1)
    jumps: JumpsConfig = JumpsConfig()


class CSZConfig(_Strict):
    """Cross-sectional z-scores: per date, over the stocks that have a value that day."""

    clip: float = Field(5.0, gt=0)
    # Fewer stocks with a value on a day than this gives NaN for that day: a z-score of 3 stocks means nothing.
    min_stocks: int = Field(20, ge=2)
    # A (near-)constant cross-section has no meaningful z-score: NaN, not a division by ~0.
    min_std: float = Field(1e-8, gt=0)
    # The explicit fill step for missing z-scores; "none" keeps NaN for the model's masks to handle.
    fill: Literal["none", "zero"] = "none"
    # Base feature groups that get a <feature>_cs_z column. Market features are the same for every stock.
    groups: list[Literal["price", "volume", "volatility", "sector"]] = ["price", "volume", "volatility", "sector"]


class FeaturesConfig(_Strict):
    horizons: list[int] = Field(default_factory=lambda: [1, 5, 10, 20], min_length=1)
    # Sessions between the close a signal is computed from and the close a trade enters at: target_h at day t is
    # close[t+lag+h] / close[t+lag] - 1. 0 in the library, so existing manifests keep their hash and meaning and the
    # synthetic oracle (close-to-close from t) stays the truth; deployments on real prices set 1, as Qlib's label.
    execution_lag: int = Field(0, ge=0)
    cs_z: CSZConfig = CSZConfig()
    # Use sector-relative features when listed_info has sectors for the universe.
    sectors: bool = True
    # Validation: the largest share of NaN allowed in any input column of a build.
    max_nan_fraction: float = Field(0.25, ge=0, le=1)
    # Where manifests are written as JSON, one file per feature table version.
    manifest_dir: Path = Path("data/manifests")

    @field_validator("horizons")
    @classmethod
    def _positive_sorted(cls, horizons: list[int]) -> list[int]:
        if any(h < 1 for h in horizons) or sorted(set(horizons)) != horizons:
            raise ValueError(f"horizons must be distinct positive trading-day counts, increasing; got {horizons}")
        return horizons

    def label_span(self, horizon: int) -> int:
        """Sessions from a day to the close its ``horizon`` label ends at: what a purge between windows must cover."""
        return self.execution_lag + horizon


class GraphConfig(_Strict):
    """The per-day stock graph: top-k correlation of trailing daily returns, plus same-sector peers."""

    window: int = Field(20, ge=5)  # trailing sessions of returns, the day itself included
    top_k: int = Field(10, ge=0)  # most-correlated peers per stock; 0 disables correlation edges
    min_abs_corr: float = Field(0.3, ge=0, le=1)
    sector_peers: int = Field(3, ge=0)  # most-correlated same-sector peers per stock; 0 disables


class ModelConfig(_Strict):
    name: Literal["atft_gat_fan", "apex"] = "atft_gat_fan"
    # Members of a seed ensemble: copies of the model trained from seeds train.seed, train.seed + 1, ..., scored as
    # the mean of their per-day ranks (atft.models.ensemble). 1 is a single model.
    ensemble: int = Field(1, ge=1)
    # Sessions per input window, the day itself last. 10 rather than 20: with the day-context FiLM the longer window
    # did not rank better, and an epoch takes half the time (benchmarks/README.md).
    lookback: int = Field(10, ge=2)
    # Scaled inputs are clipped to +-this many training stds; None leaves them as they are. Raw price and volume
    # features of real stocks reach hundreds of stds on a glitch or a crash, which the CS-Z columns (clipped at
    # features.cs_z.clip) never do.
    input_clip: float | None = Field(None, gt=0)
    hidden: int = Field(64, ge=8)
    var_hidden: int = Field(8, ge=2)  # per-variable embedding width inside the variable selection network
    dropout: float = Field(0.1, ge=0, lt=1)
    fan_window: int = Field(8, ge=2)  # trailing steps of each causal FAN spectrum
    fan_top_k: int = Field(2, ge=1)  # dominant frequencies removed per window and channel
    gat_heads: int = Field(2, ge=1)
    gat_layers: int = Field(1, ge=1)
    patch_len: int = Field(4, ge=2)  # APEX baseline: PatchTST patching, 4 patches of the default lookback
    patch_stride: int = Field(2, ge=1)
    transformer_layers: int = Field(2, ge=1)
    attention_heads: int = Field(4, ge=1)
    # Inputs the scores are made neutral to, e.g. [rv_60, beta_60]: each day's scores regressed on their values that
    # day and the residuals kept, inside the model, in training and scoring alike (atft.models.neutral_scores).
    neutral_to: list[str] = Field(default_factory=list)
    # Feature groups the layers read, e.g. [cs_z]; empty reads every input. The model still takes the manifest's
    # full width (its contract), so neutral_to may name an input outside these groups.
    input_groups: list[str] = Field(default_factory=list)
    # ATFT-GAT-FAN only: feature groups, e.g. [cs_z] (what the ridge baseline reads), whose values on the day itself
    # are mapped linearly onto the scores and added, starting at zero: a wide path beside the deep one (see
    # atft.models.atft_gat_fan). Empty: no such path.
    linear_skip: list[str] = Field(default_factory=list)
    graph: GraphConfig = GraphConfig()

    @field_validator("input_groups", "linear_skip")
    @classmethod
    def _known_groups(cls, groups: list[str]) -> list[str]:
        unknown = sorted(set(groups) - set(FEATURE_GROUPS))
        if unknown:
            raise ValueError(f"unknown feature group(s) {unknown}; the groups are {list(FEATURE_GROUPS)}")
        if len(set(groups)) != len(groups):
            raise ValueError(f"a group is listed twice in {groups}")
        return groups

    @model_validator(mode="after")
    def _skip_is_atft_gat_fans(self) -> ModelConfig:
        if self.linear_skip and self.name != "atft_gat_fan":
            raise ValueError(f"model.linear_skip is an option of atft_gat_fan only; model.name is {self.name!r}")
        return self


class LossConfig(_Strict):
    """Per-day ranking losses; the MSE-type term stays small so that predictions cannot collapse to the mean."""

    # What the losses see of the CS-Z label: as it is, or its per-day normal scores (see atft.losses.rank_gauss).
    label: Literal["cs_z", "rank_gauss"] = "cs_z"
    # Risk-adjusted training labels (atft.data.risk_labels); validation and scoring keep the true labels. scale_by: an
    # input each label is divided by, a stock's own volatility such as rv_60; neutralize: inputs whose exposures are
    # regressed out of each day's labels, such as [beta_60].
    scale_by: str | None = None
    neutralize: list[str] = Field(default_factory=list)
    # Sector dummies regressed out with neutralize's inputs: each label against its sector's mean that day.
    sector_neutral: bool = False
    huber_weight: float = Field(0.05, ge=0)
    huber_delta: float = Field(1.0, gt=0)
    listnet_weight: float = Field(1.0, ge=0)
    listnet_tau: float = Field(1.0, gt=0)
    # "top": ListNet on each day's best stocks only, which rewards volatility as such; "both": averaged with the
    # worst's, which does not (see atft.losses.listnet_loss and benchmarks/README.md, "The volatility tilt").
    listnet_sides: Literal["top", "both"] = "top"
    ic_weight: float = Field(1.0, ge=0)
    sharpe_weight: float = Field(0.1, ge=0)
    variance_floor: float = Field(0.2, ge=0)  # per-day prediction std below this is penalised
    variance_weight: float = Field(1.0, ge=0)
    # Weight of each horizon's loss; horizons not listed get 0.
    horizon_weights: dict[int, float] = Field(default_factory=lambda: {1: 0.5, 5: 1.0, 10: 0.5, 20: 0.25})


class TrainConfig(_Strict):
    seed: int = 7
    epochs: int = Field(8, ge=1)
    days_per_batch: int = Field(4, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    # AdamW's own default. With the day-context summary, 1e-4 overfit the few hundred training days' contexts
    # (benchmarks/README.md).
    weight_decay: float = Field(1e-2, ge=0)
    warmup_fraction: float = Field(0.1, ge=0, lt=1)  # of all steps, then cosine decay
    grad_clip: float = Field(1.0, gt=0)
    patience: int = Field(3, ge=1)  # epochs without a better validation RankIC before stopping
    # Per-step decay of an exponential moving average of the weights, which is then what is validated and kept (see
    # atft.training.weight_average); 0 turns it off. 0.99 averages over about the last 100 steps.
    weight_average_decay: float = Field(0.0, ge=0, lt=1)
    primary_horizon: int = Field(5, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # torch.compile. "auto": on CPU, the model's per-step block (FAN and the VSN) when the run trains enough
    # stock-days to repay the compile (see atft.training.trainer.COMPILE_MIN_STOCK_DAYS); nothing on CUDA.
    # true: always, the whole model on CUDA. false: never.
    compile: Literal["auto"] | bool = "auto"
    num_workers: int = Field(0, ge=0)
    # Torch CPU threads: "auto" runs on the cores that other processes leave free and follows the host's load
    # (see atft.threads); a number pins it, which bit-for-bit reproducible runs need.
    threads: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    # "champion": start from the registry champion's weights when it is the same model (manifest, model config,
    # horizons) and fine-tune for warm_start_epochs at warm_start_learning_rate; otherwise train from scratch and
    # say why. "none": always from scratch.
    warm_start: Literal["none", "champion"] = "none"
    warm_start_epochs: int = Field(2, ge=1)
    warm_start_learning_rate: float = Field(3e-4, gt=0)
    collapse_std: float = Field(1e-3, ge=0)  # median per-day prediction std below this is a collapse
    # Wall-clock limit of the training task; the train flow stops a run past it, and warns after the first epoch
    # when the measured speed will not fit.
    timeout_s: float = Field(6 * 3600, gt=0)
    staging_dir: Path = Path("data/staging")


class PortfolioConfig(_Strict):
    """Long the top and short the bottom of each day's scores; costs are charged on traded weight."""

    top_k: int | None = Field(None, ge=1)  # stocks per leg; None uses ``quantile`` instead
    quantile: float = Field(0.2, gt=0, le=0.5)  # fraction of the day's stocks per leg when top_k is None
    cost_bps: float = Field(10.0, ge=0)  # one-way cost per unit of weight traded, in basis points
    annualisation: int = Field(252, ge=1)  # trading days per year for annual return and Sharpe


class EvaluationConfig(_Strict):
    """Held-out evaluation and the gates a challenger must pass before it is published."""

    eval_days: int = Field(60, ge=5)  # trading days in the evaluation window, after a purge of the longest label span
    # "<metric>_<h>d <op> <bound>", e.g. "rank_ic_5d >= 0.01"; see atft.gates for the metric names.
    gates: list[str] = Field(
        default_factory=lambda: ["rank_ic_5d >= 0.01", "collapse_ratio_1d >= 0.05", "max_drawdown_5d <= 0.5"]
    )
    champion_metric: str = "rank_ic_5d"  # the challenger must beat the champion on this, on the same window
    champion_tolerance: float = Field(0.005, ge=0)  # ... or trail it by at most this much
    # Baselines fitted on the challenger's own training window and scored on the same evaluation window; the
    # challenger must beat each on champion_metric by at least baseline_margin. Off in the library (the fixtures of
    # tests have no room for them); the demo and S&P configs list both.
    baselines: list[Literal["ridge", "lightgbm"]] = []
    # 0: the challenger must be at least as good as each baseline. A positive margin would sit inside the noise of a
    # 60-day mean RankIC on real prices and reject models that are as good at random.
    baseline_margin: float = Field(0.0, ge=0)
    portfolio: PortfolioConfig = PortfolioConfig()


class RetrainConfig(_Strict):
    """Window lengths of a rolling retrain, in trading days, counted back from its as-of date.

    train | purge | valid | purge | eval | purge, each purge as long as the longest label span (lag + horizon), the
    last one ending on the as-of date, so that every evaluation day has all its labels (eval is
    ``evaluation.eval_days`` long).
    """

    # None: expanding windows, every session from the features' warm-up up to the training purge.
    train_days: int | None = Field(500, ge=20)
    valid_days: int = Field(120, ge=5)
    step_days: int = Field(20, ge=1)  # sessions between retrains in a backtest replay


class MonitorConfig(_Strict):
    """The daily check of the champion's realised record (``monitor`` flow): degraded when the mean realised RankIC
    of its last ``window`` judged days at ``horizon`` falls below ``rank_ic_bound``."""

    window: int = Field(20, ge=2)  # judged days in the rolling mean; fewer is "warming up", not a verdict
    rank_ic_bound: float = 0.0  # below it the champion ranks no better than chance on realised returns
    horizon: int | None = Field(None, ge=1)  # default: train.primary_horizon


class DriftConfig(_Strict):
    """Input drift at scoring time: each input on the scored day against a sample of the champion's training days."""

    reference_days: int = Field(60, ge=1)  # training days sampled, evenly spread, as the reference
    warn_psi: float = Field(0.25, gt=0)  # above it an input is listed as drifted and the run warns
    fail_psi: float | None = Field(None, gt=0)  # above it the score run fails, naming the inputs; None never fails
    shown: int = Field(15, ge=1)  # inputs in the artifact, most drifted first


class RegistryConfig(_Strict):
    path: Path = Path("data/registry")  # one directory per published version, plus champion.json


class PipelineConfig(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    source: SourceConfig
    universe: UniverseConfig = UniverseConfig()
    calendar: Literal["XTKS", "XNYS"] = "XTKS"
    warehouse: WarehouseConfig = WarehouseConfig()
    validation: ValidationConfig = ValidationConfig()
    features: FeaturesConfig = FeaturesConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()
    retrain: RetrainConfig = RetrainConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    monitor: MonitorConfig = MonitorConfig()
    drift: DriftConfig = DriftConfig()
    registry: RegistryConfig = RegistryConfig()


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> PipelineConfig:
    """Read a pipeline config, apply dotted-key ``overrides`` (e.g. ``{"warehouse.path": "x.duckdb"}``)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read pipeline config: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, found {type(raw).__name__}")
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value, path)
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None


_EXPONENT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``key=value`` pairs of a ``--set`` option as dotted-key overrides, each value read as YAML (``1e-3``,
    ``rank_gauss``, ``{5: 1.0}``, ``null``)."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set takes key=value (e.g. train.epochs=1), got {pair!r}")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: {value!r} is not a YAML value: {exc}") from None
        # PyYAML reads YAML 1.1, where 1e-3 (no dot) is text; on a command line it means the number.
        overrides[key] = float(parsed) if isinstance(parsed, str) and _EXPONENT.fullmatch(parsed) else parsed
    return overrides


def freeze_config(path: str | Path, overrides: Mapping[str, Any], directory: str | Path | None = None) -> Path:
    """The config at ``path`` with ``overrides`` applied and validated, written once as
    ``directory/<sha256 of its settings, 12 hex>/<path's file name>``; by default ``directory`` is
    ``<train.staging_dir>/configs``, beside the runs that use it.

    A run handed this file reads the same settings from start to end, however the original is edited meanwhile, and
    the file is the record of what the run used. Its name keeps the original's, so the names derived from a config's
    file (artifact keys) do not change. The same settings always give the same file."""
    return resolve_config(path, overrides, directory)[0]


def resolve_config(
    path: str | Path, overrides: Mapping[str, Any] | None = None, directory: str | Path | None = None
) -> tuple[Path, PipelineConfig]:
    """:func:`freeze_config`'s file and the settings in it, from one parse of ``path``."""
    settings = load_config(path, overrides)
    text = yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False)
    root = Path(directory) if directory is not None else settings.train.staging_dir / "configs"
    frozen = root / hashlib.sha256(text.encode()).hexdigest()[:12] / Path(path).name
    if not frozen.exists():
        frozen.parent.mkdir(parents=True, exist_ok=True)
        staging = frozen.with_suffix(f".{os.getpid()}.tmp")
        staging.write_text(text)
        staging.replace(frozen)  # atomic: a reader never sees half a file
    return frozen, settings


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any, path: Path) -> None:
    node = raw
    *parents, leaf = dotted.split(".")
    for key in parents:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{path}: override {dotted!r}: {key!r} is not a section")
        node = child
    node[leaf] = value


_SOURCE_MODELS: dict[str, type[BaseModel]] = {
    "synthetic": SyntheticSourceConfig,
    "files": FilesSourceConfig,
    "jquants": JQuantsSourceConfig,
}


def _describe(exc: ValidationError, path: Path) -> str:
    lines = [f"{path}: invalid pipeline config"]
    for err in exc.errors():
        raw_loc = [str(p) for p in err["loc"]]
        # Pydantic puts the union tag into the location (source.synthetic.seed); users never write it.
        loc = [p for i, p in enumerate(raw_loc) if not (i == 1 and raw_loc[0] == "source")]
        key = ".".join(loc) or "<top level>"
        if err["type"] == "extra_forbidden":
            lines.append(f"  - unknown key {key!r}{_suggest(raw_loc)}")
        elif err["type"] == "missing":
            lines.append(f"  - missing required key {key!r}")
        else:
            lines.append(f"  - {key}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def _suggest(raw_loc: list[str]) -> str:
    """Name the allowed keys of the section holding the unknown key, and the closest one."""
    model: type[BaseModel] = PipelineConfig
    parents = raw_loc[:-1]
    if parents[:1] == ["source"] and len(parents) >= 2:
        model, parents = _SOURCE_MODELS.get(parents[1], model), parents[2:]
    for part in parents:
        annotation = getattr(model.model_fields.get(part), "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    allowed = list(model.model_fields)
    close = difflib.get_close_matches(raw_loc[-1], allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; allowed here: {', '.join(allowed)}"
