"""Training throughput of the default model config: stock-days per second, seconds per epoch, and the share
of each step spent waiting for data (target: at most 10%).

It runs unchanged on a CUDA machine (``train.device: auto`` picks the GPU and bf16 autocast) and then reports
GPU figures. Epoch 1 includes building each day's graph; later epochs reuse them.

    python benchmarks/bench_train.py [--config deployments/demo.yaml] [--epochs 2] [--json results.json]
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

import torch
from harness import finish, peak_rss_mib

from atft.config import load_config
from atft.features.build import build_features
from atft.features.store import feature_dates
from atft.ingest import ingest
from atft.training.session import Windows, prepare_data, train_model
from atft.warehouse import Warehouse
from schemas.manifest import FeatureManifest

TARGET_DATA_SHARE = 0.10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="deployments/demo.yaml")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    # patience = epochs: every epoch is timed, whatever the validation score does.
    config = load_config(args.config, {"train.epochs": args.epochs, "train.patience": args.epochs})
    quiet = {"on_progress": lambda _: None}
    ingest(config, **quiet)
    built = build_features(config, **quiet)
    manifest = FeatureManifest.read(built.manifest_path)
    with Warehouse(config.warehouse.path, read_only=True) as wh:
        dates = feature_dates(wh.con, built.table)
        purge = config.features.label_span(max(config.features.horizons))
        windows = Windows.trailing(dates, valid_days=120, purge=purge, warm_up=manifest.warm_up)
        data = prepare_data(wh.con, manifest, config, windows)
    _, result = train_model(config, manifest, data, lambda r: print(f"  {r.line()}", flush=True))
    device = torch.cuda.get_device_name() if result.device.startswith("cuda") else "CPU"
    print(f"training benchmark: {config.model.name}, default config, {manifest.width} inputs, on {device}")
    for r in result.history:
        share = r.data_seconds / r.seconds
        print(f"  epoch {r.epoch}: {r.seconds:6.1f} s, {r.stock_days_per_s:8,.0f} stock-days/s, data {share:.1%}")
    steady = result.history[-1]
    share = steady.data_seconds / steady.seconds
    verdict = "PASS" if share <= TARGET_DATA_SHARE else "FAIL"
    print(f"  peak RSS {peak_rss_mib():,.0f} MiB; data share {share:.1%}, target <= {TARGET_DATA_SHARE:.0%}: {verdict}")
    finish(verdict != "FAIL", args.json, {"device": device, "epochs": [asdict(r) for r in result.history]})


if __name__ == "__main__":
    main()
