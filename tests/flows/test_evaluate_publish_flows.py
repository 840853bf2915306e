"""``evaluate`` and ``publish``: gates from the config, champion vs challenger, GateRejected, a loadable version."""

import json
from datetime import date
from pathlib import Path

import duckdb
import pytest

import flows.features as features_flow
import flows.ingest as ingest_flow
import flows.train as train_flow
from atft.config import load_config
from atft.registry import Registry
from flows.evaluate import evaluate
from flows.publish import publish
from flows.references import GateVerdict

WINDOWS = {
    "train_start": date(2022, 5, 2),
    "train_end": date(2022, 8, 31),
    "valid_start": date(2022, 9, 30),
    "valid_end": date(2022, 10, 31),
}
EVAL = {"eval_start": date(2022, 11, 30), "eval_end": date(2022, 12, 28)}


def _gates(verdict: GateVerdict) -> list[dict]:
    return json.loads(Path(verdict.gates_path).read_text())["gates"]


def write_config(small_market, tmp: Path, name: str, gates: list[str]) -> str:
    return small_market(tmp, name, evaluation={"gates": gates, "champion_tolerance": 0.001})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_market):
    tmp = tmp_path_factory.mktemp("evaluate-publish")
    lenient = write_config(small_market, tmp, "lenient", ["rank_ic_5d >= -1", "collapse_ratio_1d >= 0.0001"])
    ingest_flow.ingest(config=lenient)
    ref = features_flow.build_features(config=lenient)
    return tmp, lenient, train_flow.train(config=lenient, features=ref, **WINDOWS)


def test_first_publish_then_champion_vs_challenger_then_rejection(trained, small_market):
    tmp, lenient, staged = trained
    first = evaluate(config=lenient, staged=staged, **EVAL)
    assert first.passed and first.champion is None
    assert _gates(first)[-1]["reason"] == "no champion yet"
    published = publish(config=lenient, staged=staged, verdict=first)
    registry = Registry(tmp / "registry")
    assert registry.champion().champion == published.version
    record = registry.show()
    assert record.metadata["windows"]["eval_start"] == "2022-11-30" and record.metadata["data_fingerprint"]
    scored = json.loads(Path(first.metrics_path).read_text())
    assert record.metrics["rank_ic_5d"] == pytest.approx(scored["rank_ic_5d"])
    # The pictures of the evaluation are kept with the version, checked like its other files.
    version_dir = tmp / "registry" / published.version
    assert sorted(Path(p).name for p in first.charts) == ["chart-evaluation.png", "chart-inputs.png",
                                                          "chart-training.png"]  # fmt: skip
    for path in map(Path, first.charts):
        assert (version_dir / path.name).read_bytes() == path.read_bytes()
    assert registry.verify(published.version) == []

    # The same model again, now facing a champion: scored on the same window, so it ties and passes.
    second = evaluate(config=lenient, staged=staged, **EVAL)
    champion_line = _gates(second)[-1]
    assert second.champion == published.version and champion_line["passed"]
    assert "champion" in champion_line["reason"] and "tolerance 0.001" in champion_line["reason"]

    strict = write_config(small_market, tmp, "strict", ["rank_ic_5d >= 0.9", "ls_sharpe_5d >= 50"])
    rejected = evaluate(config=strict, staged=staged, **EVAL)
    assert not rejected.passed and any("rank_ic_5d" in r and "below the bound 0.9" in r for r in rejected.reasons)
    state = publish(config=strict, staged=staged, verdict=rejected, return_state=True)
    assert state.is_completed() and state.name == "GateRejected"
    assert "rank_ic_5d" in state.message and "ls_sharpe_5d" in state.message
    assert [r.version for r in registry.versions()] == [published.version]  # nothing new was published


def test_a_failure_after_the_write_rolls_the_publish_back(trained, monkeypatch):
    tmp, lenient, staged = trained
    registry = Registry(tmp / "registry")
    verdict = evaluate(config=lenient, staged=staged, **EVAL)
    before = ([r.version for r in registry.versions()], registry.champion().champion)

    def unloadable(*args, **kwargs):
        raise RuntimeError("the new champion does not load")

    monkeypatch.setattr(Registry, "load", unloadable)
    state = publish(config=lenient, staged=staged, verdict=verdict, return_state=True)
    assert state.is_failed() and "does not load" in state.message
    # The version it wrote is gone, and the champion is the one before: the transaction rolled back.
    assert ([r.version for r in registry.versions()], registry.champion().champion) == before
    assert registry.champion().history[-1]["action"] == "withdraw"


def test_the_evaluation_charts_are_image_artifacts(trained, read_artifacts):
    _, lenient, staged = trained
    evaluate(config=lenient, staged=staged, **EVAL)
    for name in ("training", "evaluation", "inputs"):
        (artifact,) = read_artifacts(f"evaluate-lenient-chart-{name}")[:1]
        assert artifact.type == "image" and artifact.data.startswith("data:image/png;base64,")
    assert (Path(staged.staging_dir) / "evaluation" / "curves-challenger.parquet").exists()
    # A curve left by an earlier evaluation (a champion since replaced) is not drawn again.
    stale = Path(staged.staging_dir) / "evaluation" / "curves-champion-vold.parquet"
    stale.write_bytes(b"")
    evaluate(config=lenient, staged=staged, **EVAL)
    assert not stale.exists()


def test_gate_artifacts_are_tables_per_horizon_and_gates(trained, read_artifacts):
    _, lenient, staged = trained
    evaluate(config=lenient, staged=staged, **EVAL)
    rows = json.loads(read_artifacts("evaluate-lenient-gates")[0].data)
    assert rows[0]["name"] == "finite predictions" and {"value", "bound", "passed", "reason"} <= set(rows[0])
    for h in (1, 5, 10, 20):
        table = json.loads(read_artifacts(f"evaluate-lenient-metrics-{h}d")[0].data)
        assert {row["metric"] for row in table} >= {"rank_ic", "ls_sharpe", "max_drawdown", "collapse_ratio"}


def test_a_typo_in_a_gate_fails_before_scoring(trained, small_market):
    tmp, _, staged = trained
    typo = write_config(small_market, tmp, "typo", ["rank_icc_5d >= 0.01"])
    state = evaluate(config=typo, staged=staged, return_state=True, **EVAL)
    assert state.is_failed()
    with pytest.raises(ValueError, match="rank_icc_5d"):
        state.result()


def test_the_published_version_loads_against_the_feature_table(trained):
    tmp, lenient, _ = trained
    with duckdb.connect(str(load_config(lenient).warehouse.path), read_only=True) as con:
        loaded = Registry(tmp / "registry").load(con=con)
    assert loaded.model.width == loaded.manifest.width


def test_baselines_are_fitted_scored_shown_and_gate_the_challenger(trained, small_market, read_artifacts):
    tmp, _, staged = trained
    # A margin no model can clear, so the rejection is certain whatever the tiny market's numbers are.
    config = small_market(tmp, "baselined", evaluation={"gates": [], "baselines": ["ridge", "lightgbm"],
                                                        "baseline_margin": 2.0})  # fmt: skip
    verdict = evaluate(config=config, staged=staged, **EVAL)
    scored = json.loads(Path(verdict.baselines_path).read_text())
    # Each baseline's daily curve is drawn beside the challenger's.
    assert {p.name for p in Path(verdict.baselines_path).parent.glob("curves-*.parquet")} >= {
        "curves-challenger.parquet", "curves-ridge.parquet", "curves-lightgbm.parquet"}  # fmt: skip
    assert set(scored) == {"ridge", "lightgbm"} and all(-1 <= m["rank_ic_5d"] <= 1 for m in scored.values())
    assert not verdict.passed
    lines = {line["name"]: line for line in _gates(verdict)}
    for name in ("ridge", "lightgbm"):
        line = lines[f"baseline {name} rank_ic_5d"]
        assert not line["passed"] and f"{name} {scored[name]['rank_ic_5d']:.4g}" in line["reason"]
    table = json.loads(read_artifacts("evaluate-baselined-metrics-5d")[0].data)
    assert {"challenger", "ridge", "lightgbm"} <= set(table[0])
