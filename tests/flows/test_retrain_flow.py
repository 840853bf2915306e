"""``rolling-retrain`` end to end on a small synthetic market: published, rejected, skipped, and refused on drift."""

import shutil
from datetime import date
from pathlib import Path

import duckdb
import pytest
import yaml

import atft.config
import flows.retrain as retrain_flow
import flows.train as train_flow
from atft.calendar import TradingCalendar
from atft.registry import Registry
from flows.features import build_features
from flows.retrain import rolling_retrain
from flows.score import score

AS_OF = date(2022, 12, 23)
NEXT = date(2022, 12, 28)
HOLIDAY = date(2022, 11, 3)  # Culture Day: the Tokyo exchange is closed


@pytest.fixture(scope="module")
def market(tmp_path_factory, small_market):
    tmp = tmp_path_factory.mktemp("retrain")
    windows = {"source": {"seed": 6}, "retrain": {"train_days": 60, "valid_days": 20}}
    lenient = small_market(
        tmp,
        "lenient",
        **windows,
        evaluation={"eval_days": 20, "gates": ["rank_ic_5d >= -1", "collapse_ratio_1d >= 0.0001"]},
    )
    strict = small_market(tmp, "strict", **windows, evaluation={"eval_days": 20, "gates": ["rank_ic_5d >= 0.9"]})
    return tmp, lenient, strict


def test_published_then_rejected_then_skipped_on_a_holiday(market, read_artifacts, monkeypatch):
    tmp, lenient, strict = market
    parses, checks = _count(monkeypatch, atft.config, "load_config"), _count(monkeypatch, train_flow, "check_features")
    first = rolling_retrain(config=lenient, as_of=AS_OF, return_state=True)
    assert first.is_completed() and first.name == "Published", first.message
    # The config is parsed once for the whole run, and the feature table's contract checked once.
    assert (len(parses), len(checks)) == (1, 1)
    version = first.result().version
    registry = Registry(tmp / "registry")
    assert registry.champion().champion == version
    # The version records the settings the run used, and the frozen file they were read from.
    used = registry.show().metadata["config"]
    assert used["name"] == "lenient" and yaml.safe_load(Path(used["frozen_file"]).read_text())["name"] == "lenient"
    windows = registry.show().metadata["windows"]
    # The evaluation ends a 20-day horizon before the as-of date: every label it is judged on is known by then.
    after_eval = TradingCalendar("XTKS").sessions(date.fromisoformat(windows["eval_end"]), AS_OF)
    assert len(after_eval) == 21 and windows["train_end"] < windows["valid_start"] < windows["eval_start"]
    report = read_artifacts("retrain-lenient-report")[0].data
    assert "Published" in report and version in report

    second = rolling_retrain(config=strict, as_of=NEXT, return_state=True)
    assert second.is_completed() and second.name == "GateRejected"
    assert "rank_ic_5d" in second.message and "below the bound 0.9" in second.message
    assert registry.champion().champion == version and len(registry.versions()) == 1
    assert "GateRejected" in read_artifacts("retrain-strict-report")[0].data

    skipped = rolling_retrain(config=lenient, as_of=HOLIDAY, return_state=True)
    assert skipped.is_completed() and skipped.name == "Skipped" and "not a XTKS trading day" in skipped.message


def _count(monkeypatch, module, name: str) -> list:
    """Every call of ``module.name`` from now on, recorded while the original still runs."""
    calls, original = [], getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


@pytest.mark.parametrize(
    ("drift", "named"),
    [
        ('ALTER TABLE {table} RENAME COLUMN "Code" TO "code"', "code"),
        ('ALTER TABLE {table} DROP COLUMN "ret_5d_cs_z"', "ret_5d_cs_z"),
    ],
    ids=["Code-renamed-code", "cs-z-column-dropped"],
)
def test_drifted_features_fail_the_run_before_training_starts(market, monkeypatch, tmp_path, drift, named):
    tmp, lenient, _ = market
    build_features(config=lenient, as_of=AS_OF)  # cached when the first test built it
    drifted = tmp_path / "drifted.duckdb"
    shutil.copy(tmp / "market.duckdb", drifted)
    with duckdb.connect(str(drifted)) as con:
        (table,) = con.execute("SELECT table_name FROM feature_builds").fetchall()[0]
        con.execute(drift.format(table=table))
    trained = []
    monkeypatch.setattr(train_flow, "train_model", lambda *a, **k: trained.append(1))
    state = rolling_retrain(config=lenient, as_of=AS_OF, warehouse=str(drifted), return_state=True)
    assert state.is_failed() and trained == []
    assert "ContractViolation" in state.message and named in state.message


def _publishable(small_market, tmp, name: str, **sections):
    """A small market whose retrains pass the gates (they test publication, not skill), with its own registry."""
    return small_market(
        tmp,
        name,
        source={"seed": 6},
        retrain={"train_days": 60, "valid_days": 20},
        evaluation={"eval_days": 20, "gates": ["rank_ic_5d >= -1", "collapse_ratio_1d >= 0.0001"]},
        registry={"path": str(tmp / f"{name}-registry")},
        **sections,
    )


def test_a_warm_retrain_fine_tunes_the_champion_and_records_where_it_started(market, small_market, read_artifacts):
    tmp, _, _ = market
    config = _publishable(
        small_market, tmp, "warm", train={"epochs": 2, "warm_start": "champion", "warm_start_epochs": 1}
    )
    cold = rolling_retrain(config=config, as_of=AS_OF, return_state=True)
    assert cold.name == "Published", cold.message
    registry = Registry(tmp / "warm-registry")
    first = cold.result().version
    assert registry.show(first).metadata["warm_start"]["from_version"] is None
    assert registry.show(first).metadata["warm_start"]["reason"].startswith("no champion in")
    assert "started from | scratch (no champion in" in read_artifacts("retrain-warm-report")[0].data

    warm = rolling_retrain(config=config, as_of=NEXT, return_state=True)
    assert warm.name == "Published", warm.message
    second = registry.show(warm.result().version)
    assert second.metadata["warm_start"] == second.model["warm_start"]
    assert second.metadata["warm_start"]["from_version"] == first
    assert f"started from | {first} |" in read_artifacts("retrain-warm-report")[0].data


def test_a_seed_ensemble_is_trained_published_and_scored_as_one_model(market, small_market, read_artifacts):
    tmp, _, _ = market
    config = _publishable(small_market, tmp, "ensemble", model={"ensemble": 2})
    state = rolling_retrain(config=config, as_of=AS_OF, return_state=True)
    assert state.name == "Published", state.message
    record = Registry(tmp / "ensemble-registry").show(state.result().version)
    assert record.model["config"]["ensemble"] == 2 and len(record.model["member_best_epochs"]) == 2
    assert "seed ensemble of 2, best epochs 1, 1 (2 epochs in all)" in read_artifacts("retrain-ensemble-report")[0].data
    scored = score(config=config, as_of=AS_OF)
    with duckdb.connect(str(tmp / "market.duckdb"), read_only=True) as con:
        low, high, n = con.execute(
            "SELECT min(pred_5d), max(pred_5d), count(*) FROM predictions WHERE model_version = ?", [scored.version]
        ).fetchone()
    # Mean per-day ranks of two members, centred and scaled by √12: inside ±√3, and spread over the day's stocks.
    assert n == scored.stocks > 0 and -(3**0.5) < low < 0 < high < 3**0.5


def test_a_config_edited_during_training_does_not_change_the_rest_of_the_run(market, small_market, monkeypatch):
    tmp, _, _ = market
    config = _publishable(small_market, tmp, "edited")
    real_train = retrain_flow.train

    def train_then_edit(*args, **kwargs):
        staged = real_train(*args, **kwargs)
        # Someone tightens the gates while the model trains: this run was resolved before, and must not see it.
        edited = yaml.safe_load(Path(config).read_text())
        edited["evaluation"]["gates"] = ["rank_ic_5d >= 0.99"]
        Path(config).write_text(yaml.safe_dump(edited))
        return staged

    monkeypatch.setattr(retrain_flow, "train", train_then_edit)
    state = rolling_retrain(config=config, as_of=AS_OF, return_state=True)
    assert state.name == "Published", state.message
    # The next run reads the edited file.
    monkeypatch.setattr(retrain_flow, "train", real_train)
    assert rolling_retrain(config=config, as_of=NEXT, return_state=True).name == "GateRejected"
