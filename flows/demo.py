"""``make demo``: the main job on the embedded default, with no server and no network.

Today that is the ingest of the synthetic market into a fresh DuckDB warehouse, then the versioned,
validated feature table with its manifest. It runs the same Prefect flows a deployment runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from atft.config import load_config
from atft.ingest import IngestReport
from atft.warehouse import Warehouse
from flows.features import build_features
from flows.ingest import ingest


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
    print()
    print(report.summary())
    features = build_features(config=args.config)
    with Warehouse(settings.warehouse.path, read_only=True) as wh:
        print(f"\nwarehouse {settings.warehouse.path}")
        for table, rows, detail in wh.overview():
            print(f"  {table:<17} {rows:>10,} rows  {detail}")
        print(
            f"  {features['table']:<17} {wh.row_count(features['table']):>10,} rows  feature table ({features['mode']})"
        )
    print(f"\nfeature manifest {features['manifest_path']}\n  sha256 {features['manifest_sha256']}")


if __name__ == "__main__":
    main()
