"""``make demo``: the whole story on the embedded default, with no server and no network.

Two rolling retrains of the synthetic market, one retrain step apart: the first publishes a champion into a
fresh registry, the second is a challenger that faces it on the same evaluation window. Each runs the same
``rolling-retrain`` flow a deployment runs (ingest, features, contract, train, evaluate, gates, publish).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from atft.calendar import TradingCalendar
from atft.config import PipelineConfig
from atft.features.store import build_state
from atft.metrics import daily_rank_ic, summarise
from atft.registry import Registry
from atft.warehouse import Warehouse, read_oracle
from flows.cli import DEFAULT_CONFIG, Command, alias_main, run_flow
from flows.references import RunConfig
from flows.retrain import rolling_retrain

LAST_AS_OF = date(2024, 12, 27)  # the demo market's last Friday


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fresh", action="store_true", help="start from an empty warehouse, registry and staging")


def _run(config: RunConfig, args: argparse.Namespace) -> int:
    settings = config.settings
    if args.fresh:
        for path in (settings.warehouse.path, Path(f"{settings.warehouse.path}.wal")):
            path.unlink(missing_ok=True)
        # Only this config's registry and staged runs: other pipelines may share the data directory.
        for directory in (settings.registry.path, *settings.train.staging_dir.glob(f"{settings.name}-*")):
            shutil.rmtree(directory, ignore_errors=True)
    sessions = TradingCalendar(settings.calendar).sessions(date(2024, 1, 4), LAST_AS_OF)
    second = LAST_AS_OF
    first = sessions[-1 - settings.retrain.step_days].date()
    began = time.perf_counter()
    for as_of in (first, second):
        print(f"\n=== rolling retrain as of {as_of} ===")
        state, code = run_flow(rolling_retrain, config=config, as_of=as_of)
        if code:
            return code  # a failed run may have staged nothing to show, and the challenger would face no champion
        _print_run(settings, as_of, state.name, state.message)
    _print_next(args.config or DEFAULT_CONFIG, settings, time.perf_counter() - began)
    return 0


def _print_run(settings: PipelineConfig, as_of: date, outcome: str, message: str) -> None:
    registry = Registry(settings.registry.path)
    with Warehouse.of(settings.warehouse, read_only=True) as wh:
        entry = max(wh.log_entries(), key=lambda e: e.started_at)
        through = wh.last_quote_date()
        build = build_state(wh.con)
    print(f"ingested  {entry.rows_inserted:,} new rows (raw_quotes through {through}), status {entry.status}")
    print(f"features  {build.table_name} through {build.built_through}: {build.rows:,} rows, "
          f"manifest sha256 {build.manifest_sha256[:16]}…")  # fmt: skip
    latest = registry.versions()[-1] if registry.versions() else None
    staged = sorted(settings.train.staging_dir.glob(f"{settings.name}-*"), key=lambda p: p.stat().st_mtime)[-1]
    model = json.loads((staged / "model.json").read_text())
    print(f"training  {model['model']} {model['windows']['train_start']}..{model['windows']['train_end']}, "
          f"valid ..{model['windows']['valid_end']}: best epoch {model['best_epoch']}, "
          f"validation RankIC {model['best_valid_rank_ic']:.4f}")  # fmt: skip
    evaluation = staged / "evaluation"
    metrics = json.loads((evaluation / "metrics.json").read_text())
    gates = json.loads((evaluation / "gates.json").read_text())
    h = settings.train.primary_horizon
    oracle = _oracle_rank_ic(settings, pd.read_parquet(evaluation / "predictions.parquet"), h)
    print(
        f"held-out  RankIC {h}d {_fmt(metrics[f'rank_ic_{h}d'])} (oracle {_fmt(oracle)}), "
        f"long-short Sharpe {_fmt(metrics[f'ls_sharpe_{h}d'])}, max drawdown {_fmt(metrics[f'max_drawdown_{h}d'])}"
    )
    baselines = json.loads((evaluation / "baselines.json").read_text())
    for name, values in baselines.items():
        print(f"baseline  {name}: RankIC {h}d {_fmt(values[f'rank_ic_{h}d'])}, "
              f"long-short Sharpe {_fmt(values[f'ls_sharpe_{h}d'])}")  # fmt: skip
    for line in gates["gates"]:
        print(f"  {'pass' if line['passed'] else 'FAIL'}  {line['reason']}")
    print(f"outcome   {outcome}: {message}")
    if outcome == "Published" and latest is not None:
        print(f"registry  champion {registry.champion().champion} at {settings.registry.path / latest.version}")


def _oracle_rank_ic(settings: PipelineConfig, predictions: pd.DataFrame, h: int) -> float:
    """Mean daily RankIC of the synthetic oracle on the evaluation days, against the same realised returns."""
    with Warehouse.of(settings.warehouse, read_only=True) as wh:
        oracle = read_oracle(wh.con, predictions["Date"].min(), predictions["Date"].max())
    oracle["Date"] = pd.to_datetime(oracle["Date"]).dt.date
    joined = predictions.merge(oracle, on=["Date", "Code"])
    truth = joined.pivot(index="Date", columns="Code", values=f"target_{h}d").to_numpy()
    score = joined.pivot(index="Date", columns="Code", values=f"oracle_{h}d").to_numpy()
    return summarise(daily_rank_ic(score, truth, np.isfinite(truth) & np.isfinite(score)))[0]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.4f}"


def _print_next(config: str, settings: PipelineConfig, seconds: float) -> None:
    print(f"\ntwo rolling retrains in {seconds / 60:.1f} min. Where to look next:")
    print(f"  .venv/bin/atft registry --config {config} list        # versions, champion, metrics")
    print(f"  .venv/bin/atft registry --config {config} show        # the champion's full record")
    print(f"  .venv/bin/atft score --config {config}                # today's predictions")
    print(f"  .venv/bin/atft replay --config {config} --start 2024-12-02 --end 2024-12-27   # score + monitor per day")
    print("  .venv/bin/atft --help                                   # every command")
    print(f"  warehouse {settings.warehouse.path}, registry {settings.registry.path}")
    print("  the Prefect UI and deployments: deployments/README.md")


COMMAND = Command(
    "demo", "Two rolling retrains of the demo market, the second a challenger to the first.",
    "atft demo --fresh", _run, _demo_arguments,
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return alias_main(COMMAND, argv)


if __name__ == "__main__":
    sys.exit(main())
