"""Evaluation gates: the checks a challenger's held-out metrics must pass before the model is published.

A gate is a string ``"<metric> <op> <bound>"`` (``rank_ic_5d >= 0.01``) over the metric names of
:func:`atft.metrics.metric_names`, with op one of ``>=``, ``<=``, ``>``, ``<``. Besides the configured gates, two
hard rules always apply, whatever the config says: predictions must be finite for every masked-in stock-day, and
must vary across stocks at every horizon (a collapsed model once shipped with prediction std 0). A NaN metric
never passes. When a champion exists, the challenger must match it on ``champion_metric`` (within the tolerance)
on the same evaluation window, and it must beat each of ``baselines`` (fitted on its own training window, scored on
the same evaluation window) on ``champion_metric`` by at least ``baseline_margin``.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from atft.config import EvaluationConfig
from atft.metrics import LOWER_IS_BETTER, parse_metric_name

# A collapse ratio below this means the predictions are constant up to float noise.
COLLAPSE_RATIO_FLOOR = 1e-6

_OPERATORS = {
    ">=": (operator.ge, "below the bound"),
    "<=": (operator.le, "above the bound"),
    ">": (operator.gt, "not above the bound"),
    "<": (operator.lt, "not below the bound"),
}
_SPEC = re.compile(r"\s*(?P<metric>[^\s<>=]+)\s*(?P<op>>=|<=|>|<)\s*(?P<bound>[^\s<>=]+)\s*")


@dataclass(frozen=True)
class GateSpec:
    """One parsed gate, e.g. ``GateSpec("rank_ic_5d", ">=", 0.01)``."""

    metric: str
    op: str
    bound: float

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


@dataclass(frozen=True)
class GateLine:
    """The outcome of one gate or rule; ``reason`` is the sentence shown to people."""

    name: str
    metric: str
    value: float
    bound: float
    passed: bool
    reason: str


@dataclass(frozen=True)
class GateReport:
    """Every rule and gate, one line each, in the order they were checked."""

    lines: tuple[GateLine, ...]

    @property
    def passed(self) -> bool:
        """True only if every line passed."""
        return all(line.passed for line in self.lines)

    def reasons(self) -> list[str]:
        """The reasons of the failing lines, in order."""
        return [line.reason for line in self.lines if not line.passed]

    def to_rows(self) -> list[dict[str, object]]:
        """One dict per line, for a Prefect table artifact; NaN and inf become None so the rows are strict JSON."""
        return [{k: _json_number(v) for k, v in asdict(line).items()} for line in self.lines]

    def to_dict(self) -> dict[str, object]:
        return {"passed": self.passed, "gates": self.to_rows()}


def parse_gate(spec: str, horizons: Sequence[int]) -> GateSpec:
    """Parse ``"<metric> <op> <bound>"``; ValueError naming the spec (and the valid names) if it cannot be used."""
    match = _SPEC.fullmatch(spec)
    if match is None:
        raise ValueError(
            f"gate {spec!r} is malformed: expected '<metric> <op> <bound>' with op one of "
            f"{', '.join(_OPERATORS)}, e.g. 'rank_ic_5d >= 0.01'"
        )
    try:
        bound = float(match["bound"])
    except ValueError:
        bound = math.nan
    if not math.isfinite(bound):
        raise ValueError(f"gate {spec!r}: the bound {match['bound']!r} is not a finite number")
    try:
        parse_metric_name(match["metric"], horizons)
    except ValueError as exc:
        raise ValueError(f"gate {spec!r}: {exc}") from None
    return GateSpec(match["metric"], match["op"], bound)


def parse_gates(config: EvaluationConfig, horizons: Sequence[int]) -> list[GateSpec]:
    """Every configured gate, and a check of ``champion_metric``: run it before training to fail early."""
    try:
        parse_metric_name(config.champion_metric, horizons)
    except ValueError as exc:
        raise ValueError(f"evaluation.champion_metric: {exc}") from None
    return [parse_gate(spec, horizons) for spec in config.gates]


def evaluate_gates(
    metrics: Mapping[str, float],
    config: EvaluationConfig,
    horizons: Sequence[int],
    champion_metrics: Mapping[str, float] | None = None,
    baseline_metrics: Mapping[str, Mapping[str, float]] | None = None,
) -> GateReport:
    """Judge a challenger's ``metrics`` (from :func:`atft.metrics.evaluate_predictions`).

    Lines, in order: finite predictions; non-constant predictions per horizon; each configured gate; the champion
    comparison; one line per configured baseline. ``champion_metrics`` must come from the champion scored on the
    same window; None means there is no champion yet, which passes. ``baseline_metrics`` are
    :func:`atft.evaluation.evaluate_baselines`' on the same window, one entry per ``config.baselines`` name.
    """
    specs = parse_gates(config, horizons)
    missing = [name for name in config.baselines if name not in (baseline_metrics or {})]
    if missing:
        raise ValueError(f"evaluation.baselines lists {missing} but no metrics were given for them")
    lines = [_finite_rule(metrics), *(_constant_rule(metrics, h) for h in horizons)]
    lines += [_gate_line(spec, _metric(metrics, spec.metric)) for spec in specs]
    lines.append(_champion_line(metrics, champion_metrics, config, horizons))
    lines += [_baseline_line(metrics, name, baseline_metrics[name], config, horizons) for name in config.baselines]
    return GateReport(tuple(lines))


def _finite_rule(metrics: Mapping[str, float]) -> GateLine:
    count = _metric(metrics, "nonfinite_predictions")
    passed = count == 0
    reason = (
        "predictions are finite for every masked-in stock-day"
        if passed
        else f"predictions contain NaN or inf for {count:.0f} masked-in stock-days (summed over horizons)"
    )
    return GateLine("finite predictions", "nonfinite_predictions", count, 0.0, passed, reason)


def _constant_rule(metrics: Mapping[str, float], horizon: int) -> GateLine:
    std, ratio = _metric(metrics, f"pred_std_{horizon}d"), _metric(metrics, f"collapse_ratio_{horizon}d")
    spread = f"median per-day std {std:.4g}, collapse ratio {ratio:.4g}"
    passed = std > 0 and ratio >= COLLAPSE_RATIO_FLOOR
    if passed:
        reason = f"predictions vary across stocks at {horizon}d: {spread}"
    elif math.isnan(std) or math.isnan(ratio):
        reason = (
            f"prediction spread at {horizon}d cannot be measured ({spread}): no day has enough stocks with finite "
            "predictions and varying labels"
        )
    else:
        reason = f"predictions are constant across stocks at {horizon}d: {spread} (floor {COLLAPSE_RATIO_FLOOR:g})"
    return GateLine(
        f"non-constant predictions ({horizon}d)",
        f"collapse_ratio_{horizon}d",
        ratio,
        COLLAPSE_RATIO_FLOOR,
        passed,
        reason,
    )


def _gate_line(spec: GateSpec, value: float) -> GateLine:
    compare, failure = _OPERATORS[spec.op]
    # NaN compares False with everything, but say so explicitly rather than rely on it.
    passed = not math.isnan(value) and compare(value, spec.bound)
    if math.isnan(value):
        reason = f"{spec.metric} is NaN, which never passes {spec.op} {spec.bound:g}"
    elif passed:
        reason = f"{spec.metric} = {value:.4g} {spec.op} {spec.bound:g}: pass"
    else:
        reason = f"{spec.metric} = {value:.4g} is {failure} {spec.bound:g} (needs {spec.op} {spec.bound:g})"
    return GateLine(str(spec), spec.metric, value, spec.bound, passed, reason)


def _champion_line(
    metrics: Mapping[str, float],
    champion_metrics: Mapping[str, float] | None,
    config: EvaluationConfig,
    horizons: Sequence[int],
) -> GateLine:
    name, tolerance = config.champion_metric, config.champion_tolerance
    challenger = _metric(metrics, name)
    if champion_metrics is None:
        return GateLine(f"champion {name}", name, challenger, math.nan, True, "no champion yet")
    champion = _metric(champion_metrics, name)
    op, bound = _better_than(name, champion, -tolerance, horizons)
    values = f"challenger {name} = {challenger:.4g}, champion {champion:.4g}, tolerance {tolerance:g}"
    if math.isnan(challenger):
        passed, verdict = False, "the challenger's value is NaN, which never passes"
    elif math.isnan(champion):
        # A champion whose metric cannot be computed (e.g. it collapsed) must not block its replacement.
        passed, verdict = True, "the champion's value is NaN, so the challenger is not held back: pass"
    else:
        passed = _OPERATORS[op][0](challenger, bound)
        verdict = "pass" if passed else f"worse than the champion by more than the tolerance (needs {op} {bound:.4g})"
    return GateLine(f"champion {name}", name, challenger, bound, passed, f"{values}: {verdict}")


def _baseline_line(
    metrics: Mapping[str, float],
    baseline: str,
    baseline_metrics: Mapping[str, float],
    config: EvaluationConfig,
    horizons: Sequence[int],
) -> GateLine:
    name, margin = config.champion_metric, config.baseline_margin
    challenger, reference = _metric(metrics, name), _metric(baseline_metrics, name)
    op, bound = _better_than(name, reference, margin, horizons)
    values = f"challenger {name} = {challenger:.4g}, {baseline} {reference:.4g}, margin {margin:g}"
    if math.isnan(challenger):
        passed, verdict = False, "the challenger's value is NaN, which never passes"
    elif math.isnan(reference):
        # As for a champion: a baseline that cannot be measured (constant scores) holds nothing back.
        passed, verdict = True, f"{baseline}'s value is NaN (constant scores), so it holds nothing back: pass"
    else:
        passed = _OPERATORS[op][0](challenger, bound)
        verdict = "pass" if passed else f"does not beat {baseline} by the margin (needs {op} {bound:.4g})"
    return GateLine(f"baseline {baseline} {name}", name, challenger, bound, passed, f"{values}: {verdict}")


def _better_than(name: str, reference: float, margin: float, horizons: Sequence[int]) -> tuple[str, float]:
    """The comparison and bound for "better than ``reference`` by ``margin``" on metric ``name`` (a negative
    margin allows trailing it by that much)."""
    if parse_metric_name(name, horizons)[0] in LOWER_IS_BETTER:
        return "<=", reference - margin
    return ">=", reference + margin


def _metric(metrics: Mapping[str, float], name: str) -> float:
    if name not in metrics:
        raise ValueError(f"metrics lack {name!r}; compute them with atft.metrics.evaluate_predictions")
    return float(metrics[name])


def _json_number(value: object) -> object:
    return None if isinstance(value, float) and not math.isfinite(value) else value
