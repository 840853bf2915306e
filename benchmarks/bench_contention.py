"""Training throughput on a shared host: alone, beside one CPU-bound busy process, and two trainings side by side.

Each training is its own process, on the default model of the config over a short window (``--train-days``), and
its throughput is the stock-days/s of its epochs after the first (the first also builds the day graphs). Every
scenario runs twice in the same run: with the thread policy (``train.threads: auto`` and the library's short spin,
see ``atft.threads``), and without it (threads pinned to the usable cores, libgomp's default spin), the baseline.

Targets, with the policy: beside the busy process at least 0.45x of alone; two side by side together at least
0.8x of one alone. A scenario still running after ``--timeout`` seconds is stopped; a training that had not
finished an epoch by then is given one epoch's stock-days over the time it had, an upper bound, and the scenario is
listed under ``stopped_at_timeout``.

    python benchmarks/bench_contention.py [--config deployments/demo.yaml] [--epochs 3] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from harness import finish

TARGET_BUSY_RATIO = 0.45
TARGET_PAIR_RATIO = 0.8
LIBGOMP_DEFAULT_SPIN = "300000"


def train_phase(config_path: str, epochs: int, train_days: int, policy: bool) -> None:
    """One training; a JSON line per epoch on stdout, so that a stopped run still says what it did."""
    from atft.config import load_config
    from atft.features.store import feature_dates
    from atft.threads import core_budget
    from atft.training.session import Windows, prepare_data, train_model
    from atft.warehouse import Warehouse
    from schemas.manifest import FeatureManifest

    threads = "auto" if policy else core_budget().usable
    config = load_config(config_path, {"train.epochs": epochs, "train.patience": epochs, "train.threads": threads})
    manifest = FeatureManifest.read(Path(os.environ["BENCH_MANIFEST"]))
    with Warehouse(config.warehouse.path, read_only=True) as wh:
        dates = feature_dates(wh.con, manifest.table_name)
        purge = config.features.label_span(max(config.features.horizons))
        valid_days = 20
        recent = dates[-(manifest.warm_up + train_days + purge + valid_days) :]
        windows = Windows.trailing(recent, valid_days=valid_days, purge=purge, warm_up=0)
        data = prepare_data(wh.con, manifest, config, windows)

    def report(record: object) -> None:
        print(json.dumps({"epoch": record.epoch, "stock_days_per_s": record.stock_days_per_s,
                          "seconds": record.seconds, "threads": record.threads}), flush=True)  # fmt: skip

    _, result = train_model(config, manifest, data, report)
    print(json.dumps({"policy": result.thread_policy}), flush=True)


def prepare(config_path: str) -> Path:
    from atft.config import load_config
    from atft.features.build import build_features
    from atft.ingest import ingest

    config = load_config(config_path)
    quiet = {"on_progress": lambda _: None}
    ingest(config, **quiet)
    return build_features(config, **quiet).manifest_path


def run_trainings(count: int, busy: bool, policy: bool, options: list[str], manifest: Path, timeout: float) -> dict:
    """``count`` trainings at once (beside a busy process if ``busy``); each one's steady throughput."""
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"} | {"BENCH_MANIFEST": str(manifest)}
    if not policy:
        env["GOMP_SPINCOUNT"] = LIBGOMP_DEFAULT_SPIN
    command = [sys.executable, __file__, "--phase", "train", *options] + ([] if policy else ["--no-policy"])
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    began = time.perf_counter()
    runs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(count)]
    try:
        outputs = [_collect(run, began, timeout) for run in runs]
    finally:
        for process in [*runs, *([hog] if hog else [])]:
            process.kill()
            process.wait()
    return {"trainings": outputs, "seconds": round(time.perf_counter() - began, 1)}


def _collect(run: subprocess.Popen, began: float, timeout: float) -> dict:
    try:
        out, _ = run.communicate(timeout=max(1.0, began + timeout - time.perf_counter()))
        stopped = False
    except subprocess.TimeoutExpired:
        run.kill()
        out, _ = run.communicate()
        stopped = True
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    epochs = [line for line in lines if "epoch" in line]
    steady = [e["stock_days_per_s"] for e in epochs[1:]] or [e["stock_days_per_s"] for e in epochs]
    return {
        "stock_days_per_s": sum(steady) / len(steady) if steady else None,
        "epochs": epochs,
        "stopped": stopped,
        "waited_s": time.perf_counter() - began,
        "policy": next((line["policy"] for line in lines if "policy" in line), None),
    }


def scenarios(policy: bool, options: list[str], manifest: Path, timeout: float) -> dict:
    alone = run_trainings(1, False, policy, options, manifest, timeout)
    busy = run_trainings(1, True, policy, options, manifest, timeout)
    pair = run_trainings(2, False, policy, options, manifest, timeout)
    speed = alone["trainings"][0]["stock_days_per_s"]
    if speed is None:
        raise SystemExit(f"a training alone did not finish an epoch in {timeout:.0f} s; raise --timeout")
    first = alone["trainings"][0]["epochs"][0]
    epoch_stock_days = first["stock_days_per_s"] * first["seconds"]

    def throughput(training: dict) -> float:
        # A training stopped before its first epoch did less than one epoch's stock-days in the time it had.
        value = training["stock_days_per_s"]
        return epoch_stock_days / training["waited_s"] if value is None else value

    stopped = [name for name, run in (("busy", busy), ("pair", pair)) if any(t["stopped"] for t in run["trainings"])]
    busy_speed = throughput(busy["trainings"][0])
    pair_speed = sum(throughput(t) for t in pair["trainings"])
    return {
        "alone_stock_days_per_s": speed,
        "busy_stock_days_per_s": busy_speed,
        "pair_stock_days_per_s": pair_speed,
        "busy_ratio": busy_speed / speed,
        "pair_ratio": pair_speed / speed,
        "stopped_at_timeout": stopped,  # their figures are upper bounds
        "runs": {"alone": alone, "busy": busy, "pair": pair},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="deployments/demo.yaml")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-days", type=int, default=120)
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds a scenario may take")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--phase", choices=["train"], help=argparse.SUPPRESS)
    parser.add_argument("--no-policy", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "train":
        train_phase(args.config, args.epochs, args.train_days, not args.no_policy)
        return
    options = ["--config", args.config, "--epochs", str(args.epochs), "--train-days", str(args.train_days)]
    manifest = prepare(args.config)
    results = {"cores": len(os.sched_getaffinity(0))}
    for policy in (True, False):
        name = "with_policy" if policy else "without_policy"
        results[name] = figures = scenarios(policy, options, manifest, args.timeout)
        bounds = figures["stopped_at_timeout"]
        print(
            f"{name.replace('_', ' ')}: alone {figures['alone_stock_days_per_s']:,.0f} stock-days/s; beside a busy "
            f"process {figures['busy_stock_days_per_s']:,.0f} ({figures['busy_ratio']:.2f}x); two side by side "
            f"{figures['pair_stock_days_per_s']:,.0f} together ({figures['pair_ratio']:.2f}x)"
            + (f"; stopped at the timeout, upper bounds: {', '.join(bounds)}" if bounds else ""),
            flush=True,
        )
    policy = results["with_policy"]
    verdict = policy["busy_ratio"] >= TARGET_BUSY_RATIO and policy["pair_ratio"] >= TARGET_PAIR_RATIO
    print(
        f"targets with the policy: busy >= {TARGET_BUSY_RATIO}x, pair >= {TARGET_PAIR_RATIO}x: "
        f"{'PASS' if verdict else 'FAIL'}"
    )
    finish(verdict, args.json, results)


if __name__ == "__main__":
    main()
