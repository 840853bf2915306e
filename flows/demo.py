"""``make demo``: the main job on the embedded default, with no server and no network.

Today that is the ingest of the synthetic market into a fresh DuckDB warehouse, followed by a summary
of what landed. It runs the same Prefect flow a deployment runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from atft.config import load_config
from atft.ingest import IngestReport
from atft.warehouse import Warehouse
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
    with Warehouse(settings.warehouse.path, read_only=True) as wh:
        print(f"\nwarehouse {settings.warehouse.path}")
        for table, rows, detail in wh.overview():
            print(f"  {table:<17} {rows:>10,} rows  {detail}")


if __name__ == "__main__":
    main()
