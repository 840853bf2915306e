"""Walk-forward benchmark on real prices: the production rolling retrains replayed, every model on the same days.

    .venv/bin/python benchmarks/bench_walkforward.py                       # deployments/sp500.yaml, 2016..2018-01
    .venv/bin/python benchmarks/bench_walkforward.py --start 2017-06-01 --step 60 --epochs 1   # the cheap setting
    .venv/bin/python benchmarks/bench_walkforward.py --warm-start champion      # each retrain fine-tunes the last

It is the backtest's library code (:mod:`atft.backtest`) run one window at a time in this process: as-of dates every
``--step`` sessions, each retrain on the production windows (``retrain.*``, purged by the longest label span), its
OOS sessions stitched. On the same stock-days it scores ATFT-GAT-FAN, the APEX baseline, ridge and LightGBM on the
CS-Z features, the 5-day reversal factor and an equal-weight rank average of the four learnt models. Each execution
lag of ``--lags`` is a separate replay on its own feature table. ``--warm-start champion`` replays the chain of
fine-tunings a warm-start deployment runs (:func:`atft.backtest.chained_start`). Output in ``--out``: summary.json
(per source and horizon: IC, RankIC, their IRs, long-short Sharpe after ``cost_bps``, turnover, max drawdown;
per-window RankIC, epochs and seconds; the RankIC difference to the best baseline with a 90% block-bootstrap
interval), report.md, PNG charts of the cumulative RankIC and the long-short equity per source, and report.html (the
report and its charts as one standalone page).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
from harness import finish

from atft.backtest import (
    REPORTED_HORIZONS,
    SOURCES,
    add_rank_average,
    backtest_charts,
    chained_start,
    daily_signal,
    load_window,
    plan_backtest,
    rank_ic_differences,
    run_window,
    stitch,
    summarise_backtest,
)
from atft.baselines import csz_columns
from atft.charts import html_page
from atft.config import PipelineConfig, load_config, parse_overrides
from atft.controls import SHUFFLED_RANK_IC, plant_leak, shuffle_labels
from atft.features.build import build_features
from atft.features.store import feature_dates
from atft.ingest import ingest
from schemas.manifest import FeatureManifest

ENSEMBLE_MEMBERS = ("model", "apex", "ridge", "lightgbm")
NAMES = {"model": "ATFT-GAT-FAN", "apex": "APEX", "ridge": "ridge", "lightgbm": "LightGBM", "reversal": "reversal 5d",
         "ensemble": "rank average"}  # fmt: skip


def replay(
    settings: PipelineConfig, start: date, end: date, step: int, apex: bool, control: str
) -> tuple[pd.DataFrame, dict]:
    """Ingest and build the config's features if needed, then replay its retrains; the stitched frame and summary.

    ``control``: ``shuffled`` trains every model on labels permuted within each day, ``leak`` plants the 5-day label
    in the first CS-Z input (see :mod:`atft.controls`), ``none`` replays the data as it is."""
    ingest(settings, on_progress=lambda _: None)
    manifest = FeatureManifest.read(build_features(settings, on_progress=lambda _: None).manifest_path)
    with duckdb.connect(str(settings.warehouse.path), read_only=True) as con:
        dates = feature_dates(con, manifest.table_name)
    windows = plan_backtest(dates, start, end, step, settings, manifest.warm_up)
    frames, rows, began, previous = [], [], time.perf_counter(), None
    for window in windows:
        tick = time.perf_counter()
        with duckdb.connect(str(settings.warehouse.path), read_only=True) as con:
            data = load_window(con, manifest, settings, window)
        if control == "shuffled":
            shuffle_labels(data.training.arrays, seed=window.index)
        elif control == "leak":
            leaked = manifest.feature_names[csz_columns(manifest)[0]]
            for arrays in (data.training.arrays, data.arrays):
                plant_leak(arrays, leaked, horizon=5)
        start = chained_start(settings, window, previous)
        result = run_window(data, manifest, settings, window, also_train=("apex",) if apex else (), start=start)
        frames.append(result.predictions)
        previous = result.state_dict
        rows.append(window.row() | {"best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                                    "warm_start": result.warm_start["from_version"],
                                    "seconds": round(time.perf_counter() - tick, 1)})  # fmt: skip
        done = len(frames)
        eta = (time.perf_counter() - began) / done * (len(windows) - done)
        print(f"  window {done}/{len(windows)} as-of {window.as_of}: {rows[-1]['seconds']:.0f} s, "
              f"ETA {eta / 60:.1f} min", file=sys.stderr, flush=True)  # fmt: skip
    horizons = settings.features.horizons
    members = [m for m in ENSEMBLE_MEMBERS if f"{SOURCES[m]}_{horizons[0]}d" in frames[0]]
    frame = add_rank_average(stitch(frames), members, horizons)
    summary = summarise_backtest(frame, rows, horizons, settings.evaluation.portfolio, real_prices=True)
    summary["differences"] = rank_ic_differences(daily_signal(frame, horizons), horizons)
    return frame, summary


def charts(frame: pd.DataFrame, summary: dict, settings: PipelineConfig, out: Path, tag: str) -> list[str]:
    """Cumulative daily RankIC and long-short equity per source, one PNG each per reported horizon."""
    written = []
    for h, image in backtest_charts(frame, summary, settings.evaluation.portfolio, NAMES).items():
        path = out / f"walkforward-{tag}-{h}d.png"
        path.write_bytes(image)
        written.append(path.name)
    return written


def html_report(results: dict[str, Any], out: Path) -> str:
    """``report.md``'s text and the charts of every lag, as one standalone page (the images inlined)."""
    images = [(out / name).read_bytes() for run in results["lags"].values() for name in run["charts"]]
    return html_page(f"Walk-forward benchmark: {results['config']}", [("Report", report(results), images)])


def report(results: dict[str, Any]) -> str:
    """The markdown report: per lag, the table of every source at 1d and 5d, the intervals, the windows."""
    lines = [f"# Walk-forward benchmark: {results['config']}", "",
             f"As-of {results['start']}..{results['end']}, every {results['step']} sessions, {results['epochs']} "
             f"epochs, warm start {results['warm_start']}, control {results['control']}, "
             f"{results['seconds'] / 60:.1f} min on this host.",
             *([f"Overrides: {', '.join(f'{k}={v}' for k, v in results['set'].items())}."] if results["set"] else []),
             ""]  # fmt: skip
    for tag, run in results["lags"].items():
        summary = run["summary"]
        lag = tag.removeprefix("lag")
        lines += [f"## execution lag {lag}: OOS {summary['oos_start']}..{summary['oos_end']}, {summary['oos_days']} "
                  f"sessions, {len(summary['windows'])} retrains", "", *summary["warnings"]]  # fmt: skip
        horizons = [h for h in REPORTED_HORIZONS if h in summary["horizons"]]
        if results["control"] == "shuffled":
            lines += [f"Shuffled-label control, |stitched RankIC {h}d| below {SHUFFLED_RANK_IC}: "
                      + ", ".join(f"{NAMES.get(s, s)} {abs(m[f'rank_ic_{h}d']):.4f} "
                                  f"({'pass' if abs(m[f'rank_ic_{h}d']) < SHUFFLED_RANK_IC else 'FAIL'})"
                                  for s, m in summary["metrics"].items()) for h in horizons]  # fmt: skip
        lines.append("")
        if results["control"] == "none":
            lines += ["| target (ATFT-GAT-FAN) | measured | met |", "|---|---|---|",
                      *(f"| {what} | {figures} | {'yes' if met else 'no'} |" for what, figures, met in
                        skill_targets(summary)), ""]  # fmt: skip
        keys = [(m, h) for h in horizons for m in ("ic", "rank_ic", "icir", "rank_icir", "ls_sharpe", "turnover",
                                                   "max_drawdown")]  # fmt: skip
        lines.append("| source | " + " | ".join(f"{m} {h}d" for m, h in keys) + " |")
        lines.append("|---" * (len(keys) + 1) + "|")
        for source, metrics in summary["metrics"].items():
            lines.append(f"| {NAMES.get(source, source)} | " + " | ".join(_cell(metrics[f"{m}_{h}d"]) for m, h in keys)
                         + " |")  # fmt: skip
        lines.append("")
        for horizon, block in summary["differences"].items():
            lines.append(f"RankIC {horizon} minus the best baseline ({NAMES[block['best_baseline']]}), "
                         f"{block['level']:.0%} block-bootstrap interval:")  # fmt: skip
            for source, d in block["differences"].items():
                lines.append(
                    f"- {NAMES.get(source, source)}: {_cell(d['mean'])} [{_cell(d['low'])}, {_cell(d['high'])}]"
                )
            lines.append("")
        if summary["halves"]:
            lines += ["| half | windows | OOS | source | RankIC 5d | RankICIR 5d | LS Sharpe 5d |", "|---" * 7 + "|"]
            for name, half in summary["halves"].items():
                span = f"{half['windows'][0]}..{half['windows'][-1]}"
                lines += [f"| {name} | {span} | {half['oos']} | {NAMES.get(s, s)} | {_cell(m['rank_ic_5d'])} | "
                          f"{_cell(m['rank_icir_5d'])} | {_cell(m['ls_sharpe_5d'])} |"
                          for s, m in half["metrics"].items()]  # fmt: skip
            lines.append("")
        for source, wins in summary["wins_rank_ic_5d"].items():
            lines.append(f"{NAMES.get(source, source)} beats, in 5d RankIC, " + ", ".join(
                f"{NAMES[b]} in {n} of {len(summary['windows'])} windows" for b, n in wins.items()) + ".")  # fmt: skip
        lines.append("")
        lines.append("| window | as-of | OOS | epochs | seconds | "
                     + " | ".join(f"{NAMES.get(s, s)} 5d" for s in summary["metrics"]) + " |")  # fmt: skip
        lines.append("|---" * (5 + len(summary["metrics"])) + "|")
        for row in summary["windows"]:
            cells = " | ".join(_cell(row.get(f"{s}_rank_ic_5d")) for s in summary["metrics"])
            lines.append(f"| {row['window']} | {row['as_of']} | {row['oos']} | {row['epochs_run']} | "
                         f"{row['seconds']:.0f} | {cells} |")  # fmt: skip
        lines += ["", *(f"![{name}]({name})" for name in run["charts"]), ""]
    return "\n".join(lines)


def skill_targets(summary: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """The model against the best of ridge and LightGBM (by stitched 5d RankIC), as the real-price skill targets ask:
    (what, the figures, met)."""
    metrics, wins = summary["metrics"], summary["wins_rank_ic_5d"].get("model", {})
    best = max(("ridge", "lightgbm"), key=lambda b: metrics[b]["rank_ic_5d"] or -1.0)
    model, base, n = metrics["model"], metrics[best], len(summary["windows"])

    def against(key: str, digits: int, other: dict[str, Any] = base) -> str:
        return f"{model[key]:.{digits}f} against {other[key]:.{digits}f}"

    ratio = model["rank_ic_5d"] / base["rank_ic_5d"]
    rows = [
        (f"5d RankIC at least 1.2x {NAMES[best]}'s and at least 0.02", f"{against('rank_ic_5d', 4)} ({ratio:.2f}x)",
         model["rank_ic_5d"] >= max(1.2 * base["rank_ic_5d"], 0.02)),
        (f"5d RankICIR at least {NAMES[best]}'s", against("rank_icir_5d", 3),
         model["rank_icir_5d"] >= base["rank_icir_5d"]),
        (f"5d long-short Sharpe after costs above {NAMES[best]}'s", against("ls_sharpe_5d", 2),
         model["ls_sharpe_5d"] > base["ls_sharpe_5d"]),
        ("ahead of ridge in at least 60% of the windows", f"{wins.get('ridge', 0)} of {n}",
         wins.get("ridge", 0) >= 0.6 * n),
    ]  # fmt: skip
    if summary["halves"]:
        later = summary["halves"]["later"]["metrics"]
        best_later = max(later[b]["rank_ic_5d"] for b in ("ridge", "lightgbm"))
        rows.append(("the later half's 5d RankIC ahead of the best baseline's",
                     f"{later['model']['rank_ic_5d']:.4f} against {best_later:.4f}",
                     later["model"]["rank_ic_5d"] > best_later))  # fmt: skip
    if "apex" in metrics:
        rows.append(("5d RankIC at or above APEX's", against("rank_ic_5d", 4, metrics["apex"]),
                     model["rank_ic_5d"] >= metrics["apex"]["rank_ic_5d"]))  # fmt: skip
    return rows


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="deployments/sp500.yaml")
    parser.add_argument("--start", type=date.fromisoformat, default=date(2016, 1, 4))
    parser.add_argument("--end", type=date.fromisoformat, default=date(2018, 1, 31))
    parser.add_argument("--step", type=int, help="sessions between retrains (default retrain.step_days)")
    parser.add_argument("--epochs", type=int, help="override train.epochs")
    parser.add_argument("--lags", default="1,0", help="execution lags to replay, the first one reported first")
    parser.add_argument("--no-apex", action="store_true", help="leave the APEX baseline out (half the training)")
    parser.add_argument("--warm-start", choices=("none", "champion"), help="override train.warm_start")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides, values read as YAML (e.g. model.ensemble=3)")  # fmt: skip
    parser.add_argument("--control", choices=("none", "shuffled", "leak"), default="none",
                        help="an honesty control: labels shuffled within each day, or a planted leak")  # fmt: skip
    parser.add_argument("--warehouse", help="override warehouse.path (one per lag is derived from it)")
    parser.add_argument("--out", type=Path, default=Path("data/bench/walkforward"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    results: dict[str, Any] = {"config": args.config, "set": parse_overrides(args.set), "start": str(args.start),
                               "end": str(args.end), "control": args.control, "lags": {}}  # fmt: skip
    for lag in [int(v) for v in args.lags.split(",")]:
        overrides: dict[str, Any] = {**parse_overrides(args.set), "features.execution_lag": lag}
        if args.epochs:
            overrides["train.epochs"] = args.epochs
        if args.warm_start:
            overrides["train.warm_start"] = args.warm_start
        base = load_config(args.config)
        warehouse = Path(args.warehouse) if args.warehouse else base.warehouse.path
        overrides["warehouse.path"] = str(warehouse.with_name(f"{warehouse.stem}-lag{lag}{warehouse.suffix}"))
        settings = load_config(args.config, overrides)
        step = args.step or settings.retrain.step_days
        print(f"execution lag {lag}: replaying {args.start}..{args.end} every {step} sessions", file=sys.stderr)
        tick = time.perf_counter()
        frame, summary = replay(settings, args.start, args.end, step, apex=not args.no_apex, control=args.control)
        tag = f"lag{lag}"
        results["lags"][tag] = {"summary": summary, "charts": charts(frame, summary, settings, args.out, tag),
                                "seconds": round(time.perf_counter() - tick, 1)}  # fmt: skip
        results |= {"step": step, "epochs": settings.train.epochs, "warm_start": settings.train.warm_start}
    results["seconds"] = round(time.perf_counter() - began, 1)
    (args.out / "summary.json").write_text(json.dumps(results, indent=2, default=str))
    (args.out / "report.md").write_text(report(results))
    (args.out / "report.html").write_text(html_report(results, args.out))
    print(report(results))
    finish(True, args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
