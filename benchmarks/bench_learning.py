"""Out-of-sample signal quality: the models against ridge, a reversal factor and (synthetic) the oracle.

The feature history is split into train | purge | valid | purge | test, each purge as long as the longest
horizon, so no label of one window reaches into the next. Models early-stop on valid; everything is
scored on test, which nothing has seen. Per horizon: mean daily IC and RankIC, and their IRs.

Targets on the synthetic market: ATFT-GAT-FAN's 5-day RankIC >= 0.8 x the oracle's and >= 1.2 x ridge's.
On real data, a daily RankIC above ~0.1 would more likely mean leakage than skill.

The demo market plants a regime-dependent reversal (see ``deployments/demo.yaml``) that one ridge coefficient per
CS-Z feature cannot use, so both ratios discriminate there.

    python benchmarks/bench_learning.py --config deployments/demo.yaml --epochs 10 [--models atft_gat_fan,apex]
    python benchmarks/bench_learning.py --config deployments/sp500.yaml --epochs 4
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from harness import finish

from atft.baselines import csz_columns, dense_rows, oracle_scores, reversal_scores, ridge_scores
from atft.config import load_config, parse_overrides
from atft.data.arrays import FeatureArrays, load_arrays
from atft.data.dataset import DayDataset, day_loader, history_days
from atft.features.build import build_features
from atft.features.store import feature_dates
from atft.ingest import ingest
from atft.metrics import daily_ic, daily_rank_ic, summarise
from atft.prediction import predict
from atft.training.session import Windows, prepare_data, train_model
from atft.warehouse import Warehouse, read_oracle
from schemas.manifest import FeatureManifest

REPORTED = (1, 5)


def split(dates: list, lookback: int, gap: int) -> tuple[Windows, tuple]:
    """60% train, 15% valid, the rest test, after the features' warm-up; purge gaps of ``gap`` sessions."""
    usable = dates[80 + lookback :]  # the longest feature lookback (69) is missing before this
    n = len(usable)
    a, b = int(n * 0.6), int(n * 0.75)
    windows = Windows(usable[0], usable[a], usable[a + gap], usable[b])
    return windows, (usable[b + gap], usable[-1])


def scores(pred: np.ndarray, label: np.ndarray, mask: np.ndarray, horizons: list[int]) -> dict[str, float]:
    out = {}
    for h in REPORTED:
        k = horizons.index(h)
        for name, metric in (("ic", daily_ic), ("rank_ic", daily_rank_ic)):
            mean, ir = summarise(metric(pred[..., k], label[..., k], mask[..., k]))
            out[f"{name}_{h}d"], out[f"{name}ir_{h}d"] = mean, ir
    return out


def test_days(arrays: FeatureArrays, start: object, lookback: int) -> list[int]:
    return [i for i, d in enumerate(arrays.dates.date) if d >= start and i >= lookback - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="deployments/demo.yaml")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--models", default="atft_gat_fan,apex")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, e.g. --set warehouse.path=/tmp/bench.duckdb (repeatable)",
    )
    args = parser.parse_args()
    overrides = parse_overrides(args.set)
    config = load_config(args.config, {"train.epochs": args.epochs, **overrides})
    quiet = {"on_progress": lambda _: None}
    ingest(config, **quiet)
    built = build_features(config, **quiet)
    manifest = FeatureManifest.read(built.manifest_path)
    lookback, gap = config.model.lookback, config.features.label_span(max(config.features.horizons))
    with Warehouse(config.warehouse.path, read_only=True) as wh:
        dates = feature_dates(wh.con, built.table)
        windows, (test_start, test_end) = split(dates, lookback, gap)
        arrays = load_arrays(wh.con, manifest, windows.train_start, test_end, history=history_days(config.model))
        oracle = read_oracle(wh.con, test_start, test_end) if config.source.kind == "synthetic" else None
        # The same windows, graphs and purge for every model: only lookback and graph settings shape the data.
        data = prepare_data(wh.con, manifest, config, windows)
    test = test_days(arrays, test_start, lookback)
    _, label, mask = dense_rows(arrays, test)
    results: dict[str, dict[str, float]] = {}
    for name in filter(None, args.models.split(",")):
        run = config.model_copy(update={"model": config.model.model_copy(update={"name": name})})
        began = time.perf_counter()
        model, result = train_model(run, manifest, data, lambda r, n=name: print(f"  {n} {r.line()}", flush=True))
        loader = day_loader(DayDataset(arrays, test, lookback, config.model.graph), 4, shuffle=False)
        pred, model_label, model_mask = predict(model, loader, torch.device("cpu"))
        results[name] = scores(pred, model_label, model_mask, arrays.horizons) | {
            "train_seconds": time.perf_counter() - began, "best_epoch": result.best_epoch}  # fmt: skip
    train = [i for i, d in enumerate(arrays.dates.date) if windows.train_start <= d <= windows.train_end]
    ridge_pred = ridge_scores(arrays, train, arrays, test, csz_columns(manifest))
    results["ridge"] = scores(ridge_pred, label, mask, arrays.horizons)
    results["reversal_5d"] = scores(reversal_scores(arrays, test), label, mask, arrays.horizons)
    if oracle is not None:
        results["oracle"] = scores(oracle_scores(arrays, test, oracle), label, mask, arrays.horizons)
    _report(args, windows, test_start, test_end, results)


def _report(args: argparse.Namespace, windows: Windows, test_start: object, test_end: object, results: dict) -> None:
    print(f"\nsignal quality on held-out days {test_start} .. {test_end} ({args.config}); train {windows.train_start}"
          f" .. {windows.train_end}, valid {windows.valid_start} .. {windows.valid_end}")  # fmt: skip
    print(f"  {'model':<14}" + "".join(f"{c:>11}" for c in ("IC 1d", "ICIR 1d", "RankIC 1d", "IC 5d", "ICIR 5d",
                                                          "RankIC 5d", "RkICIR 5d")))  # fmt: skip
    for name, r in results.items():
        keys = ("ic_1d", "icir_1d", "rank_ic_1d", "ic_5d", "icir_5d", "rank_ic_5d", "rank_icir_5d")
        print(f"  {name:<14}" + "".join(f"{r[k]:>11.4f}" for k in keys))
    verdict = "n/a"
    if "oracle" in results and "atft_gat_fan" in results:
        model, oracle, ridge_ric = (results[k]["rank_ic_5d"] for k in ("atft_gat_fan", "oracle", "ridge"))
        ok = model >= 0.8 * oracle and model >= 1.2 * ridge_ric
        verdict = "PASS" if ok else "FAIL"
        print(f"  ATFT-GAT-FAN 5d RankIC = {model / oracle:.2f} x oracle (target >= 0.8), "
              f"{model / ridge_ric:.2f} x ridge (target >= 1.2): {verdict}")  # fmt: skip
    finish(verdict != "FAIL", args.json, results)


if __name__ == "__main__":
    main()
