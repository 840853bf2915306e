"""Evaluation gates on metrics of synthetic models: degenerate models are rejected with readable reasons, a good
one passes, the champion comparison works both ways, and unusable gate specs fail loudly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from atft.config import EvaluationConfig, PortfolioConfig
from atft.gates import GateReport, evaluate_gates, parse_gate, parse_gates
from atft.metrics import evaluate_predictions

HORIZONS = [1, 5]
CONFIG = EvaluationConfig()  # rank_ic_5d >= 0.01, collapse_ratio_1d >= 0.05, max_drawdown_5d <= 0.5


def _metrics(kind: str, seed: int = 0) -> dict[str, float]:
    """Metrics of a synthetic model over 40 days x 60 stocks: 'good' tracks the labels, 'negative' anti-tracks
    them, 'constant' predicts 0.1 everywhere, 'nan' is the good model with a few NaN predictions."""
    rng = np.random.default_rng(seed)
    label = 0.02 * rng.standard_normal((40, 60, len(HORIZONS)))
    noise = 0.02 * rng.standard_normal(label.shape)
    pred = {"good": label + noise, "negative": noise - label, "constant": np.full(label.shape, 0.1)}.get(
        kind, label + noise
    )
    if kind == "nan":
        pred[3, :4, 1] = np.nan
    mask = np.ones(label.shape[:2], dtype=bool)
    return evaluate_predictions(pred, label, mask, HORIZONS, PortfolioConfig(top_k=10))


def _failing(report: GateReport) -> str:
    return "\n".join(report.reasons())


def test_good_model_passes_every_gate() -> None:
    report = evaluate_gates(_metrics("good"), CONFIG, HORIZONS)
    assert report.passed, _failing(report)
    assert report.reasons() == []
    names = [line.name for line in report.lines]
    assert names == [
        "finite predictions",
        "non-constant predictions (1d)",
        "non-constant predictions (5d)",
        "rank_ic_5d >= 0.01",
        "collapse_ratio_1d >= 0.05",
        "max_drawdown_5d <= 0.5",
        "champion rank_ic_5d",
    ]
    assert report.lines[3].reason.startswith("rank_ic_5d = 0.") and report.lines[3].reason.endswith(">= 0.01: pass")
    assert report.lines[-1].reason == "no champion yet"


def test_constant_model_is_rejected_even_without_configured_gates() -> None:
    metrics = _metrics("constant")
    report = evaluate_gates(metrics, EvaluationConfig(gates=[]), HORIZONS)
    assert not report.passed
    assert report.reasons() == [
        "predictions are constant across stocks at 1d: median per-day std 0, collapse ratio 0 (floor 1e-06)",
        "predictions are constant across stocks at 5d: median per-day std 0, collapse ratio 0 (floor 1e-06)",
    ]
    with_gates = evaluate_gates(metrics, CONFIG, HORIZONS)
    assert "rank_ic_5d is NaN, which never passes >= 0.01" in with_gates.reasons()


def test_negative_ic_model_is_rejected() -> None:
    report = evaluate_gates(_metrics("negative"), CONFIG, HORIZONS)
    assert not report.passed
    (reason,) = report.reasons()
    assert reason.startswith("rank_ic_5d = -0.")
    assert reason.endswith("is below the bound 0.01 (needs >= 0.01)")


def test_nan_predictions_are_rejected() -> None:
    metrics = _metrics("nan")
    assert metrics["nonfinite_predictions"] == 4
    report = evaluate_gates(metrics, CONFIG, HORIZONS)
    assert report.reasons() == ["predictions contain NaN or inf for 4 masked-in stock-days (summed over horizons)"]


@pytest.mark.parametrize("gate", ["rank_ic_5d >= -1", "rank_ic_5d <= 1", "rank_ic_5d > -1", "rank_ic_5d < 1"])
def test_nan_metric_fails_any_comparison(gate: str) -> None:
    metrics = {**_metrics("good"), "rank_ic_5d": float("nan")}
    report = evaluate_gates(metrics, EvaluationConfig(gates=[gate]), HORIZONS)
    assert not report.passed
    assert report.reasons()[0].startswith("rank_ic_5d is NaN, which never passes")


@pytest.mark.parametrize(
    ("gate", "value", "reason"),
    [
        ("ls_sharpe_5d > 0.5", 0.5, "ls_sharpe_5d = 0.5 is not above the bound 0.5 (needs > 0.5)"),
        ("max_drawdown_5d <= 0.15", 0.2, "max_drawdown_5d = 0.2 is above the bound 0.15 (needs <= 0.15)"),
        ("turnover_1d < 1", 1.0, "turnover_1d = 1 is not below the bound 1 (needs < 1)"),
    ],
)
def test_operator_failures_read_well(gate: str, value: float, reason: str) -> None:
    metric = gate.split()[0]
    report = evaluate_gates({**_metrics("good"), metric: value}, EvaluationConfig(gates=[gate]), HORIZONS)
    assert report.reasons() == [reason]


@pytest.mark.parametrize(
    ("champion_offset", "passed"),
    [(-0.05, True), (0.004, True), (0.02, False)],  # challenger better; trails within 0.005; trails beyond
)
def test_champion_comparison_higher_is_better(champion_offset: float, passed: bool) -> None:
    metrics = _metrics("good")
    champion = {**metrics, "rank_ic_5d": metrics["rank_ic_5d"] + champion_offset}
    line = evaluate_gates(metrics, CONFIG, HORIZONS, champion_metrics=champion).lines[-1]
    assert line.passed is passed
    assert line.bound == pytest.approx(champion["rank_ic_5d"] - 0.005)
    values = f"challenger rank_ic_5d = {metrics['rank_ic_5d']:.4g}, champion {champion['rank_ic_5d']:.4g}"
    assert line.reason.startswith(f"{values}, tolerance 0.005: ")
    if not passed:
        assert "worse than the champion by more than the tolerance" in line.reason


@pytest.mark.parametrize(("champion_drawdown", "passed"), [(0.30, True), (0.21, True), (0.10, False)])
def test_champion_comparison_flips_for_lower_is_better(champion_drawdown: float, passed: bool) -> None:
    config = EvaluationConfig(champion_metric="max_drawdown_5d", champion_tolerance=0.02)
    metrics = {**_metrics("good"), "max_drawdown_5d": 0.22}
    report = evaluate_gates(metrics, config, HORIZONS, {**metrics, "max_drawdown_5d": champion_drawdown})
    assert report.passed is passed
    assert report.lines[-1].bound == pytest.approx(champion_drawdown + 0.02)


def test_nan_champion_does_not_block_but_nan_challenger_fails() -> None:
    metrics = _metrics("good")
    nan_champion = {**metrics, "rank_ic_5d": float("nan")}
    assert evaluate_gates(metrics, CONFIG, HORIZONS, nan_champion).passed
    line = evaluate_gates(nan_champion, EvaluationConfig(gates=[]), HORIZONS, metrics).lines[-1]
    assert not line.passed and "the challenger's value is NaN" in line.reason


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("rank_ic_5d = 0.01", "malformed: expected '<metric> <op> <bound>' with op one of >=, <=, >, <"),
        ("rank_ic_5d >=", "malformed"),
        (">= 0.01", "malformed"),
        ("rank_ic_5d >= abc", "the bound 'abc' is not a finite number"),
        ("rank_ic_5d >= nan", "the bound 'nan' is not a finite number"),
        ("sharpe_5d >= 1", "unknown metric 'sharpe_5d'; known metrics: nonfinite_predictions, ic_1d, rank_ic_1d"),
        ("rank_ic_20d >= 0.01", r"the model has no 20d horizon \(horizons \[1, 5\]\)"),
    ],
)
def test_unusable_gate_specs_raise_naming_the_spec(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=rf"gate {spec!r}.*{message}"):
        parse_gate(spec, HORIZONS)
    with pytest.raises(ValueError, match="gate"):
        evaluate_gates(_metrics("good"), EvaluationConfig(gates=[spec]), HORIZONS)


def test_spec_parsing_and_champion_metric_check() -> None:
    assert parse_gate("  rank_ic_5d>=0.01 ", HORIZONS).bound == 0.01
    assert str(parse_gate("max_drawdown_5d <= 1.5e-1", HORIZONS)) == "max_drawdown_5d <= 0.15"
    assert parse_gate("nonfinite_predictions <= 0", HORIZONS).metric == "nonfinite_predictions"
    with pytest.raises(ValueError, match=r"evaluation\.champion_metric: unknown metric 'rankic_5d'"):
        parse_gates(EvaluationConfig(champion_metric="rankic_5d"), HORIZONS)
    with pytest.raises(
        ValueError, match=r"metrics lack 'nonfinite_predictions'; compute them with atft\.metrics\.evaluate_predictions"
    ):
        evaluate_gates({}, CONFIG, HORIZONS)


def test_report_serialises_to_strict_json() -> None:
    report = evaluate_gates(_metrics("constant"), CONFIG, HORIZONS)
    payload = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert payload["passed"] is False
    assert payload["gates"] == report.to_rows()
    assert set(payload["gates"][0]) == {"name", "metric", "value", "bound", "passed", "reason"}
    assert next(row for row in payload["gates"] if row["metric"] == "rank_ic_5d")["value"] is None
