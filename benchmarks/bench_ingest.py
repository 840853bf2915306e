"""Ingest throughput: 2,000 synthetic stocks x 1,250 trading days (~2.5M rows) into a fresh warehouse.

Phases, each in its own process so that peak RSS belongs to that phase alone:
- baseline: generate the same market and bulk-load it into DuckDB with no validation, no merge, no hash;
  the floor that any ingest pays.
- ingest:   the real ingest (generation, pandera validation, staging, upsert, listings, oracle, hash).
- reingest: the same ingest again over the filled warehouse (every row compared, nothing changes).

Target: ingest under 30 s on 2 cores, validation included. Reported as absolute times and as a ratio to
the baseline measured in the same run.

    python benchmarks/bench_ingest.py [--stocks 2000 --sessions 1250] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
from harness import finish, peak_rss_mib, run_phase

from atft.calendar import TradingCalendar
from atft.config import PipelineConfig, SyntheticSourceConfig, UniverseConfig, WarehouseConfig
from atft.ingest import ingest
from atft.sources.synthetic import SyntheticSource

TARGET_S = 30.0
FIRST_DAY = date(2019, 1, 4)


def _config(stocks: int, sessions: int, warehouse: Path) -> PipelineConfig:
    calendar = TradingCalendar("XTKS")
    days = calendar.sessions(FIRST_DAY, calendar.last_session)[:sessions]
    source = SyntheticSourceConfig(kind="synthetic", n_stocks=stocks, start=FIRST_DAY, end=days[-1].date())
    return PipelineConfig(
        name="bench",
        source=source,
        universe=UniverseConfig(code_pattern=r"^\d{4}$"),
        warehouse=WarehouseConfig(path=warehouse),
    )


def _phase(name: str, stocks: int, sessions: int, warehouse: Path) -> dict[str, float]:
    config = _config(stocks, sessions, warehouse)
    began = time.perf_counter()
    if name == "baseline":
        source = SyntheticSource(config.source, TradingCalendar(config.calendar))
        start, end = source.default_window()
        con = duckdb.connect(str(warehouse))
        rows = 0
        for chunk in source.quote_chunks(start, end):
            con.register("chunk", pa.Table.from_pandas(chunk.frame, preserve_index=False))
            con.execute("INSERT INTO quotes SELECT * FROM chunk" if rows else "CREATE TABLE quotes AS FROM chunk")
            rows += len(chunk.frame)
        con.close()
    else:
        # start is explicit so that the re-ingest reads the whole window again, not just the last day.
        rows = ingest(config, start=config.source.start, on_progress=lambda _: None).rows_received
    seconds = time.perf_counter() - began
    peak_mib = peak_rss_mib()
    return {"seconds": seconds, "rows": rows, "rows_per_s": rows / seconds, "peak_rss_mib": peak_mib}


def _run_phase(name: str, args: argparse.Namespace, warehouse: Path) -> dict:
    options = ["--stocks", str(args.stocks), "--sessions", str(args.sessions), "--warehouse", str(warehouse)]
    return run_phase(__file__, name, options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stocks", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=1250)
    parser.add_argument("--phase", choices=["baseline", "ingest", "reingest"], help=argparse.SUPPRESS)
    parser.add_argument("--warehouse", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(_phase(args.phase, args.stocks, args.sessions, args.warehouse)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        results = {
            "baseline": _run_phase("baseline", args, Path(tmp) / "baseline.duckdb"),
            "ingest": _run_phase("ingest", args, Path(tmp) / "warehouse.duckdb"),
            "reingest": _run_phase("reingest", args, Path(tmp) / "warehouse.duckdb"),
        }
    ratio = results["ingest"]["seconds"] / results["baseline"]["seconds"]
    print(f"ingest benchmark: {args.stocks:,} stocks x {args.sessions:,} sessions")
    for phase, r in results.items():
        print(
            f"  {phase:<9} {r['seconds']:6.1f} s  {r['rows']:>10,} rows  {r['rows_per_s']:>10,.0f} rows/s  "
            f"peak RSS {r['peak_rss_mib']:,.0f} MiB"
        )
    verdict = "PASS" if results["ingest"]["seconds"] < TARGET_S else "FAIL"
    print(f"  ingest / baseline = {ratio:.2f}x; target ingest < {TARGET_S:.0f} s: {verdict}")
    finish(verdict != "FAIL", args.json, {"results": results, "ratio_to_baseline": ratio, "target_s": TARGET_S})


if __name__ == "__main__":
    main()
