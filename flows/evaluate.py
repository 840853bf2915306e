"""The ``evaluate`` flow: score a staged challenger, and the champion, on one held-out window; apply the gates.

    from flows.evaluate import evaluate
    verdict = evaluate(config="deployments/demo.yaml", model_ref=staged, eval_start=..., eval_end=...)

``model_ref`` is what ``train`` returned. The challenger's metrics, gate report and predictions are written
next to its staged weights; the flow returns their paths and the verdict, never the predictions themselves.
Artifacts: one metrics table per horizon (challenger, champion and the ``evaluation.baselines`` side by side) and
the gate table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import date
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from atft.config import PipelineConfig, load_config
from atft.evaluation import Evaluation, evaluate_baselines, evaluate_model
from atft.gates import evaluate_gates, parse_gates
from atft.metrics import HORIZON_METRICS
from atft.registry import CheckpointRefused, EmptyRegistry, Registry, RegistryError
from atft.training.session import Windows, load_staged
from atft.warehouse import Warehouse
from flows.cli import run_flow
from flows.naming import named_by_config
from flows.train import check_feature_contract
from schemas.manifest import FeatureManifest

EVALUATION_DIR = "evaluation"  # in the staged directory: metrics.json, baselines.json, gates.json, predictions.parquet


def _key(config: str, suffix: str) -> str:
    return f"evaluate-{Path(config).stem}-{suffix}".replace("_", "-").lower()


@task(name="score-challenger", cache_policy=NO_CACHE, timeout_seconds=3600)
def score_challenger(
    config: str, model_ref: dict[str, Any], eval_start: date, eval_end: date, warehouse: str | None
) -> dict[str, Any]:
    """The staged model's metrics on the window; predictions go to Parquet beside its weights."""
    settings = load_config(config)
    manifest = FeatureManifest.read(model_ref["manifest_path"])
    with Warehouse.of(settings.warehouse, warehouse, read_only=True) as wh:
        result = evaluate_model(
            wh.con, load_staged(Path(model_ref["staging_dir"]), manifest), manifest, settings, eval_start, eval_end
        )
    directory = Path(model_ref["staging_dir"]) / EVALUATION_DIR
    directory.mkdir(exist_ok=True)
    result.predictions.to_parquet(directory / "predictions.parquet", index=False)
    _log_summary("challenger", result, settings)
    return result.metrics


@task(name="score-champion", cache_policy=NO_CACHE, timeout_seconds=3600)
def score_champion(
    config: str, model_ref: dict[str, Any], eval_start: date, eval_end: date, warehouse: str | None
) -> dict[str, Any] | None:
    """The current champion's metrics on the same window, or None (with the reason logged) when there is none
    or it cannot read today's feature table (a retrain after a feature change has nothing to be compared with)."""
    logger = get_run_logger()
    settings = load_config(config)
    registry = Registry(settings.registry.path)
    with Warehouse.of(settings.warehouse, warehouse, read_only=True) as wh:
        try:
            champion = registry.load(con=wh.con, table=model_ref["table"])
        except EmptyRegistry:
            logger.info("no champion yet in %s: the challenger is judged by the gates alone", settings.registry.path)
            return None
        except CheckpointRefused as exc:
            logger.warning("the champion cannot be scored on %s, so it is not compared: %s", model_ref["table"], exc)
            return None
        except RegistryError as exc:
            logger.info("no champion to compare with: %s", exc)
            return None
        result = evaluate_model(wh.con, champion.model, champion.manifest, settings, eval_start, eval_end)
    _log_summary(f"champion {champion.version}", result, settings)
    return {"version": champion.version, "metrics": result.metrics}


@task(name="score-baselines", cache_policy=NO_CACHE, timeout_seconds=3600)
def score_baselines(
    config: str, model_ref: dict[str, Any], eval_start: date, eval_end: date, warehouse: str | None
) -> dict[str, dict[str, float]]:
    """Each of ``evaluation.baselines`` fitted on the challenger's own training window, scored on the same window."""
    settings = load_config(config)
    if not settings.evaluation.baselines:
        return {}
    manifest = FeatureManifest.read(model_ref["manifest_path"])
    windows = Windows(**{k: _as_date(v) for k, v in model_ref["windows"].items()})
    with Warehouse.of(settings.warehouse, warehouse, read_only=True) as wh:
        results = evaluate_baselines(wh.con, manifest, settings, windows, eval_start, eval_end)
    h = settings.train.primary_horizon
    for name, metrics in results.items():
        get_run_logger().info(
            "baseline %s on %s..%s: RankIC %dd %.4f, long-short Sharpe %.2f",
            name, eval_start, eval_end, h, metrics[f"rank_ic_{h}d"], metrics[f"ls_sharpe_{h}d"],
        )  # fmt: skip
    return results


def _as_date(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


def _log_summary(who: str, result: Evaluation, settings: PipelineConfig) -> None:
    h = settings.train.primary_horizon
    m = result.metrics
    get_run_logger().info(
        "%s on %s..%s (%d days): RankIC %dd %.4f (RankICIR %.2f), IC %.4f, long-short Sharpe %.2f, max drawdown %.1f%%",
        who, result.start, result.end, result.days, h, m[f"rank_ic_{h}d"], m[f"rank_icir_{h}d"], m[f"ic_{h}d"],
        m[f"ls_sharpe_{h}d"], 100 * m[f"max_drawdown_{h}d"],
    )  # fmt: skip


def _metric_tables(
    config: str,
    metrics: dict[str, float],
    champion: dict[str, Any] | None,
    baselines: dict[str, dict[str, float]],
    horizons: list[int],
) -> None:
    columns = {"challenger": metrics, **baselines}
    if champion is not None:
        columns[f"champion {champion['version']}"] = champion["metrics"]
    for h in horizons:
        rows = []
        for base in HORIZON_METRICS:
            rows.append({"metric": base} | {who: _number(m[f"{base}_{h}d"]) for who, m in columns.items()})
        create_table_artifact(key=_key(config, f"metrics-{h}d"), table=rows, description=f"Held-out metrics, {h}d")


def _number(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 6)  # NaN is not JSON


@flow(name="evaluate", flow_run_name=named_by_config("evaluate"))
def evaluate(
    config: str, model_ref: dict[str, Any], eval_start: date, eval_end: date, warehouse: str | None = None
) -> dict[str, Any]:
    """Metrics and gates of the staged challenger on [eval_start, eval_end], against the champion if any.

    Returns ``{"passed", "reasons", "gates", "metrics_path", "gates_path", "predictions_path", "champion", ...}``.
    """
    settings = load_config(config)
    horizons = list(settings.features.horizons)
    parse_gates(settings.evaluation, horizons)  # a typo in a gate fails here, before any scoring
    check_feature_contract(config, model_ref, warehouse)
    metrics = score_challenger(config, model_ref, eval_start, eval_end, warehouse)
    champion = score_champion(config, model_ref, eval_start, eval_end, warehouse)
    baselines = score_baselines(config, model_ref, eval_start, eval_end, warehouse)
    report = evaluate_gates(
        metrics, settings.evaluation, horizons, None if champion is None else champion["metrics"], baselines
    )
    directory = Path(model_ref["staging_dir"]) / EVALUATION_DIR
    (directory / "metrics.json").write_text(json.dumps(_json_metrics(metrics), indent=2))
    (directory / "baselines.json").write_text(
        json.dumps({name: _json_metrics(m) for name, m in baselines.items()}, indent=2)
    )
    (directory / "gates.json").write_text(json.dumps(report.to_dict(), indent=2))
    _metric_tables(config, metrics, champion, baselines, horizons)
    create_table_artifact(
        key=_key(config, "gates"),
        table=report.to_rows(),
        description=f"Gates: {'PASSED' if report.passed else 'REJECTED'}",
    )
    logger = get_run_logger()
    for line in report.lines:
        logger.info("%s %s", "PASS" if line.passed else "FAIL", line.reason)
    return {
        "passed": report.passed,
        "reasons": report.reasons(),
        "gates": report.to_dict(),
        "metrics_path": str(directory / "metrics.json"),
        "baselines_path": str(directory / "baselines.json"),
        "gates_path": str(directory / "gates.json"),
        "predictions_path": str(directory / "predictions.parquet"),
        "champion": None if champion is None else champion["version"],
        "eval_start": eval_start,
        "eval_end": eval_end,
    }


def _json_metrics(metrics: dict[str, float]) -> dict[str, float | None]:
    return {name: _number(value) for name, value in metrics.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate a staged model and apply the gates.")
    parser.add_argument("config")
    parser.add_argument("model_ref", help="JSON of the train flow's result")
    parser.add_argument("--eval-start", type=date.fromisoformat, required=True)
    parser.add_argument("--eval-end", type=date.fromisoformat, required=True)
    args = parser.parse_args(argv)
    state, code = run_flow(
        evaluate,
        config=args.config,
        model_ref=json.loads(args.model_ref),
        eval_start=args.eval_start,
        eval_end=args.eval_end,
    )
    if code == 0:
        print(state.result())
    return code


if __name__ == "__main__":
    sys.exit(main())
