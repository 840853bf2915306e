"""The ``evaluate`` flow: score a staged challenger, and the champion, on one held-out window; apply the gates.

    from flows.evaluate import evaluate
    verdict = evaluate(config="deployments/demo.yaml", staged=staged, eval_start=..., eval_end=...)

``staged`` is what ``train`` returned. The challenger's metrics, gate report and predictions are written
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

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_image_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from atft.charts import daily_rank_ic_and_equity, data_url, input_weights, training_curves
from atft.config import PipelineConfig
from atft.evaluation import Evaluation, evaluate_baselines, evaluate_model
from atft.gates import evaluate_gates, parse_gates
from atft.metrics import HORIZON_METRICS
from atft.registry import CheckpointRefused, EmptyRegistry, Registry, RegistryError
from atft.registry.integrity import HISTORY
from atft.training.session import load_staged
from flows.cli import reference, run_flow
from flows.naming import named_by_config
from flows.references import GateVerdict, Overrides, RunConfig, StagedModel, resolve
from flows.train import checked

# In the staged directory: metrics.json, baselines.json, gates.json, predictions.parquet, the daily curves of every
# source (curves-<source>.parquet), the challenger's input weights and the charts (chart-<name>.png).
EVALUATION_DIR = "evaluation"


@task(name="score-challenger", cache_policy=NO_CACHE, timeout_seconds=3600)
def score_challenger(config: RunConfig, staged: StagedModel, eval_start: date, eval_end: date) -> dict[str, float]:
    """The staged model's metrics on the window; predictions go to Parquet beside its weights."""
    settings = config.settings
    manifest = staged.features.manifest()
    with config.warehouse() as wh:
        model = load_staged(Path(staged.staging_dir), manifest)
        result = evaluate_model(wh.con, model, manifest, settings, eval_start, eval_end, input_weights=True)
    directory = _evaluation_dir(staged)
    for stale in directory.glob("curves-*.parquet"):  # an earlier evaluation's champion must not be drawn again
        stale.unlink()
    result.predictions.to_parquet(directory / "predictions.parquet", index=False)
    result.curves.to_parquet(directory / "curves-challenger.parquet")
    if result.input_weights is not None:
        result.input_weights.to_frame().to_parquet(directory / "input-weights.parquet")
    _log_summary("challenger", result, settings)
    return result.metrics


def _evaluation_dir(staged: StagedModel) -> Path:
    directory = Path(staged.staging_dir) / EVALUATION_DIR
    directory.mkdir(exist_ok=True)
    return directory


@task(name="score-champion", cache_policy=NO_CACHE, timeout_seconds=3600)
def score_champion(config: RunConfig, staged: StagedModel, eval_start: date, eval_end: date) -> dict[str, Any] | None:
    """The current champion's metrics on the same window, or None (with the reason logged) when there is none
    or it cannot read today's feature table (a retrain after a feature change has nothing to be compared with)."""
    logger = get_run_logger()
    settings = config.settings
    registry = Registry(settings.registry.path)
    table = staged.features.table
    with config.warehouse() as wh:
        try:
            champion = registry.load(con=wh.con, table=table)
        except EmptyRegistry:
            logger.info("no champion yet in %s: the challenger is judged by the gates alone", settings.registry.path)
            return None
        except CheckpointRefused as exc:
            logger.warning("the champion cannot be scored on %s, so it is not compared: %s", table, exc)
            return None
        except RegistryError as exc:
            logger.info("no champion to compare with: %s", exc)
            return None
        result = evaluate_model(wh.con, champion.model, champion.manifest, settings, eval_start, eval_end)
    result.curves.to_parquet(_evaluation_dir(staged) / f"curves-champion-{champion.version.lower()}.parquet")
    _log_summary(f"champion {champion.version}", result, settings)
    return {"version": champion.version, "metrics": result.metrics}


@task(name="score-baselines", cache_policy=NO_CACHE, timeout_seconds=3600)
def score_baselines(
    config: RunConfig, staged: StagedModel, eval_start: date, eval_end: date
) -> dict[str, dict[str, float]]:
    """Each of ``evaluation.baselines`` fitted on the challenger's own training window, scored on the same window."""
    settings = config.settings
    if not settings.evaluation.baselines:
        return {}
    with config.warehouse() as wh:
        results = evaluate_baselines(wh.con, staged.features.manifest(), settings, staged.windows, eval_start, eval_end)
    h = settings.train.primary_horizon
    for name, result in results.items():
        result.curves.to_parquet(_evaluation_dir(staged) / f"curves-{name}.parquet")
        get_run_logger().info(
            "baseline %s on %s..%s: RankIC %dd %.4f, long-short Sharpe %.2f",
            name, eval_start, eval_end, h, result.metrics[f"rank_ic_{h}d"], result.metrics[f"ls_sharpe_{h}d"],
        )  # fmt: skip
    return {name: result.metrics for name, result in results.items()}


@task(name="draw-evaluation", cache_policy=NO_CACHE)
def draw_evaluation(config: RunConfig, staged: StagedModel) -> list[str]:
    """The pictures of the evaluation, as PNG files beside it and as image artifacts: training curves, the window's
    daily RankIC and long-short equity of every source, and the inputs the challenger looks at. Returns the paths."""
    directory = _evaluation_dir(staged)
    h = config.settings.train.primary_horizon
    charts = {"training": training_curves(json.loads((Path(staged.staging_dir) / HISTORY).read_text()))}
    curves = {path.stem.removeprefix("curves-"): pd.read_parquet(path) for path in sorted(directory.glob("curves-*"))}
    charts["evaluation"] = daily_rank_ic_and_equity(
        {who: frame[f"rank_ic_{h}d"] for who, frame in curves.items()},
        {who: frame[f"equity_{h}d"] for who, frame in curves.items()},
        f"{h}d, evaluation window",
    )
    weights = directory / "input-weights.parquet"
    if weights.exists():
        groups = {f.name: f.group for f in staged.features.manifest().features}
        charts["inputs"] = input_weights(pd.read_parquet(weights)["weight"], groups)
    paths = []
    for name, image in charts.items():
        path = directory / f"chart-{name}.png"
        path.write_bytes(image)
        create_image_artifact(image_url=data_url(image), key=config.key("evaluate", f"chart-{name}"),
                              description=f"{staged.model} {name} ({path})")  # fmt: skip
        paths.append(str(path))
    return paths


def _log_summary(who: str, result: Evaluation, settings: PipelineConfig) -> None:
    h = settings.train.primary_horizon
    m = result.metrics
    get_run_logger().info(
        "%s on %s..%s (%d days): RankIC %dd %.4f (RankICIR %.2f), IC %.4f, long-short Sharpe %.2f, max drawdown %.1f%%",
        who, result.start, result.end, result.days, h, m[f"rank_ic_{h}d"], m[f"rank_icir_{h}d"], m[f"ic_{h}d"],
        m[f"ls_sharpe_{h}d"], 100 * m[f"max_drawdown_{h}d"],
    )  # fmt: skip


def _metric_tables(
    config: RunConfig,
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
        create_table_artifact(
            key=config.key("evaluate", f"metrics-{h}d"), table=rows, description=f"Held-out metrics, {h}d"
        )


def _number(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 6)  # NaN is not JSON


@flow(name="evaluate", flow_run_name=named_by_config("evaluate"))
def evaluate(
    config: str | RunConfig,
    staged: StagedModel,
    eval_start: date,
    eval_end: date,
    warehouse: str | None = None,
    overrides: Overrides = None,
) -> GateVerdict:
    """Metrics and gates of the staged challenger on [eval_start, eval_end], against the champion if any.

    Returns the verdict and the paths of the metrics, baselines, gates and predictions written beside the weights.
    """
    config = resolve(config, warehouse, overrides)
    settings = config.settings
    horizons = list(settings.features.horizons)
    parse_gates(settings.evaluation, horizons)  # a typo in a gate fails here, before any scoring
    staged = staged.model_copy(update={"features": checked(config, staged.features)})
    metrics = score_challenger(config, staged, eval_start, eval_end)
    champion = score_champion(config, staged, eval_start, eval_end)
    baselines = score_baselines(config, staged, eval_start, eval_end)
    charts = draw_evaluation(config, staged)
    report = evaluate_gates(
        metrics, settings.evaluation, horizons, None if champion is None else champion["metrics"], baselines
    )
    directory = Path(staged.staging_dir) / EVALUATION_DIR
    (directory / "metrics.json").write_text(json.dumps(_json_metrics(metrics), indent=2))
    (directory / "baselines.json").write_text(
        json.dumps({name: _json_metrics(m) for name, m in baselines.items()}, indent=2)
    )
    (directory / "gates.json").write_text(json.dumps(report.to_dict(), indent=2))
    _metric_tables(config, metrics, champion, baselines, horizons)
    create_table_artifact(
        key=config.key("evaluate", "gates"),
        table=report.to_rows(),
        description=f"Gates: {'PASSED' if report.passed else 'REJECTED'}",
    )
    logger = get_run_logger()
    for line in report.lines:
        logger.info("%s %s", "PASS" if line.passed else "FAIL", line.reason)
    return GateVerdict(
        passed=report.passed,
        reasons=report.reasons(),
        champion=None if champion is None else champion["version"],
        eval_start=eval_start,
        eval_end=eval_end,
        metrics_path=str(directory / "metrics.json"),
        baselines_path=str(directory / "baselines.json"),
        gates_path=str(directory / "gates.json"),
        predictions_path=str(directory / "predictions.parquet"),
        charts=charts,
    )


def _json_metrics(metrics: dict[str, float]) -> dict[str, float | None]:
    return {name: _number(value) for name, value in metrics.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate a staged model and apply the gates.")
    parser.add_argument("config")
    parser.add_argument("staged", type=reference(StagedModel), help="JSON of the train flow's result")
    parser.add_argument("--eval-start", type=date.fromisoformat, required=True)
    parser.add_argument("--eval-end", type=date.fromisoformat, required=True)
    args = parser.parse_args(argv)
    state, code = run_flow(
        evaluate,
        config=args.config,
        staged=args.staged,
        eval_start=args.eval_start,
        eval_end=args.eval_end,
    )
    if code == 0:
        print(state.result().model_dump_json(indent=2))
    return code


if __name__ == "__main__":
    sys.exit(main())
