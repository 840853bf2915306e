"""Feature build: 2,000 synthetic stocks x 1,250 trading days, full build plus validation, then one new day.

Phases, each in its own process so that peak RSS belongs to that phase alone:
- ingest:      the raw market (setup, timed for reference).
- baseline:    reading the raw quotes out of DuckDB into pandas, the floor that any feature build pays.
- full:        the feature table from scratch: panel, ~80 base + CS-Z features, targets, validation, write.
- incremental: one more trading day ingested, then the feature table brought up to date.

Targets: full build + validation <= 90 s and peak RSS <= 6 GB on 2 cores.

    python benchmarks/bench_features.py [--stocks 2000 --sessions 1250] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import date
from pathlib import Path

from harness import finish, peak_rss_mib, run_phase

from atft.calendar import TradingCalendar
from atft.config import FeaturesConfig, PipelineConfig, SyntheticSourceConfig, UniverseConfig, WarehouseConfig
from atft.features.build import build_features
from atft.ingest import ingest
from atft.warehouse import Warehouse

TARGET_S, TARGET_RSS_MIB = 90.0, 6 * 1024
FIRST_DAY = date(2019, 1, 4)


def _config(stocks: int, sessions: int, workdir: Path) -> tuple[PipelineConfig, date]:
    """The market (one session longer than measured) and the last day of the full build."""
    calendar = TradingCalendar("XTKS")
    days = calendar.sessions(FIRST_DAY, calendar.last_session)[: sessions + 1]
    source = SyntheticSourceConfig(kind="synthetic", n_stocks=stocks, start=FIRST_DAY, end=days[-1].date())
    config = PipelineConfig(
        name="bench",
        source=source,
        universe=UniverseConfig(code_pattern=r"^\d{4}$"),
        warehouse=WarehouseConfig(path=workdir / "warehouse.duckdb"),
        features=FeaturesConfig(manifest_dir=workdir / "manifests"),
    )
    return config, days[-2].date()


def _phase(name: str, stocks: int, sessions: int, workdir: Path) -> dict[str, float | str]:
    config, last_but_one = _config(stocks, sessions, workdir)
    quiet = {"on_progress": lambda _: None}
    detail = ""
    began = time.perf_counter()
    if name == "ingest":
        ingest(config, end=last_but_one, **quiet)
    elif name == "baseline":
        with Warehouse(config.warehouse.path, read_only=True) as wh:
            wh.con.sql("SELECT * FROM raw_quotes").df()
    elif name == "full":
        detail = build_features(config, **quiet).summary()
    else:
        ingest(config, **quiet)  # the one remaining session
        began = time.perf_counter()
        detail = build_features(config, **quiet).summary()
    seconds = time.perf_counter() - began
    return {
        "seconds": seconds,
        "peak_rss_mib": peak_rss_mib(),
        "detail": detail,
    }


def _run_phase(name: str, args: argparse.Namespace, workdir: Path) -> dict:
    options = ["--stocks", str(args.stocks), "--sessions", str(args.sessions), "--workdir", str(workdir)]
    return run_phase(__file__, name, options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stocks", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=1250)
    parser.add_argument("--phase", choices=["ingest", "baseline", "full", "incremental"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(_phase(args.phase, args.stocks, args.sessions, args.workdir)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
        results = {phase: _run_phase(phase, args, Path(tmp)) for phase in ("ingest", "baseline", "full", "incremental")}
    print(f"feature benchmark: {args.stocks:,} stocks x {args.sessions:,} sessions")
    for phase, r in results.items():
        print(f"  {phase:<12} {r['seconds']:7.1f} s  peak RSS {r['peak_rss_mib']:7,.0f} MiB")
    full = results["full"]
    print(full["detail"])
    ratio = full["seconds"] / results["baseline"]["seconds"]
    ok = full["seconds"] <= TARGET_S and full["peak_rss_mib"] <= TARGET_RSS_MIB
    print(
        f"  full build / raw read = {ratio:.1f}x; one-day incremental rebuild {results['incremental']['seconds']:.1f} s"
    )
    print(f"  targets: full <= {TARGET_S:.0f} s and peak RSS <= {TARGET_RSS_MIB:,} MiB: {'PASS' if ok else 'FAIL'}")
    finish(ok, args.json, {"results": results, "ratio_to_baseline": ratio})


if __name__ == "__main__":
    main()
