"""Realised performance: the daily predictions judged against what the market then did, and the champion's health.

A prediction of day t at horizon h is judged by day t's label, the h-session return entered ``execution_lag``
sessions after t, which ends at the close ``label_span(h)`` sessions after t. Until that close is on or before the
monitor's ``as_of`` there is nothing to judge and no row is written, however far the feature table reaches.

The ``performance`` table holds one row per (model_version, Date, horizon): the day's realised IC, RankIC, hit rate
and the h-day return of its long-short book (before costs), over the stocks with both a prediction and a label.
:func:`rolling_check` compares the last ``monitor.window`` of them with a bound and with the version's own
evaluation-window RankIC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from atft.config import MonitorConfig, PortfolioConfig
from atft.features.store import feature_dates, read_labels
from atft.metrics import daily_hit_rate, daily_ic, daily_rank_ic
from atft.portfolio import long_short_weights
from atft.scoring import PREDICTIONS_TABLE
from atft.warehouse import Warehouse

PERFORMANCE_TABLE = "performance"
PERFORMANCE_DDL = (
    f"CREATE TABLE IF NOT EXISTS {PERFORMANCE_TABLE} (model_version VARCHAR NOT NULL, Date DATE NOT NULL, "
    "horizon INTEGER NOT NULL, label_end DATE NOT NULL, stocks INTEGER NOT NULL, ic DOUBLE, rank_ic DOUBLE, "
    "hit_rate DOUBLE, ls_return DOUBLE, PRIMARY KEY (model_version, Date, horizon))"
)
PERFORMANCE_COLUMNS: tuple[str, ...] = (
    "model_version", "Date", "horizon", "label_end", "stocks", "ic", "rank_ic", "hit_rate", "ls_return",
)  # fmt: skip
Status = Literal["healthy", "degraded", "warming_up"]


def label_ends(dates: list[date], span: int) -> dict[date, date]:
    """Each day of ``dates`` whose label is complete inside them, mapped to the day that label ends on."""
    return {day: dates[i + span] for i, day in enumerate(dates[: max(len(dates) - span, 0)])}


def realised_performance(
    con: duckdb.DuckDBPyConnection,
    table: str,
    horizons: list[int],
    lag: int,
    as_of: date,
    portfolio: PortfolioConfig,
    min_stocks: int = 5,
) -> pd.DataFrame:
    """The ``performance`` rows of every stored prediction whose label has arrived by ``as_of`` and that the table
    does not hold yet, with labels from feature table ``table`` (``target_<h>d`` where valid)."""
    if not _has_table(con, PREDICTIONS_TABLE):
        return pd.DataFrame(columns=list(PERFORMANCE_COLUMNS))
    dates = feature_dates(con, table, through=as_of)
    done = _judged(con)
    frames = []
    for h in horizons:
        ends = label_ends(dates, lag + h)
        if not ends:
            continue
        predictions = _predictions(con, h, max(ends))
        predictions = predictions[predictions["Date"].isin(ends.keys())]
        pending = predictions.merge(done[done["horizon"] == h], on=["model_version", "Date"], how="left")
        predictions = pending[pending["horizon"].isna()].drop(columns="horizon")
        if predictions.empty:
            continue
        labels = read_labels(con, table, h, sorted(predictions["Date"].unique()))
        frames.append(_judge(predictions.merge(labels, on=["Date", "Code"]), h, ends, portfolio, min_stocks))
    if not frames:
        return pd.DataFrame(columns=list(PERFORMANCE_COLUMNS))
    return pd.concat(frames, ignore_index=True)[list(PERFORMANCE_COLUMNS)]


def _judge(
    joined: pd.DataFrame, h: int, ends: dict[date, date], portfolio: PortfolioConfig, min_stocks: int
) -> pd.DataFrame:
    rows = []
    for version, part in joined.groupby("model_version", sort=True):
        pred = part.pivot(index="Date", columns="Code", values=f"pred_{h}d").sort_index()
        label = part.pivot(index="Date", columns="Code", values=f"target_{h}d").reindex_like(pred)
        p, y = pred.to_numpy(dtype=float), label.to_numpy(dtype=float)
        mask = np.isfinite(p) & np.isfinite(y)
        weights = long_short_weights(p, mask, portfolio)
        rows.append(pd.DataFrame({
            "model_version": version,
            "Date": pred.index,
            "horizon": h,
            "label_end": [ends[d] for d in pred.index],
            "stocks": mask.sum(axis=1),
            "ic": daily_ic(p, y, mask, min_stocks),
            "rank_ic": daily_rank_ic(p, y, mask, min_stocks),
            "hit_rate": daily_hit_rate(p, y, mask, min_stocks),
            "ls_return": (weights * np.where(mask, y, 0.0)).sum(axis=1),
        }))  # fmt: skip
    return pd.concat(rows, ignore_index=True)


def write_performance(warehouse: Warehouse, rows: pd.DataFrame) -> int:
    """Insert ``rows`` (replacing any with the same key), all or nothing; returns how many were written."""
    if rows.empty:
        return 0
    con = warehouse.con
    # Registered outside the transaction: an aborted transaction refuses every statement until its rollback.
    con.register("incoming_performance", pa.Table.from_pandas(rows[list(PERFORMANCE_COLUMNS)], preserve_index=False))
    try:
        with warehouse.transaction():
            con.execute(PERFORMANCE_DDL)
            con.execute(
                f"DELETE FROM {PERFORMANCE_TABLE} p USING incoming_performance i WHERE p.model_version = "
                "i.model_version AND p.Date = i.Date AND p.horizon = i.horizon"
            )
            con.execute(f"INSERT INTO {PERFORMANCE_TABLE} BY NAME SELECT * FROM incoming_performance")
    finally:
        con.unregister("incoming_performance")
    return len(rows)


def read_performance(
    con: duckdb.DuckDBPyConnection, version: str, horizon: int, as_of: date, last: int | None = None
) -> pd.DataFrame:
    """``version``'s performance rows at ``horizon`` whose labels ended by ``as_of``, oldest first; only the ``last``
    ones when given."""
    if not _has_table(con, PERFORMANCE_TABLE):
        return pd.DataFrame(columns=list(PERFORMANCE_COLUMNS))
    frame = con.execute(
        f"SELECT * FROM {PERFORMANCE_TABLE} WHERE model_version = ? AND horizon = ? AND label_end <= ? "
        "ORDER BY Date DESC LIMIT ?",
        [version, horizon, as_of, last if last is not None else 2**62],
    ).df()
    frame["Date"] = pd.to_datetime(frame["Date"]).dt.date
    return frame.iloc[::-1].reset_index(drop=True)


@dataclass(frozen=True)
class RollingCheck:
    """The realised record of ``version`` over its last ``days`` judged days (at most ``window``), against
    ``bound`` and against its own evaluation window's RankIC."""

    version: str
    horizon: int
    as_of: date
    window: int
    days: int
    first: date | None
    last: date | None
    rank_ic: float
    ic: float
    hit_rate: float
    ls_return: float
    bound: float
    evaluation_rank_ic: float | None
    status: Status

    def reason(self) -> str:
        if self.status == "warming_up":
            return (f"{self.version}: {self.days} of the {self.window} judged days needed at {self.horizon}d "
                    f"by {self.as_of}; nothing to conclude yet")  # fmt: skip
        verdict = "below" if self.status == "degraded" else "at or above"
        evaluated = self.evaluation_rank_ic
        evaluation = "" if evaluated is None else f", against {evaluated:.4f} on its evaluation window"
        return (f"{self.version}: realised RankIC {self.horizon}d {self.rank_ic:.4f} over {self.days} days "
                f"{self.first}..{self.last}, {verdict} the bound {self.bound:g}{evaluation}")  # fmt: skip


def rolling_check(
    con: duckdb.DuckDBPyConnection,
    version: str,
    as_of: date,
    settings: MonitorConfig,
    horizon: int,
    evaluation_rank_ic: float | None,
) -> RollingCheck:
    """``version``'s health on ``as_of``: degraded when the mean realised RankIC of its last ``settings.window``
    judged days is below ``settings.rank_ic_bound``; warming up while fewer than ``settings.window`` days are judged."""
    frame = read_performance(con, version, horizon, as_of, last=settings.window)
    days = len(frame)
    rank_ic = float(frame["rank_ic"].mean()) if days else float("nan")
    if days < settings.window:
        status: Status = "warming_up"
    else:
        status = "degraded" if not rank_ic >= settings.rank_ic_bound else "healthy"
    return RollingCheck(
        version=version,
        horizon=horizon,
        as_of=as_of,
        window=settings.window,
        days=days,
        first=frame["Date"].iloc[0] if days else None,
        last=frame["Date"].iloc[-1] if days else None,
        rank_ic=rank_ic,
        ic=float(frame["ic"].mean()) if days else float("nan"),
        hit_rate=float(frame["hit_rate"].mean()) if days else float("nan"),
        ls_return=float(frame["ls_return"].mean()) if days else float("nan"),
        bound=settings.rank_ic_bound,
        evaluation_rank_ic=evaluation_rank_ic,
        status=status,
    )


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    found = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]).fetchall()
    return found[0][0] > 0


def _judged(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    if not _has_table(con, PERFORMANCE_TABLE):
        return pd.DataFrame({"model_version": pd.Series(dtype=object), "Date": pd.Series(dtype=object),
                             "horizon": pd.Series(dtype="int64")})  # fmt: skip
    frame = con.execute(f"SELECT model_version, Date, horizon FROM {PERFORMANCE_TABLE}").df()
    frame["Date"] = pd.to_datetime(frame["Date"]).dt.date
    return frame


def _predictions(con: duckdb.DuckDBPyConnection, horizon: int, through: date) -> pd.DataFrame:
    column = f"pred_{horizon}d"
    present = con.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = ? AND column_name = ?",
        [PREDICTIONS_TABLE, column],
    ).fetchall()[0][0]
    if not present:
        return pd.DataFrame({"model_version": [], "Date": [], "Code": [], column: []})
    frame = con.execute(
        f"SELECT model_version, Date, Code, {column} FROM {PREDICTIONS_TABLE} WHERE Date <= ?", [through]
    ).df()
    frame["Date"] = pd.to_datetime(frame["Date"]).dt.date
    return frame
