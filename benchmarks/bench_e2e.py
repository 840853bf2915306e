"""End to end: one rolling retrain of the demo market through Prefect vs the same stages called from the library.

Both start from an empty warehouse and registry and run ingest, features, contract, train, evaluate, gates and
publish on the same windows; the difference is Prefect's orchestration (flow and task runs, subflows, artifacts,
result persistence, the transaction). Target: the flow takes at most 1.2x the library's wall time.

    python benchmarks/bench_e2e.py [--config deployments/demo.yaml] [--as-of 2024-12-27] [--json results.json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import date
from pathlib import Path

import yaml
from harness import finish

from atft.config import PipelineConfig, load_config
from atft.evaluation import evaluate_model
from atft.features.build import build_features
from atft.gates import evaluate_gates
from atft.ingest import ingest
from atft.registry import Registry
from atft.training.session import load_staged, prepare_data, stage, train_model
from atft.warehouse import Warehouse
from atft.windows import plan_retrain
from flows.retrain import rolling_retrain
from schemas.manifest import FeatureManifest

TARGET_RATIO = 1.2


def isolated(config: str, directory: Path) -> tuple[Path, PipelineConfig]:
    """The config with its warehouse, manifests, staging and registry inside ``directory``, written as YAML."""
    settings = load_config(config, {
        "warehouse.path": str(directory / "warehouse.duckdb"),
        "features.manifest_dir": str(directory / "manifests"),
        "train.staging_dir": str(directory / "staging"),
        "registry.path": str(directory / "registry"),
    })  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(settings.model_dump(mode="json", by_alias=True)))
    return path, load_config(path)


def library_retrain(settings: PipelineConfig, as_of: date) -> str:
    """The stages of ``rolling_retrain`` as plain calls: no flow runs, tasks, artifacts or transaction."""
    quiet = {"on_progress": lambda _: None}
    ingest(settings, end=as_of, **quiet)
    built = build_features(settings, as_of=as_of, **quiet)
    manifest = FeatureManifest.read(built.manifest_path)
    with Warehouse(settings.warehouse.path, read_only=True) as wh:
        windows = plan_retrain(wh.con, manifest, as_of, settings)
        data = prepare_data(wh.con, manifest, settings, windows.training)
    model, result = train_model(settings, manifest, data)
    staged = stage(model, result, manifest, windows.training, settings.train.staging_dir / "library")
    with Warehouse(settings.warehouse.path, read_only=True) as wh:
        evaluation = evaluate_model(
            wh.con, load_staged(staged, manifest), manifest, settings, windows.eval_start, windows.eval_end
        )
        fingerprint = wh.fingerprint(manifest.table_name)
    report = evaluate_gates(evaluation.metrics, settings.evaluation, settings.features.horizons)
    metrics = {k: (None if v != v else v) for k, v in evaluation.metrics.items()}
    return Registry(settings.registry.path).publish(
        staged, manifest, metrics=metrics, gates=report.to_dict(), windows=windows.as_dict(),
        data_fingerprint=fingerprint, predictions=evaluation.predictions,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="deployments/demo.yaml")
    parser.add_argument("--as-of", type=date.fromisoformat, default=date(2024, 12, 27))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        _, library = isolated(args.config, Path(tmp) / "library")
        began = time.perf_counter()
        library_version = library_retrain(library, args.as_of)
        library_s = time.perf_counter() - began
        flow_config, _ = isolated(args.config, Path(tmp) / "flow")
        began = time.perf_counter()
        state = rolling_retrain(config=str(flow_config), as_of=args.as_of, return_state=True)
        flow_s = time.perf_counter() - began
    ratio = flow_s / library_s
    verdict = "PASS" if ratio <= TARGET_RATIO and state.name == "Published" else "FAIL"
    print(f"rolling retrain of {args.config} as of {args.as_of}, from an empty warehouse and registry")
    print(f"  library calls       {library_s:8.1f} s  (published {library_version})")
    print(f"  rolling-retrain     {flow_s:8.1f} s  ({state.name}: {state.message})")
    print(f"  ratio {ratio:.2f}x; target <= {TARGET_RATIO}x: {verdict}")
    finish(verdict != "FAIL", args.json, {"library_s": library_s, "flow_s": flow_s, "ratio": ratio})


if __name__ == "__main__":
    main()
