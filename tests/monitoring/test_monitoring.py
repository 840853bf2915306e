"""Realised performance: no row before a label has arrived, and the realised metrics of an independent computation."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atft.config import MonitorConfig, PipelineConfig, load_config
from atft.features.build import build_features
from atft.features.store import feature_dates, read_labels
from atft.ingest import ingest
from atft.monitoring import realised_performance, rolling_check, write_performance
from atft.scoring import write_predictions
from atft.warehouse import Warehouse

VERSION = "v-monitored"


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory, small_market) -> tuple[PipelineConfig, str, list[date]]:
    """30 synthetic stocks over 2022 with their feature table (built through the end: every label is in the table),
    and random predictions of one version for 30 days from mid-year."""
    config = load_config(small_market(tmp_path_factory.mktemp("monitoring"), "monitoring",
                                      features={"execution_lag": 1}))  # fmt: skip
    ingest(config)
    table = build_features(config).table
    with Warehouse(config.warehouse.path) as wh:
        dates = feature_dates(wh.con, table)
        codes = wh.con.execute(f"SELECT DISTINCT Code FROM {table} ORDER BY Code").fetchall()
        rng = np.random.default_rng(0)
        days = dates[120:150]
        keys = [(d, c, VERSION) for d in days for (c,) in codes]
        frame = pd.DataFrame(keys, columns=["Date", "Code", "model_version"])
        for h in config.features.horizons:
            frame[f"pred_{h}d"] = rng.standard_normal(len(frame)).astype(np.float32)
        frame["scored_at"] = pd.Timestamp("2022-12-30")
        write_predictions(wh, frame)
    return config, table, dates


def _realised(config: PipelineConfig, table: str, as_of: date) -> pd.DataFrame:
    with Warehouse(config.warehouse.path, read_only=True) as wh:
        return realised_performance(wh.con, table, list(config.features.horizons), config.features.execution_lag,
                                    as_of, config.evaluation.portfolio)  # fmt: skip


def test_no_row_for_a_prediction_whose_label_has_not_arrived(market) -> None:
    config, table, dates = market
    first = dates[120]
    with Warehouse(config.warehouse.path, read_only=True) as wh:
        assert len(read_labels(wh.con, table, 1, [first])) > 20  # the table holds the labels already...
    assert _realised(config, table, first).empty  # ...but on the day itself it is still in the future
    # Lag 1 plus 1 session: the first day's 1-day label ends two sessions later, and nothing else has ended by then.
    arrived = _realised(config, table, dates[122])
    assert arrived[["Date", "horizon", "label_end"]].values.tolist() == [[first, 1, dates[122]]]
    assert _realised(config, table, dates[121]).empty
    # Twenty sessions on, the days judged at horizon h are those at least lag + h sessions back: none yet at 20d.
    later = _realised(config, table, dates[140])
    assert later.groupby("horizon").size().to_dict() == {1: 19, 5: 15, 10: 10}
    assert (later["label_end"] <= dates[140]).all()


def test_realised_metrics_equal_an_independent_pandas_computation(market) -> None:
    config, table, dates = market
    as_of = dates[-1]
    rows = _realised(config, table, as_of)
    with Warehouse(config.warehouse.path, read_only=True) as wh:
        predictions = wh.con.execute("SELECT * FROM predictions").df()
        labels = wh.con.execute(f"SELECT * FROM {table}").df()
    assert len(rows) == 4 * 30  # every day's label at every horizon has ended by the last day
    quantile = config.evaluation.portfolio.quantile
    for row in rows.sample(12, random_state=1).itertuples():
        h = row.horizon
        day = pd.Timestamp(row.Date)
        p = predictions[predictions["Date"] == day].set_index("Code")[f"pred_{h}d"].astype(float)
        y = labels[(labels["Date"] == day) & labels[f"target_{h}d_valid"]].set_index("Code")[f"target_{h}d"]
        both = pd.concat([p, y], axis=1, join="inner").dropna()
        both.columns = ["p", "y"]
        assert row.stocks == len(both) > 20
        assert math.isclose(row.ic, both["p"].corr(both["y"]), rel_tol=1e-5, abs_tol=1e-9)
        assert math.isclose(row.rank_ic, both["p"].corr(both["y"], method="spearman"), rel_tol=1e-5, abs_tol=1e-9)
        same_side = ((both["p"] - both["p"].mean()) * (both["y"] - both["y"].mean()) > 0).mean()
        assert math.isclose(row.hit_rate, same_side, rel_tol=1e-9)
        k = math.floor(quantile * len(both) + 1e-9)
        ranked = both.sort_values("p")
        spread = ranked["y"].iloc[-k:].mean() - ranked["y"].iloc[:k].mean()
        assert math.isclose(row.ls_return, spread, rel_tol=1e-5, abs_tol=1e-9)
        assert row.label_end == dates[dates.index(row.Date) + config.features.label_span(h)]


def test_judged_rows_are_written_once_and_read_back_by_the_rolling_check(market, tmp_path: Path) -> None:
    config, table, dates = market
    with Warehouse(config.warehouse.path) as wh:
        written = write_performance(wh, realised_performance(
            wh.con, table, [1], config.features.execution_lag, dates[135], config.evaluation.portfolio))  # fmt: skip
        assert written == 14  # days 120..133: each 1-day label ends two sessions later
        again = realised_performance(wh.con, table, [1], config.features.execution_lag, dates[135],
                                     config.evaluation.portfolio)  # fmt: skip
        assert again.empty  # already judged: nothing to do twice
        warming = rolling_check(wh.con, VERSION, dates[135], MonitorConfig(window=20), 1, 0.2)
        assert (warming.status, warming.days) == ("warming_up", 14)
        judged = rolling_check(wh.con, VERSION, dates[135], MonitorConfig(window=10, rank_ic_bound=0.5), 1, 0.2)
        assert judged.status == "degraded" and judged.days == 10 and judged.last == dates[133]
        expected = wh.con.execute(
            "SELECT avg(rank_ic) FROM (SELECT rank_ic FROM performance WHERE horizon = 1 ORDER BY Date DESC LIMIT 10)"
        ).fetchall()[0][0]
        assert math.isclose(judged.rank_ic, expected, rel_tol=1e-12)
        assert rolling_check(wh.con, VERSION, dates[135], MonitorConfig(window=10, rank_ic_bound=-1), 1, None).status \
            == "healthy"  # fmt: skip
