"""One rolling retrain of a production config (``deployments/sp500.yaml``), through Prefect, cold and warm-started.

Three ``rolling_retrain`` flow runs, one after the other, with the config's own production windows and warehouse;
registries and staging go to a temporary directory, and Prefect to a temporary home (its ephemeral API):

1. ``seed``: as of ``--step`` sessions before ``--as-of``, from scratch, with the gates off. It only provides the
   champion that the warm run starts from, as the previous scheduled retrain would have.
2. ``cold``: as of ``--as-of``, the config unchanged, into an empty registry: a retrain from scratch.
3. ``warm``: as of ``--as-of``, the config with ``train.warm_start: champion``, into the seed's registry.

Each run's wall time is the whole flow (ingest check, cached features, contract, training, evaluation with the
baselines, publish). Its held-out figures come from its own evaluation window, the same for cold and warm.
Targets on 2 cores: cold at most 10 minutes, warm at most 5.

    python benchmarks/bench_retrain.py [--config deployments/sp500.yaml] [--as-of 2018-02-07] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import date
from pathlib import Path

import yaml
from harness import finish

TARGET_COLD_S = 600.0
TARGET_WARM_S = 300.0
HORIZON = 5


def derived_config(base: dict, directory: Path, name: str, registry: str, **sections: dict) -> str:
    """``base`` with registry ``registry`` and its own staging in ``directory``, each of ``sections`` merged in."""
    config = {**base, "registry": {"path": str(directory / f"registry-{registry}")}}
    config["train"] = {**base.get("train", {}), "staging_dir": str(directory / f"staging-{name}")}
    for section, values in sections.items():
        config[section] = {**config.get(section, {}), **values}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def run(config: str, as_of: date, staging: Path) -> dict:
    from flows.retrain import rolling_retrain

    began = time.perf_counter()
    state = rolling_retrain(config=config, as_of=as_of, return_state=True)
    seconds = time.perf_counter() - began
    if state.is_failed():
        raise SystemExit(f"the retrain of {config} as of {as_of} failed: {state.message}")
    (evaluation,) = staging.glob("*/evaluation")
    metrics = json.loads((evaluation / "metrics.json").read_text())
    baselines = json.loads((evaluation / "baselines.json").read_text())
    model = json.loads((evaluation.parent / "model.json").read_text())
    history = json.loads((evaluation.parent / "history.json").read_text())
    return {
        "seconds": seconds,
        "state": state.name,
        "message": state.message,
        "warm_start": model.get("warm_start"),
        "epochs_run": len(history),
        "train_seconds": sum(r["seconds"] for r in history),
        "stock_days_per_s": history[-1]["stock_days_per_s"],
        "rank_ic_1d": metrics["rank_ic_1d"],
        f"rank_ic_{HORIZON}d": metrics[f"rank_ic_{HORIZON}d"],
        f"rank_icir_{HORIZON}d": metrics[f"rank_icir_{HORIZON}d"],
        f"ls_sharpe_{HORIZON}d": metrics[f"ls_sharpe_{HORIZON}d"],
        "baselines": {name: {k: m[k] for k in (f"rank_ic_{HORIZON}d", "rank_ic_1d")} for name, m in baselines.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="deployments/sp500.yaml")
    parser.add_argument("--as-of", type=date.fromisoformat, default=date(2018, 2, 7))
    parser.add_argument("--step", type=int, help="sessions between the seed and the measured retrains "
                        "(default: the config's retrain.step_days)")  # fmt: skip
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="bench-retrain-prefect-"))
    from atft.calendar import TradingCalendar
    from atft.config import load_config

    settings = load_config(args.config)
    step = args.step or settings.retrain.step_days
    sessions = TradingCalendar(settings.calendar).sessions(date(args.as_of.year - 1, 1, 1), args.as_of)
    seed_as_of = sessions[-1 - step].date()
    base = yaml.safe_load(Path(args.config).read_text())
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-retrain-") as tmp:
        tmp = Path(tmp)
        no_gates = {"gates": [], "baselines": []}
        plan = {
            "seed": (derived_config(base, tmp, "seed", "chain", evaluation=no_gates), seed_as_of),
            "cold": (derived_config(base, tmp, "cold", "cold"), args.as_of),
            "warm": (derived_config(base, tmp, "warm", "chain", train={"warm_start": "champion"}), args.as_of),
        }
        for name, (config, as_of) in plan.items():
            print(f"{name}: rolling retrain as of {as_of} ...", flush=True)
            results[name] = r = run(config, as_of, tmp / f"staging-{name}")
            print(f"  {r['state']} in {r['seconds'] / 60:.1f} min ({r['epochs_run']} epochs, "
                  f"{r['stock_days_per_s']:,.0f} stock-days/s); held-out RankIC {HORIZON}d "
                  f"{r[f'rank_ic_{HORIZON}d']:+.4f}, 1d {r['rank_ic_1d']:+.4f}; started from "
                  f"{(r['warm_start'] or {}).get('from_version') or 'scratch'}", flush=True)  # fmt: skip
    cold, warm = results["cold"], results["warm"]
    started_warm = warm["warm_start"]["from_version"] is not None
    passed = cold["seconds"] <= TARGET_COLD_S and warm["seconds"] <= TARGET_WARM_S and started_warm
    figures = {
        "config": args.config,
        "as_of": str(args.as_of),
        "seed_as_of": str(seed_as_of),
        "runs": results,
        "cold_s": cold["seconds"],
        "warm_s": warm["seconds"],
        "warm_to_cold_time_ratio": warm["seconds"] / cold["seconds"],
        f"warm_minus_cold_rank_ic_{HORIZON}d": warm[f"rank_ic_{HORIZON}d"] - cold[f"rank_ic_{HORIZON}d"],
    }
    print(f"retrain benchmark, {args.config} as of {args.as_of}: cold {cold['seconds'] / 60:.1f} min (target <= "
          f"{TARGET_COLD_S / 60:.0f}), warm {warm['seconds'] / 60:.1f} min (target <= {TARGET_WARM_S / 60:.0f}): "
          f"{'PASS' if passed else 'FAIL'}")  # fmt: skip
    finish(passed, args.json, figures)


if __name__ == "__main__":
    main()
