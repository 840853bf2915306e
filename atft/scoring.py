"""Daily scoring: the champion's predictions for every stock trading on one day, stored in the warehouse.

A day is scored from the feature rows up to and including it, and nothing later: the same day scores the same
whether or not later days have been built since. The champion is loaded through the registry, which verifies its
files and refuses a feature table whose columns drifted from its manifest before anything is predicted.

The ``predictions`` table holds one row per (Date, Code, model_version). Rescoring a day with the same version
replaces that day's rows for that version in one transaction; other versions' rows stay beside them.
"""

from __future__ import annotations

import re
from datetime import date

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from atft.config import PipelineConfig
from atft.data.arrays import load_arrays
from atft.data.dataset import history_days
from atft.evaluation import predictions_frame
from atft.prediction import predict_days
from atft.registry import EmptyRegistry, LoadedCheckpoint, Registry
from atft.warehouse import Warehouse

PREDICTIONS_TABLE = "predictions"
PREDICTIONS_DDL = (
    f"CREATE TABLE IF NOT EXISTS {PREDICTIONS_TABLE} (Date DATE NOT NULL, Code VARCHAR NOT NULL, "
    "model_version VARCHAR NOT NULL, scored_at TIMESTAMP NOT NULL, PRIMARY KEY (Date, Code, model_version))"
)
PREDICTION_KEYS: tuple[str, ...] = ("Date", "Code", "model_version")
# Per-horizon columns depend on the champion's horizons, so they are added when a version first brings them.
_VALUE_COLUMN = re.compile(r"^(pred|rank)_\d+d$")
_VALUE_TYPES = {"pred": "FLOAT", "rank": "INTEGER"}


class ScoringError(RuntimeError):
    """A day that cannot be scored: nothing published, a day the feature table lacks, or unusable predictions."""


def load_champion(registry: Registry, con: duckdb.DuckDBPyConnection) -> LoadedCheckpoint:
    """The champion, checksums verified and its manifest checked against its own feature table in ``con``.

    ``CheckpointRefused`` (with the column diff) when the table drifted; ``ScoringError`` when nothing is published.
    """
    try:
        # Without ``table`` the registry checks the champion manifest's own table, the one scoring reads.
        return registry.load(con=con)
    except EmptyRegistry:
        raise ScoringError(f"nothing published yet in {registry.storage.location()}; run a retrain") from None


def score_day(
    con: duckdb.DuckDBPyConnection, checkpoint: LoadedCheckpoint, config: PipelineConfig, as_of: date | None = None
) -> pd.DataFrame:
    """``checkpoint``'s predictions for every stock with a feature row on ``as_of`` (default: the table's last day).

    Columns: Date, Code, model_version, ``pred_<h>d`` per horizon, ``rank_<h>d`` for ``train.primary_horizon``
    (1 = best that day, ties by Code), scored_at (UTC, naive). Rows after ``as_of`` are never read.
    """
    manifest, model = checkpoint.manifest, checkpoint.model
    day = day_to_score(con, manifest.table_name, as_of)
    horizon = config.train.primary_horizon
    if horizon not in model.horizons:
        raise ScoringError(f"train.primary_horizon {horizon} is not one of {checkpoint.version}'s {model.horizons}")
    # Enough history for the model's own lookback and the day graph's full trailing window, as trained.
    arrays = load_arrays(con, manifest, day, day, history=history_days(model.config))
    days = [len(arrays.dates) - 1]
    pred, _, _ = predict_days(model, arrays, days, config)
    pred_columns = [f"pred_{h}d" for h in arrays.horizons]
    frame = predictions_frame(arrays, days, pred)[["Date", "Code", *pred_columns]]
    broken = int((~np.isfinite(frame[pred_columns].to_numpy())).any(axis=1).sum())
    if broken:
        raise ScoringError(f"{checkpoint.version} gave non-finite predictions for {broken} stocks on {day}")
    frame.insert(2, "model_version", checkpoint.version)
    ranks = frame.groupby("Date")[f"pred_{horizon}d"].rank(ascending=False, method="first")
    frame[f"rank_{horizon}d"] = ranks.astype(np.int32)
    frame["scored_at"] = pd.Timestamp.now(tz="UTC").tz_localize(None).floor("us")  # what TIMESTAMP keeps
    return frame


def write_predictions(warehouse: Warehouse, frame: pd.DataFrame) -> None:
    """Replace the rows of each (Date, model_version) in ``frame`` with ``frame``'s, all or nothing.

    A day rescored with the same version is exactly its new rows (a stock no longer scored does not linger).
    """
    missing = [c for c in (*PREDICTION_KEYS, "scored_at") if c not in frame.columns]
    values = [c for c in frame.columns if c not in (*PREDICTION_KEYS, "scored_at")]
    unknown = [c for c in values if not _VALUE_COLUMN.match(c)]
    if missing or unknown:
        raise ValueError(f"predictions need {[*PREDICTION_KEYS, 'scored_at']}; missing {missing}, unknown {unknown}")
    con = warehouse.con
    # Registered outside the transaction: an aborted transaction refuses every statement until its rollback.
    con.register("incoming_predictions", pa.Table.from_pandas(frame, preserve_index=False))
    try:
        with warehouse.transaction():
            con.execute(PREDICTIONS_DDL)
            for column in values:
                kind = column.split("_", 1)[0]
                con.execute(f"ALTER TABLE {PREDICTIONS_TABLE} ADD COLUMN IF NOT EXISTS {column} {_VALUE_TYPES[kind]}")
            con.execute(
                f"DELETE FROM {PREDICTIONS_TABLE} p USING (SELECT DISTINCT Date, model_version FROM "
                "incoming_predictions) i WHERE p.Date = i.Date AND p.model_version = i.model_version"
            )
            con.execute(f"INSERT INTO {PREDICTIONS_TABLE} BY NAME SELECT * FROM incoming_predictions")
    finally:
        con.unregister("incoming_predictions")


def day_to_score(con: duckdb.DuckDBPyConnection, table: str, as_of: date | None) -> date:
    """``as_of`` when ``table`` has it, the table's last day when ``as_of`` is None; ``ScoringError`` otherwise."""
    query = f"SELECT max(Date), coalesce(bool_or(Date = ?), false) FROM {table}"
    last, found = con.execute(query, [as_of]).fetchall()[0]
    if last is None:
        raise ScoringError(f"feature table {table} has no rows; run build-features")
    if as_of is None:
        return last
    if not found:
        raise ScoringError(f"{as_of} is not a day of feature table {table} (its last date is {last})")
    return as_of
