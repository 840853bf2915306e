"""``make demo``: the main job on the embedded default, with no server and no network.

Today that is the ingest of the synthetic market into a fresh DuckDB warehouse, the versioned, validated
feature table with its manifest, and the default model trained on it (validated on the last months).
It runs the same Prefect flows a deployment runs.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from atft.config import load_config
from atft.ingest import IngestReport
from atft.training.session import Windows
from atft.warehouse import Warehouse
from flows.features import build_features
from flows.ingest import ingest
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
    windows = Windows.trailing(dates, valid_days=120, purge=max(settings.features.horizons), warm_up=warm_up)
    staged = train(config=args.config, features_ref=features, **asdict(windows))
    collapsed = " (COLLAPSED)" if staged["collapsed"] else ""
    print(
        f"\ntrained {staged['model']} on {windows.train_start}..{windows.train_end}, validated on "
        f"{windows.valid_start}..{windows.valid_end}: best epoch {staged['best_epoch']} of {staged['epochs_run']}, "
        f"validation RankIC (primary horizon) {staged['best_valid_rank_ic']:.4f}{collapsed}\n"
        f"  staged at {staged['staging_dir']}"
    )


if __name__ == "__main__":
    main()
