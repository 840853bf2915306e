"""``monitor`` end to end: a published champion whose daily scores turn into noise is flagged ``Degraded`` within
the configured window, and the event that the retrain automation listens for reaches the Prefect API."""

from __future__ import annotations

import json
import time
from datetime import date

import numpy as np
import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

from atft.config import load_config
from atft.features.store import build_state, feature_dates
from atft.registry import Registry
from atft.scoring import write_predictions
from atft.warehouse import Warehouse, read_oracle
from flows.features import build_features
from flows.ingest import ingest
from flows.monitor import DEGRADED_EVENT, monitor
from flows.replay import replay_days
from flows.retrain import rolling_retrain

AS_OF = date(2022, 10, 31)
WINDOW, PRIMARY = 10, 5


@pytest.fixture(scope="module")
def champion(tmp_path_factory, small_market):
    """A small market with a published champion as of October's end, and its feature days."""
    tmp = tmp_path_factory.mktemp("monitor")
    config = small_market(
        tmp, "watched", source={"seed": 6}, retrain={"train_days": 60, "valid_days": 20},
        evaluation={"eval_days": 20, "gates": ["rank_ic_5d >= -1"]},
        monitor={"window": WINDOW, "rank_ic_bound": 0.1},
    )  # fmt: skip
    state = rolling_retrain(config=config, as_of=AS_OF, return_state=True)
    assert state.name == "Published", state.message
    ingest(config=config)  # the quotes after the retrain, as the daily ingests bring them
    build_features(config=config)
    settings = load_config(config)
    with Warehouse(settings.warehouse.path, read_only=True) as wh:
        days = feature_dates(wh.con, build_state(wh.con).table_name)
    return config, settings, state.result().version, days


def _store(settings, version: str, days: list[date], noise: bool) -> None:
    """The champion's rows for ``days``: the synthetic market's oracle scores, or noise in their place."""
    with Warehouse(settings.warehouse.path) as wh:
        frame = read_oracle(wh.con, days[0], days[-1])
        frame["Date"] = pd.to_datetime(frame["Date"]).dt.date
        frame = frame[frame["Date"].isin(days)]
        rng = np.random.default_rng(7)
        for h in settings.features.horizons:
            values = rng.standard_normal(len(frame)) if noise else frame[f"oracle_{h}d"].to_numpy()
            frame[f"pred_{h}d"] = values.astype(np.float32)
        frame = frame[["Date", "Code", *[f"pred_{h}d" for h in settings.features.horizons]]]
        frame.insert(2, "model_version", version)
        frame["scored_at"] = pd.Timestamp("2022-12-30")
        write_predictions(wh, frame)


def _degraded_events(since: float) -> list:
    with get_client(sync_client=True) as client:
        page = client.read_events(
            EventFilter(
                event=EventNameFilter(name=[DEGRADED_EVENT]),
                occurred=EventOccurredFilter(since=pd.Timestamp(since, unit="s", tz="UTC").to_pydatetime()),
            ),
            limit=50,
        )  # fmt: skip  (the client's default, 100, is above the server's maximum in prefect 3.8.8)
    return page.events


def test_noise_in_place_of_the_champion_is_degraded_within_the_window_and_emits_the_event(champion, read_artifacts):
    config, settings, version, days = champion
    start = days.index(AS_OF) + 1
    good, bad = days[start : start + WINDOW], days[start + WINDOW : start + 2 * WINDOW]
    _store(settings, version, good, noise=False)
    _store(settings, version, bad, noise=True)
    lag = settings.features.execution_lag
    began = time.time()

    def judged_through(day: date):  # the monitor's day by which ``day``'s primary label has ended
        return days[days.index(day) + lag + PRIMARY]

    healthy = monitor(config=config, as_of=judged_through(good[-1]), return_state=True)
    assert healthy.name == "Healthy", healthy.message
    assert f"realised RankIC {PRIMARY}d" in healthy.message and "at or above the bound 0.1" in healthy.message
    # Three noisy days among ten: the window still reads the oracle's edge.
    assert monitor(config=config, as_of=judged_through(bad[2]), return_state=True).name == "Healthy"
    degraded = monitor(config=config, as_of=judged_through(bad[-1]), return_state=True)
    assert degraded.is_completed() and degraded.name == "Degraded", degraded.message
    check = degraded.result()
    assert check.version == version and (check.first, check.last, check.days) == (bad[0], bad[-1], WINDOW)
    assert check.evaluation_rank_ic == Registry(settings.registry.path).show(version).metrics["rank_ic_5d"]
    rows = read_artifacts("monitor-watched-champion")[0].data
    assert "Degraded" in rows and version in rows
    chart = read_artifacts("monitor-watched-chart")[0]
    assert chart.data.startswith("data:image/png;base64,") and "Degraded" in chart.description

    for _ in range(50):  # events reach the API through a websocket, a moment after the run
        events = _degraded_events(began)
        if events:
            break
        time.sleep(0.2)
    (event,) = events
    assert event.resource.id == "atft.pipeline.watched" and event.resource["atft.champion"] == version
    assert event.payload["status"] == "degraded" and event.payload["days"] == WINDOW


def test_nothing_published_is_skipped(tmp_path, small_market):
    config = small_market(tmp_path, "unwatched")
    ingest(config=config)
    state = monitor(config=config, return_state=True)
    assert state.name == "Skipped" and "no champion to monitor" in state.message


def test_the_replay_scores_and_judges_each_day_in_order(champion, read_artifacts):
    config, settings, version, days = champion
    start = days.index(AS_OF) + 2 * WINDOW + 1  # after the days the test above wrote by hand
    replayed = days[start : start + 4]
    state = replay_days(config=config, start=replayed[0], end=replayed[-1], return_state=True)
    assert state.is_completed() and state.message.startswith(f"4 days replayed, {replayed[0]}..{replayed[-1]}: ")
    rows = state.result()
    assert [r["day"] for r in rows] == [str(d) for d in replayed]
    assert all(r["monitor"] in {"Healthy", "Degraded"} and version in r["finding"] for r in rows)
    with Warehouse(settings.warehouse.path, read_only=True) as wh:
        scored = wh.con.execute(
            "SELECT Date, count(*) FROM predictions WHERE model_version = ? AND Date BETWEEN ? AND ? GROUP BY Date "
            "ORDER BY Date", [version, replayed[0], replayed[-1]]).fetchall()  # fmt: skip
    assert [d for d, _ in scored] == replayed and all(n == r["stocks"] for (_, n), r in zip(scored, rows, strict=True))
    assert len(json.loads(read_artifacts("replay-watched-days")[0].data)) == 4
