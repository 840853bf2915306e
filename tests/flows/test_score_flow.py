"""``score``: the champion's daily predictions in the warehouse, artifacts, and the runs that must fail loudly."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import duckdb
import pytest

import flows.evaluate as evaluate_flow
import flows.features as features_flow
import flows.ingest as ingest_flow
import flows.publish as publish_flow
import flows.train as train_flow
from atft.registry import CheckpointRefused
from atft.scoring import ScoringError
from flows.references import ScoredDay
from flows.score import main, score

# Short windows: the flows only need a champion to exist, not a good one.
WINDOWS = {
    "train_start": date(2022, 6, 1),
    "train_end": date(2022, 6, 17),
    "valid_start": date(2022, 7, 19),
    "valid_end": date(2022, 7, 29),
}
EVAL = {"eval_start": date(2022, 8, 29), "eval_end": date(2022, 9, 9)}


LENIENT = {"gates": ["rank_ic_5d >= -1", "collapse_ratio_1d >= 0.0001"]}


@pytest.fixture(scope="module")
def published(tmp_path_factory, small_market):
    """A synthetic market through ingest, features, train, lenient gates and publish: a champion to score with."""
    tmp = tmp_path_factory.mktemp("score")
    config = small_market(tmp, "daily", evaluation=LENIENT)
    ingest_flow.ingest(config=config)
    ref = features_flow.build_features(config=config)
    staged = train_flow.train(config=config, features=ref, **WINDOWS)
    verdict = evaluate_flow.evaluate(config=config, staged=staged, **EVAL)
    version = publish_flow.publish(config=config, staged=staged, verdict=verdict).version
    return tmp, config, version, ref.table


def rows_by_day(path: Path) -> dict[tuple[date, str], int]:
    with duckdb.connect(str(path), read_only=True) as con:
        found = con.execute("SELECT Date, model_version, count(*) FROM predictions GROUP BY ALL").fetchall()
    return {(day, version): n for day, version, n in found}


def last_feature_day(path: Path, table: str) -> tuple[date, int]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(f"SELECT Date, count(*) FROM {table} GROUP BY Date ORDER BY Date DESC LIMIT 1").fetchall()[0]


def test_score_writes_the_champions_predictions_and_artifacts(published, read_artifacts, capsys):
    tmp, config, version, table = published
    last, stocks = last_feature_day(tmp / "market.duckdb", table)
    result = score(config=config)
    assert result == ScoredDay(version=version, as_of=last, stocks=stocks, feature_table=table, table="predictions")
    assert rows_by_day(tmp / "market.duckdb") == {(last, version): stocks}

    ranking = json.loads(read_artifacts("score-daily-top")[0].data)
    assert [r["end"] for r in ranking] == ["top"] * 10 + ["bottom"] * 10
    assert [r["rank"] for r in ranking] == [*range(1, 11), *range(stocks - 9, stocks + 1)]
    assert ranking[0]["pred_5d"] >= ranking[-1]["pred_5d"]
    summary = read_artifacts("score-daily-summary")[0].data
    assert version in summary and str(last) in summary and f"| stocks scored | {stocks} |" in summary
    drift = json.loads(read_artifacts("score-daily-drift")[0].data)  # the day's inputs, most drifted first
    assert len(drift) == 15 and drift[0]["psi"] >= drift[-1]["psi"] >= 0

    # Rescoring the same day (here from the command line) replaces the rows; an earlier day adds its own.
    main([config, "--as-of", str(last)])
    assert f'"as_of": "{last}"' in capsys.readouterr().out
    earlier = score(config=config, as_of=EVAL["eval_end"])
    assert rows_by_day(tmp / "market.duckdb") == {
        (last, version): stocks,
        (EVAL["eval_end"], version): earlier.stocks,
    }


@pytest.mark.parametrize(
    ("drift", "named"),
    [("RENAME COLUMN Code TO code", "code"), ("DROP COLUMN ret_5d_cs_z", "ret_5d_cs_z")],
    ids=["code-renamed", "cs-z-dropped"],
)
def test_a_drifted_feature_table_fails_the_run_before_scoring(published, read_artifacts, tmp_path, drift, named):
    tmp, config, _, table = published
    copy = str(shutil.copy(tmp / "market.duckdb", tmp_path / "drifted.duckdb"))
    score(config=config, warehouse=copy, as_of=EVAL["eval_end"])
    before = rows_by_day(copy)
    with duckdb.connect(copy) as con:
        con.execute(f"ALTER TABLE {table} {drift}")

    state = score(config=config, warehouse=copy, return_state=True)
    assert state.is_failed() and named in state.message
    with pytest.raises(CheckpointRefused, match=named):
        state.result()
    assert rows_by_day(copy) == before
    assert named in read_artifacts("score-daily-contract")[0].data


def test_no_champion_fails_with_a_clear_message(published, tmp_path, small_market):
    tmp, _, _, _ = published
    empty = tmp_path / "registry"
    config = small_market(tmp, "unpublished", evaluation=LENIENT, registry={"path": str(empty)})
    state = score(config=config, return_state=True)
    assert state.is_failed()
    with pytest.raises(ScoringError, match=f"nothing published yet in {empty}; run a retrain"):
        state.result()


def test_a_day_missing_from_the_feature_table_fails_naming_the_last_date(published):
    tmp, config, _, table = published
    last, _ = last_feature_day(tmp / "market.duckdb", table)
    state = score(config=config, as_of=date(2023, 1, 4), return_state=True)
    assert state.is_failed()
    with pytest.raises(
        ScoringError, match=f"2023-01-04 is not a day of feature table {table} \\(its last date is {last}\\)"
    ):
        state.result()


def test_inputs_past_the_drift_bound_fail_the_run_naming_them_and_nothing_is_written(
    published, small_market, read_artifacts
):
    tmp, _, version, _ = published
    # The same market and registry, with a bound every input exceeds: the run must stop before writing.
    strict = small_market(tmp, "drifting", evaluation=LENIENT, drift={"fail_psi": 1e-9, "shown": 5})
    before = rows_by_day(tmp / "market.duckdb")
    state = score(config=strict, as_of=EVAL["eval_end"], return_state=True)
    assert state.is_failed() and "drifted past drift.fail_psi 1e-09" in state.message and "PSI" in state.message
    assert rows_by_day(tmp / "market.duckdb") == before
    artifact = read_artifacts("score-drifting-drift")[0]
    listed = json.loads(artifact.data)
    assert version in artifact.description and len(listed) == 5 and listed[0]["psi"] >= listed[-1]["psi"]
    assert {"input", "group", "psi", "ks", "reference_mean", "day_mean"} <= set(listed[0])
