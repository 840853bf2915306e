"""Training-step throughput of the default model against an earlier implementation, side by side in one run.

The same batches of real days (the S&P config by default: 505 stocks, its full feature set) are stepped by three
implementations, each in its own process, one after the other:

- ``baseline``: the library as of ``--baseline`` (a git revision, checked out into a temporary directory), eager;
- ``eager``: this tree with ``train.compile: false``;
- ``compiled``: this tree with the per-step block compiled, as ``train.compile: auto`` does on a long run. It runs
  twice: first with an empty inductor cache (a cold compile, as on a fresh worker; ``compile_s`` is its first step
  less the eager one), then again with that cache, as every later retrain on the host. The second is the figure:
  the steps just after a cold compile ran 10-20% slower in the same process.

A step is what the trainer does per batch: forward, ranking loss, backward, gradient clipping, AdamW. Each phase
reports stock-days/s over ``--steps`` timed steps after untimed warm-up steps (the compiled phase's first step
compiles), and no-grad scoring throughput over the same batches.
Target: compiled at least 2x the baseline's training stock-days/s.

    python benchmarks/bench_step.py [--config deployments/sp500.yaml] [--baseline 2b01887] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import finish

TARGET_SPEEDUP = 2.0
ROOT = Path(__file__).resolve().parent.parent


def step_phase(config_path: str, manifest_path: str, steps: int, compiled: bool) -> dict:
    """Time ``steps`` training steps and one no-grad pass over the same batches; uses only long-stable APIs."""
    import torch
    from torch.nn.utils import clip_grad_norm_

    from atft.config import load_config
    from atft.data.dataset import day_loader
    from atft.features.store import feature_dates
    from atft.losses import RankingLoss
    from atft.models import build_model
    from atft.training.session import Windows, prepare_data
    from atft.training.trainer import fit_input_scaling
    from atft.warehouse import Warehouse
    from schemas.manifest import FeatureManifest

    config = load_config(config_path)
    manifest = FeatureManifest.read(Path(manifest_path))
    torch.set_num_threads(os.cpu_count() or 1)
    with Warehouse(config.warehouse.path, read_only=True) as wh:
        dates = feature_dates(wh.con, manifest.table_name)
        purge = config.features.label_span(max(config.features.horizons))
        windows = Windows.trailing(dates[-400:], valid_days=20, purge=purge, warm_up=60)
        data = prepare_data(wh.con, manifest, config, windows)
    torch.manual_seed(0)
    model = build_model(config.model, manifest.width, data.arrays.horizons, manifest.sha256, manifest.feature_groups)
    model.set_input_scaling(*fit_input_scaling(data.arrays, data.train_days))
    loss_fn = RankingLoss(config.loss, data.arrays.horizons)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.train.learning_rate)
    warm_up = 2
    loader = day_loader(data.train, config.train.days_per_batch, shuffle=True, seed=0)
    batches = [batch for _, batch in zip(range(warm_up + steps), loader, strict=False)]

    def step(batch: object) -> int:
        pred = model(*batch.inputs())
        loss, _ = loss_fn(batch.dense(pred), batch.dense(batch.y), batch.dense(batch.y_mask, False))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_grad_norm_(model.parameters(), config.train.grad_clip)
        optimizer.step()
        return int(batch.x_mask[:, -1].sum())

    if compiled:
        model.compile_for_cpu()
    model.train()
    began = time.perf_counter()
    step(batches[0])
    first_step_s = time.perf_counter() - began
    for batch in batches[1:warm_up]:
        step(batch)
    began = time.perf_counter()
    stock_days = sum(step(batch) for batch in batches[warm_up:])
    train_s = time.perf_counter() - began
    model.eval()
    with torch.no_grad():
        model(*batches[0].inputs())  # the eval graph's compile, untimed
        began = time.perf_counter()
        for batch in batches[warm_up:]:
            model(*batch.inputs())
        score_s = time.perf_counter() - began
    import atft

    return {
        "source": str(Path(atft.__file__).parent),
        "train_stock_days_per_s": stock_days / train_s,
        "score_stock_days_per_s": stock_days / score_s,
        "stock_days_per_step": stock_days / steps,
        "first_step_s": first_step_s,
        "threads": torch.get_num_threads(),
        "width": manifest.width,
    }


def prepare(config_path: str) -> Path:
    from atft.config import load_config
    from atft.features.build import build_features
    from atft.ingest import ingest

    config = load_config(config_path)
    quiet = {"on_progress": lambda _: None}
    ingest(config, **quiet)
    return build_features(config, **quiet).manifest_path


def run_phase(name: str, tree: Path, options: list[str], inductor_cache: Path) -> dict:
    # An empty inductor cache: the compiled phase's first step is a cold compile, as on a fresh worker.
    env = {**os.environ, "PYTHONPATH": str(tree), "TORCHINDUCTOR_CACHE_DIR": str(inductor_cache)}
    command = [sys.executable, __file__, "--phase", name.removesuffix("_cold"), *options]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"phase {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="deployments/sp500.yaml")
    parser.add_argument("--baseline", default="2b01887", help="git revision of the implementation to compare with")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--phase", choices=["baseline", "eager", "compiled"], help=argparse.SUPPRESS)
    parser.add_argument("--manifest", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(step_phase(args.config, args.manifest, args.steps, args.phase == "compiled")))
        return
    manifest = prepare(args.config)
    options = ["--config", args.config, "--manifest", str(manifest), "--steps", str(args.steps)]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-step-") as old:
        archive = subprocess.run(["git", "archive", args.baseline, "atft", "schemas"], cwd=ROOT, capture_output=True)
        if archive.returncode:
            raise SystemExit(f"git archive {args.baseline} failed: {archive.stderr.decode()[-500:]}")
        subprocess.run(["tar", "-x", "-C", old], input=archive.stdout, check=True)
        phases = (("baseline", Path(old)), ("eager", ROOT), ("compiled_cold", ROOT), ("compiled", ROOT))
        for name, tree in phases:
            results[name] = run_phase(name, tree, options, Path(old) / "inductor-cache")
            r = results[name]
            print(f"  {name:13s} {r['train_stock_days_per_s']:8,.0f} stock-days/s training, "
                  f"{r['score_stock_days_per_s']:8,.0f} scoring, first step {r['first_step_s']:.1f} s",
                  flush=True)  # fmt: skip
    base = results["baseline"]
    figures = {
        "baseline_revision": args.baseline,
        "phases": results,
        "train_speedup_ratio": results["compiled"]["train_stock_days_per_s"] / base["train_stock_days_per_s"],
        "train_eager_ratio": results["eager"]["train_stock_days_per_s"] / base["train_stock_days_per_s"],
        "score_speedup_ratio": results["compiled"]["score_stock_days_per_s"] / base["score_stock_days_per_s"],
        "compile_s": results["compiled_cold"]["first_step_s"] - results["eager"]["first_step_s"],
    }
    verdict = "PASS" if figures["train_speedup_ratio"] >= TARGET_SPEEDUP else "FAIL"
    print(f"step benchmark, {base['width']} inputs, {base['stock_days_per_step']:,.0f} stock-days per step, "
          f"{base['threads']} threads, against {args.baseline}:")  # fmt: skip
    print(f"  training {figures['train_speedup_ratio']:.2f}x compiled, {figures['train_eager_ratio']:.2f}x eager; "
          f"scoring {figures['score_speedup_ratio']:.2f}x; compile {figures['compile_s']:.0f} s; "
          f"target >= {TARGET_SPEEDUP}x: {verdict}")  # fmt: skip
    finish(verdict == "PASS", args.json, figures)


if __name__ == "__main__":
    main()
