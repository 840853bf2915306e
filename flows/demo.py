"""``make demo``: the main job on the embedded default, with no server and no network.

Today that is the ingest of the synthetic market into a fresh DuckDB warehouse, the versioned, validated
feature table with its manifest, the default model trained on it, evaluated on the last months (after a
purge) against the gates and the registry's champion, and published when it passes. The registry outlives
``--fresh``, so a second run meets the first run's champion. It runs the same Prefect flows a deployment runs.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from atft.config import PipelineConfig, load_config
from atft.evaluation import evaluation_window
from atft.ingest import IngestReport
from atft.training.session import Windows
from atft.warehouse import Warehouse
from flows.evaluate import evaluate
from flows.features import build_features
from flows.ingest import ingest
from flows.publish import publish
from flows.train import train
from schemas.manifest import FeatureManifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the platform's main job on a pipeline config.")
    parser.add_argument("--config", default="deployments/demo.yaml")
    parser.add_argument("--fresh", action="store_true", help="delete the config's warehouse file first")
    args = parser.parse_args(argv)
    settings = load_config(args.config)
    if args.fresh:
        for path in (settings.warehouse.path, Path(f"{settings.warehouse.path}.wal")):
            path.unlink(missing_ok=True)
    report = IngestReport(**ingest(config=args.config))
    print(f"\n{report.summary()}")
    features = build_features(config=args.config)
    table = features["table"]
    with Warehouse(settings.warehouse.path, read_only=True) as wh:
        print(f"\nwarehouse {settings.warehouse.path}")
        for name, rows, detail in wh.overview():
            print(f"  {name:<17} {rows:>10,} rows  {detail}")
        print(f"  {table:<17} {wh.row_count(table):>10,} rows  feature table ({features['mode']})")
        dates = [d for (d,) in wh.con.execute(f"SELECT DISTINCT Date FROM {table} ORDER BY Date").fetchall()]
    print(f"\nfeature manifest {features['manifest_path']}\n  sha256 {features['manifest_sha256']}")

    manifest = FeatureManifest.read(features["manifest_path"])
    warm_up = max(column.lookback for column in manifest.features)
    purge = max(settings.features.horizons)
    # train | purge | valid | purge | eval: the evaluation window is the last eval_days sessions.
    eval_days = settings.evaluation.eval_days
    windows = Windows.trailing(dates[: -eval_days - purge], valid_days=120, purge=purge, warm_up=warm_up)
    eval_start, eval_end = evaluation_window(dates, windows.valid_end, purge, eval_days)
    staged = train(config=args.config, features_ref=features, **asdict(windows))
    collapsed = " (COLLAPSED)" if staged["collapsed"] else ""
    print(
        f"\ntrained {staged['model']} on {windows.train_start}..{windows.train_end}, validated on "
        f"{windows.valid_start}..{windows.valid_end}: best epoch {staged['best_epoch']} of {staged['epochs_run']}, "
        f"validation RankIC (primary horizon) {staged['best_valid_rank_ic']:.4f}{collapsed}\n"
        f"  staged at {staged['staging_dir']}"
    )
    verdict = evaluate(config=args.config, model_ref=staged, eval_start=eval_start, eval_end=eval_end)
    _print_verdict(settings, verdict)
    outcome = publish(config=args.config, model_ref=staged, gate_result=verdict, return_state=True)
    if outcome.name == "GateRejected":
        print(f"\nnot published ({outcome.message})")
    else:
        published = outcome.result()
        print(f"\npublished {published['version']} as champion at {published['path']}")
        print(f"  python -m atft.registry --config {args.config} show {published['version']}")


def _print_verdict(settings: PipelineConfig, verdict: dict[str, Any]) -> None:
    metrics = json.loads(Path(verdict["metrics_path"]).read_text())
    h = settings.train.primary_horizon
    print(
        f"\nheld-out {verdict['eval_start']}..{verdict['eval_end']}: RankIC {h}d {metrics[f'rank_ic_{h}d']:.4f} "
        f"(RankICIR {metrics[f'rank_icir_{h}d']:.2f}), long-short Sharpe {metrics[f'ls_sharpe_{h}d']:.2f}, "
        f"max drawdown {metrics[f'max_drawdown_{h}d']:.1%}"
    )
    champion = verdict["champion"] or "none yet"
    print(f"gates ({'PASSED' if verdict['passed'] else 'REJECTED'}; champion: {champion}):")
    for line in verdict["gates"]["gates"]:
        print(f"  {'pass' if line['passed'] else 'FAIL'}  {line['reason']}")


if __name__ == "__main__":
    main()
