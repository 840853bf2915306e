"""The ``backtest`` flow: replay the rolling-retrain schedule over history and stitch its out-of-sample record.

    from flows.backtest import backtest
    record = backtest(config="deployments/sp500.yaml", start=date(2016, 1, 4), end=date(2018, 1, 31), step=60)

    python -m flows.backtest deployments/sp500.yaml --start 2016-01-04 --end 2018-01-31 [--step 60] [--task-runner dask]

Each retrain (as-of date) is one task: it trains the configured model on the windows a scheduled retrain of that
day would use, predicts the sessions up to the next retrain and writes them, with the baselines' scores, to a Parquet
file in the run directory (``<train.staging_dir>/backtest-<flow run id>/``); it returns that path, never a frame.
The retrains run in parallel on a ``ThreadPoolTaskRunner`` (``task_runner="threads"``) or, with the ``dask`` extra,
on a local Dask cluster of worker processes (``"dask"``), in an inner flow so that a deployment can choose. A config
with ``train.warm_start: champion`` replays the chain of fine-tunings instead (see ``atft.backtest.chained_start``):
one retrain at a time, each starting from the weights the one before it wrote beside its predictions. The stitched
record (predictions.parquet, summary.json) and three artifacts close the run.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from contextlib import nullcontext
from datetime import date
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_image_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from safetensors.torch import load_file, save_file

from atft.backtest import (
    REPORTED_HORIZONS,
    SOURCES,
    BacktestWindow,
    backtest_charts,
    chained_start,
    daily_signal,
    load_window,
    plan_backtest,
    report_lines,
    run_window,
    signal_means,
    stitch,
    summarise_backtest,
)
from atft.charts import data_url, html_page
from atft.features.store import feature_dates
from atft.threads import core_budget
from flows.cli import Command, alias_main, run_flow
from flows.features import build_features
from flows.naming import named_by_config
from flows.references import BacktestRecord, FeatureRef, Overrides, ReplayedWindow, RunConfig, resolve

TaskRunnerName = Literal["threads", "dask"]


@task(name="replay-retrain", task_run_name="retrain-{window.as_of}", tags=["gpu"], cache_policy=NO_CACHE)
def replay_retrain(config: RunConfig, features: FeatureRef, window: BacktestWindow, run_dir: str) -> ReplayedWindow:
    """Train the retrain of ``window.as_of``, predict its OOS sessions; returns the Parquet path and how it went.

    In a warm-start chain it starts from the weights of the window before, and writes its own for the next."""
    began = time.perf_counter()
    logger = get_run_logger()
    settings = config.settings
    manifest = features.manifest()
    with config.warehouse() as wh:
        data = load_window(wh.con, manifest, settings, window)
    chained = settings.train.warm_start == "champion"
    previous = _weights_path(run_dir, window.index - 1)
    start = chained_start(settings, window, load_file(previous) if chained and window.index > 0 else None)
    logger.info("as-of %s: %s", window.as_of, start.reason)
    result = run_window(
        data, manifest, settings, window, lambda r: logger.info("as-of %s %s", window.as_of, r.line()), start=start
    )
    if chained:
        save_file({k: v.contiguous() for k, v in result.state_dict.items()}, _weights_path(run_dir, window.index))
    path = Path(run_dir) / f"window-{window.index:03d}.parquet"
    result.predictions.to_parquet(path, index=False)
    means = signal_means(daily_signal(result.predictions, settings.features.horizons))
    shown = [f"{s}_rank_ic_{h}d" for h in REPORTED_HORIZONS if h in settings.features.horizons for s in SOURCES]
    return ReplayedWindow(
        window=window.index,
        predictions_path=str(path),
        best_epoch=result.best_epoch,
        epochs_run=result.epochs_run,
        best_valid_rank_ic=result.best_valid_rank_ic,
        collapsed=result.collapsed,
        seconds=round(time.perf_counter() - began, 1),
        rank_ic={key: means[key] for key in shown if key in means},
        warm_start=result.warm_start["from_version"],
    )


def _weights_path(run_dir: str, index: int) -> Path:
    return Path(run_dir) / f"window-{index:03d}.safetensors"


@flow(name="backtest-windows", flow_run_name=named_by_config("backtest-windows"))
def replay_windows(
    config: RunConfig, features: FeatureRef, windows: list[BacktestWindow], run_dir: str
) -> list[ReplayedWindow]:
    """Every retrain as a task on this flow's task runner; one log line per finished window, in finishing order.

    A warm-start chain submits each retrain to wait for the one before it."""
    logger = get_run_logger()
    chained = config.settings.train.warm_start == "champion"
    futures: dict[Any, BacktestWindow] = {}
    for w in windows:
        after = list(futures)[-1:] if chained else None
        futures[replay_retrain.submit(config, features, w, run_dir, wait_for=after)] = w
    results, failed = [], []
    for future in as_completed(list(futures)):
        w = futures[future]
        try:
            result = future.result()
        except Exception as exc:
            failed.append(f"as-of {w.as_of}: {exc}")
            logger.error("retrain %d/%d, as-of %s, failed: %s", w.index + 1, len(windows), w.as_of, exc)
            continue
        results.append(result)
        ric = ", ".join(f"{key.replace('_rank_ic_', ' ')} {value:+.4f}" for key, value in result.rank_ic.items())
        logger.info(
            "retrain %d/%d done (%d of %d): as-of %s, trained %s..%s (best epoch %d of %d) in %.0f s; OOS %s..%s "
            "(%d sessions) RankIC %s",
            w.index + 1, len(windows), len(results), len(windows), w.as_of, w.retrain.train_start,
            w.retrain.valid_end, result.best_epoch, result.epochs_run, result.seconds, w.oos_start,
            w.oos_end, w.oos_days, ric,
        )  # fmt: skip
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(windows)} retrains failed: {'; '.join(failed)}")
    return sorted(results, key=lambda r: r.window)


def _task_runner(name: TaskRunnerName, workers: int, address: str | None) -> TaskRunner:
    if name == "threads":
        return ThreadPoolTaskRunner(max_workers=workers)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:
        raise RuntimeError("task_runner='dask' needs prefect-dask: pip install -e '.[dask]'") from exc
    if address:
        # An existing cluster: its workers need this project installed and the Prefect API this run uses.
        return DaskTaskRunner(address=address)
    # One thread per worker process: a window's torch threads are set by the task. Any free dashboard port.
    cluster = {"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": ":0"}
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=cluster)


def _api_for_workers() -> Any:
    """Worker processes get the run's settings from Prefect's serialized context; without an API URL (a throwaway
    local API), each would start its own server, so name the one this run uses."""
    if PREFECT_API_URL.value():
        return nullcontext()
    with get_client(sync_client=True) as client:
        return temporary_settings({PREFECT_API_URL: str(client.api_url)})


@task(name="stitch-backtest", cache_policy=NO_CACHE)
def stitch_backtest(
    config: RunConfig, run_dir: str, windows: list[BacktestWindow], results: list[ReplayedWindow]
) -> BacktestRecord:
    """The OOS predictions of every window in one Parquet file, and their metrics in summary.json."""
    settings = config.settings
    frame = stitch([pd.read_parquet(r.predictions_path) for r in results])
    directory = Path(run_dir)
    frame.to_parquet(directory / "predictions.parquet", index=False)
    kept = {"best_epoch", "epochs_run", "best_valid_rank_ic", "collapsed", "seconds", "warm_start"}
    training = {r.window: r.model_dump(include=kept) for r in results}
    rows = [w.row() | training[w.index] for w in windows]
    summary = summarise_backtest(
        frame, rows, settings.features.horizons, settings.evaluation.portfolio,
        real_prices=settings.source.kind != "synthetic",
    )  # fmt: skip
    (directory / "summary.json").write_text(json.dumps(summary, indent=2))
    charts = backtest_charts(frame, summary, settings.evaluation.portfolio)
    for h, image in charts.items():
        (directory / f"chart-{h}d.png").write_bytes(image)
    text = "\n".join(report_lines(summary))
    (directory / "report.html").write_text(
        html_page(f"Backtest replay: {config.stem}, {settings.model.name}",
                  [("Stitched out-of-sample record", text, list(charts.values()))])
    )  # fmt: skip
    return BacktestRecord(
        run_dir=run_dir,
        predictions_path=str(directory / "predictions.parquet"),
        summary_path=str(directory / "summary.json"),
        report_path=str(directory / "report.html"),
        charts=[str(directory / f"chart-{h}d.png") for h in charts],
        windows=len(windows),
    )


def _publish(config: RunConfig, summary: dict[str, Any], header: str, record: BacktestRecord) -> None:
    horizons = [h for h in REPORTED_HORIZONS if h in summary["horizons"]]
    sources = list(summary["metrics"])
    rank_ics = [f"{s}_rank_ic_{h}d" for h in horizons for s in sources]
    shown = ["window", "as_of", "train", "valid", "oos", "oos_days", "best_epoch", "epochs_run", "warm_start"]
    create_table_artifact(
        key=config.key("backtest", "windows"),
        table=[{k: row[k] for k in shown} | {k: _round(row.get(k)) for k in rank_ics} for row in summary["windows"]],
        description="Retrains of the backtest: windows and OOS RankIC of the model and the baselines",
    )
    metrics = [f"{m}_{h}d" for h in horizons for m in ("ic", "rank_ic", "rank_icir", "ls_sharpe", "ls_annual_return",
                                                          "max_drawdown")]  # fmt: skip
    rows = [{"source": s} | {m: _round(summary["metrics"][s][m]) for m in metrics} for s in sources]
    if summary["oracle_ratio"]:
        rows.append({"source": "model / oracle"} | {m: _round(v) for m, v in summary["oracle_ratio"].items()})
    create_table_artifact(
        key=config.key("backtest", "summary"),
        table=rows,
        description=f"Stitched OOS {summary['oos_start']}..{summary['oos_end']}: model vs baselines",
    )
    report = "\n".join(report_lines(summary))
    create_markdown_artifact(
        key=config.key("backtest", "report"),
        markdown=f"### Backtest replay\n\n{header}\n\n```\n{report}\n```\n\nAs one page: `{record.report_path}`\n",
    )
    for path in map(Path, record.charts):
        create_image_artifact(
            image_url=data_url(path.read_bytes()),
            key=config.key("backtest", path.stem),
            description=f"Stitched record: cumulative daily RankIC and long-short equity ({path})",
        )


def _round(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 4)


@flow(name="backtest", flow_run_name=named_by_config("backtest"))
def backtest(
    config: str | RunConfig,
    start: date,
    end: date,
    step: int | None = None,
    task_runner: TaskRunnerName = "threads",
    warehouse: str | None = None,
    workers: int | None = None,
    overrides: Overrides = None,
    dask_address: str | None = None,
) -> BacktestRecord:
    """Retrain every ``step`` sessions (default ``retrain.step_days``) with as-of dates from ``start`` to ``end``; each
    model predicts the sessions up to the next retrain. ``workers``: windows at a time (default: one per core, at
    most one per window); ``overrides``: dotted config keys, e.g. ``{"train.epochs": 1}``; ``dask_address``: an
    existing Dask scheduler (``tcp://host:8786``) to run the windows on instead of a local cluster (implies
    ``task_runner="dask"``; the cluster decides how many run at once, and each worker its own threads).

    Returns the run directory and the paths of the stitched predictions and of summary.json.
    """
    began = time.perf_counter()
    given = getattr(config, "path", config)
    # Resolved once: every task and subflow of the replay takes these settings, however the YAML is edited meanwhile.
    config = resolve(config, warehouse, overrides)
    settings = config.settings
    step = step or settings.retrain.step_days
    features = build_features(config=config)
    manifest = features.manifest()
    with config.warehouse() as wh:
        dates = feature_dates(wh.con, manifest.table_name)
    windows = plan_backtest(dates, start, end, step, settings, manifest.warm_up)
    run_dir = settings.train.staging_dir / f"backtest-{flow_run.id}"
    run_dir.mkdir(parents=True, exist_ok=True)
    budget = core_budget()
    task_runner = "dask" if dask_address else task_runner
    chained = settings.train.warm_start == "champion"
    parallel = 1 if chained else min(len(windows), workers or budget.usable)
    if parallel > 1 and not dask_address:
        # Windows at a time share the cores, each on a pinned share of them: windows on the thread runner are in one
        # process, where the thread policy cannot tell them from each other. The same count on both runners gives
        # the same numbers.
        config = resolve(config, overrides={"train.threads": max(1, budget.usable // parallel)})
    logger = get_run_logger()
    logger.info(
        "backtest of %s: %d retrains every %d sessions, as-of %s..%s, %s%s",
        settings.model.name, len(windows), step, windows[0].as_of, windows[-1].as_of,
        f"on the Dask cluster at {dask_address}" if dask_address else
        f"{parallel} at a time on {task_runner}; {budget.describe()}",
        "; a warm-start chain (train.warm_start: champion), one retrain after another" if chained else "",
    )  # fmt: skip
    replay = replay_windows.with_options(task_runner=_task_runner(task_runner, parallel, dask_address))
    with _api_for_workers() if task_runner == "dask" else nullcontext():
        results = replay(config, features, windows, str(run_dir))
    record = stitch_backtest(config, str(run_dir), windows, results)
    summary = json.loads(Path(record.summary_path).read_text())
    where = f"the Dask cluster at {dask_address}" if dask_address else f"{task_runner} ({parallel} at a time)"
    header = (
        f"`{given}` with overrides {overrides or 'none'} (resolved into `{config.path}`), {settings.model.name}, "
        f"{len(windows)} "
        f"retrains every {step} sessions on {where}, {time.perf_counter() - began:.0f} s; record in `{run_dir}`"
    )
    _publish(config, summary, header, record)
    for line in report_lines(summary):
        logger.log(logging.WARNING if line in summary["warnings"] else logging.INFO, line)
    return record


def _backtest_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--start", type=date.fromisoformat, required=True, help="first as-of date")
    parser.add_argument("--end", type=date.fromisoformat, required=True, help="last as-of date")
    parser.add_argument("--step", type=int, help="sessions between retrains (default: retrain.step_days)")
    parser.add_argument("--task-runner", choices=["threads", "dask"], default="threads")
    parser.add_argument("--workers", type=int, help="retrains at a time (default: one per core)")
    parser.add_argument("--dask-address", help="an existing Dask scheduler, e.g. tcp://10.0.0.5:8786")


def _run(config: RunConfig, args: argparse.Namespace) -> int:
    logging.getLogger("distributed").setLevel(logging.WARNING)  # the cluster's INFO lines would bury the progress
    began = time.perf_counter()
    state, code = run_flow(backtest, config=config, start=args.start, end=args.end, step=args.step,
                           task_runner=args.task_runner, workers=args.workers,
                           dask_address=args.dask_address)  # fmt: skip
    if code:
        return code
    record = state.result()
    print("\n".join(report_lines(json.loads(Path(record.summary_path).read_text()))))
    print(f"\n{time.perf_counter() - began:.0f} s; predictions {record.predictions_path}")
    print(f"summary {record.summary_path}")
    return 0


COMMAND = Command(
    "backtest", "Replay rolling retrains over history and print the out-of-sample record.",
    "atft backtest --config deployments/sp500.yaml --start 2016-01-04 --end 2018-01-31 --set train.epochs=1",
    _run, _backtest_arguments,
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return alias_main(COMMAND, argv)


if __name__ == "__main__":
    sys.exit(main())
