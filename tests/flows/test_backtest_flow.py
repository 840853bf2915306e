"""``backtest``: rolling retrains replayed on threads, on a local Dask cluster and on an existing one by address,
stitched without overlap or gap, with metrics that a recomputation from the stitched Parquet reproduces, and no
training label past its as-of date."""

import itertools
import json
import socket
import subprocess
import sys
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import torch
from distributed import Client
from safetensors.torch import load_file

import flows.features as features_flow
import flows.ingest as ingest_flow
from atft.backtest import load_window, plan_backtest, untrained_predict
from atft.baselines import csz_columns, fit_ridge
from atft.config import load_config
from atft.metrics import evaluate_predictions
from atft.training.session import initial_model
from flows.backtest import backtest
from schemas.manifest import FeatureManifest

START, END, STEP = date(2021, 10, 1), date(2021, 12, 10), 20  # three retrains, 60 OOS sessions
SOURCES = {"model": "pred", "ridge": "ridge", "reversal": "reversal", "oracle": "oracle"}
HORIZONS = [1, 5, 10, 20]


@pytest.fixture(scope="module")
def market(tmp_path_factory, small_market):
    """36 synthetic stocks over two years; retrains of 60 train and 20 valid sessions, one epoch of a tiny model."""
    tmp = tmp_path_factory.mktemp("backtest-flow")
    path = small_market(
        tmp,
        "replay",
        source={"seed": 5, "n_stocks": 36, "start": "2021-01-04", "end": "2022-12-30"},
        retrain={"train_days": 60, "valid_days": 20, "step_days": STEP},
        evaluation={"eval_days": 5},
    )
    ingest_flow.ingest(config=str(path))
    ref = features_flow.build_features(config=str(path))
    with duckdb.connect(str(tmp / "market.duckdb"), read_only=True) as con:
        dates = [d for (d,) in con.execute(f"SELECT DISTINCT Date FROM {ref.table} ORDER BY Date").fetchall()]
    return str(path), FeatureManifest.read(ref.manifest_path), dates


@pytest.fixture(scope="module")
def threads_run(market):
    config, _, _ = market
    result = backtest(config=config, start=START, end=END, step=STEP)
    return json.loads(Path(result.summary_path).read_text()), pd.read_parquet(result.predictions_path)


def test_the_record_is_one_html_page_with_its_charts_and_image_artifacts(market, threads_run, read_artifacts):
    config, _, _ = market
    # The stitched record of the module's run is the latest in the staging directory.
    run_dir = max((Path(config).parent / "staging").glob("backtest-*"), key=lambda p: p.stat().st_mtime)
    page = (run_dir / "report.html").read_text()
    assert page.count("src='data:image/png;base64,") == 2 and "Stitched out-of-sample record" in page
    assert sorted(p.name for p in run_dir.glob("chart-*.png")) == ["chart-1d.png", "chart-5d.png"]
    assert read_artifacts("backtest-replay-chart-5d")[0].data.startswith("data:image/png;base64,")


def test_stitched_predictions_tile_the_oos_sessions_of_each_window(market, threads_run):
    config, manifest, dates = market
    summary, frame = threads_run
    first = dates.index(START)
    assert [w["as_of"] for w in summary["windows"]] == [str(dates[first + k * STEP]) for k in range(3)]
    for k, window in enumerate(summary["windows"]):
        # The sessions strictly after the as-of date, through the next as-of date: no overlap, no gap.
        expected = dates[first + k * STEP + 1 : first + (k + 1) * STEP + 1]
        assert sorted(frame.loc[frame["window"] == k, "Date"].unique()) == expected
        assert window["oos"] == f"{expected[0]}..{expected[-1]}" and window["oos_days"] == STEP
    assert not frame.duplicated(["Date", "Code"]).any()
    with duckdb.connect(str(load_config(config).warehouse.path), read_only=True) as con:
        sql = f"SELECT count(*) FROM {manifest.table_name} WHERE Date BETWEEN ? AND ?"
        (rows,) = con.execute(sql, [dates[first + 1], dates[first + 3 * STEP]]).fetchone()
    assert len(frame) == rows  # every stock-day of the OOS sessions, once


def _daily(frame: pd.DataFrame, column: str, h: int, rank: bool) -> pd.Series:
    def one_day(day: pd.DataFrame) -> float:
        pair = day[[column, f"label_{h}d"]].dropna()
        return (pair.rank() if rank else pair).corr().iloc[0, 1]

    return frame.groupby("Date")[[column, f"label_{h}d"]].apply(one_day)


def test_summary_metrics_equal_a_recomputation_from_the_stitched_parquet(market, threads_run):
    config, _, _ = market
    summary, frame = threads_run
    windows = frame.groupby("Date")["window"].first()
    for source, prefix in SOURCES.items():
        for h in (1, 5):
            for metric, rank in (("ic", False), ("rank_ic", True)):
                daily = _daily(frame, f"{prefix}_{h}d", h, rank)
                assert summary["metrics"][source][f"{metric}_{h}d"] == pytest.approx(daily.mean(), abs=1e-9)
                assert [d[f"{source}_{metric}_{h}d"] for d in summary["daily"]] == pytest.approx(list(daily), abs=1e-9)
                for k, row in enumerate(summary["windows"]):
                    assert row[f"{source}_{metric}_{h}d"] == pytest.approx(daily[windows == k].mean(), abs=1e-9)
    # The book trades the raw forward returns of the stitched days.
    dense = {c: np.stack([frame.pivot(index="Date", columns="Code", values=f"{c}_{h}d").to_numpy() for h in HORIZONS],
                         axis=-1) for c in ("pred", "label", "target")}  # fmt: skip
    book = evaluate_predictions(dense["pred"], dense["label"], np.isfinite(dense["label"]), HORIZONS,
                                load_config(config).evaluation.portfolio, returns=dense["target"])  # fmt: skip
    for name in ("ls_sharpe_5d", "ls_annual_return_5d", "max_drawdown_5d", "turnover_1d", "jpx_sharpe_5d"):
        assert summary["metrics"]["model"][name] == pytest.approx(book[name], abs=1e-9)
    ratio = summary["metrics"]["model"]["rank_ic_5d"] / summary["metrics"]["oracle"]["rank_ic_5d"]
    assert summary["oracle_ratio"]["rank_ic_5d"] == pytest.approx(ratio)
    assert all(np.isfinite(summary["metrics"][s]["rank_ic_5d"]) for s in ("ridge", "reversal", "oracle"))


def test_artifacts_report_each_window_and_the_summary(threads_run, read_artifacts):
    windows = json.loads(read_artifacts("backtest-replay-windows")[0].data)
    assert [row["window"] for row in windows] == [0, 1, 2]
    assert {"as_of", "train", "valid", "oos", "model_rank_ic_5d", "ridge_rank_ic_1d", "oracle_rank_ic_5d"} <= set(
        windows[0]
    )
    rows = json.loads(read_artifacts("backtest-replay-summary")[0].data)
    assert [row["source"] for row in rows] == ["model", "ridge", "lightgbm", "reversal", "oracle", "model / oracle"]
    assert "model RankIC / oracle RankIC" in read_artifacts("backtest-replay-report")[0].data


def test_a_local_dask_cluster_replays_the_same_predictions(market, threads_run):
    config, _, _ = market
    _, threads = threads_run
    result = backtest(config=config, start=START, end=END, step=STEP, task_runner="dask", workers=2)
    dask = pd.read_parquet(result.predictions_path)
    # Same seeds, same data, same torch thread count per window: bit for bit (fits in one process take turns, see
    # atft.backtest.TORCH_LOCK; a different intra-op thread count would move float32 sums in their last bits).
    pd.testing.assert_frame_equal(dask, threads, check_exact=True)


@pytest.fixture
def dask_cluster():
    """A scheduler and two single-thread workers on loopback ports, each its own process, as a user's cluster."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    dask = [sys.executable, "-m", "dask"]
    processes = [subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                   "--dashboard-address", "127.0.0.1:0"], stderr=subprocess.DEVNULL)]  # fmt: skip
    worker = [*dask, "worker", address, "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard"]
    processes += [subprocess.Popen(worker, stderr=subprocess.DEVNULL) for _ in range(2)]
    try:
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def test_an_existing_dask_cluster_by_address_replays_the_same_predictions(market, threads_run, dask_cluster):
    config, _, _ = market
    _, threads = threads_run
    # The threads run pinned each of its two windows at a time to one thread; so does this one, to compare exactly.
    result = backtest(config=config, start=START, end=END, step=STEP, dask_address=dask_cluster,
                      overrides={"train.threads": 1})  # fmt: skip
    with Client(dask_cluster) as client:  # the windows ran there, not on a cluster of the flow's own
        assert "replay_retrain" in client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes))
    pd.testing.assert_frame_equal(pd.read_parquet(result.predictions_path), threads, check_exact=True)


def test_a_warm_start_config_replays_a_chain_each_retrain_starting_from_the_one_before(market, threads_run):
    config, _, _ = market
    _, cold = threads_run
    # A vanishing fine-tuning rate: each window's best state is then the previous window's weights, up to float noise,
    # which shows the chain loaded them (a cold start would be a fresh initialisation, far from them).
    # One thread, as each of the cold replay's two windows at a time had, so that the first windows compare exactly.
    overrides = {"train.warm_start": "champion", "train.warm_start_epochs": 1, "train.warm_start_learning_rate": 1e-12,
                 "train.threads": 1}  # fmt: skip
    result = backtest(config=config, start=START, end=END, step=STEP, overrides=overrides)
    summary = json.loads(Path(result.summary_path).read_text())
    assert [w["warm_start"] for w in summary["windows"]] == [None, "window 0", "window 1"]
    assert [w["epochs_run"] for w in summary["windows"]][1:] == [1, 1]
    run_dir = Path(result.run_dir)
    weights = [load_file(run_dir / f"window-{k:03d}.safetensors") for k in range(3)]
    for before, after in itertools.pairwise(weights):
        learnt = [name for name in after if not name.startswith("input_")]  # the input scaling is refitted per window
        assert learnt and all(torch.allclose(before[n], after[n], atol=1e-6) for n in learnt)
        assert not torch.equal(before["input_mean"], after["input_mean"])
    warm = pd.read_parquet(result.predictions_path)
    # The first window trains as the cold replay does; the later ones predict with the first window's weights.
    first = cold["window"] == 0
    pd.testing.assert_frame_equal(warm[first], cold[first], check_exact=True)
    assert not np.allclose(warm.loc[~first, "pred_5d"], cold.loc[~first, "pred_5d"])


def test_no_training_label_reaches_past_its_as_of_date(market):
    config, manifest, dates = market
    settings = load_config(config)
    warm_up = manifest.warm_up
    position = {d: i for i, d in enumerate(dates)}
    with duckdb.connect(str(settings.warehouse.path), read_only=True) as con:
        for window in plan_backtest(dates, START, END, STEP, settings, warm_up):
            assert window.retrain.valid_end < window.as_of < window.oos_start
            data = load_window(con, manifest, settings, window).training
            for dataset, end in ((data.train, window.retrain.train_end), (data.valid, window.retrain.valid_end)):
                assert dataset.label_cutoff == dataset.days[-1]
                used = dataset[list(range(len(dataset)))].y_mask.numpy().reshape(len(dataset.days), -1, len(HORIZONS))
                day, _, k = np.nonzero(used)
                assert day.size
                label_ends = [dates[position[data.arrays.dates[dataset.days[i]].date()] + HORIZONS[j]]
                              for i, j in zip(day, k, strict=True)]  # fmt: skip
                assert max(label_ends) <= end < window.as_of
            # Ridge: 5-day labels that end after the last training day change nothing; the last one inside does.
            columns, last = csz_columns(manifest), data.train_days[-1]
            weights = fit_ridge(data.arrays, data.train_days, columns, 5)
            data.arrays.targets[last - 4 :] = 1e6
            assert np.array_equal(weights, fit_ridge(data.arrays, data.train_days, columns, 5))
            data.arrays.targets[last - 5] = 1e6
            assert not np.array_equal(weights, fit_ridge(data.arrays, data.train_days, columns, 5))


def test_the_untrained_floor_starts_where_training_starts_and_never_reads_a_label(market):
    config, manifest, dates = market
    settings = load_config(config)
    window = plan_backtest(dates, START, END, STEP, settings, manifest.warm_up)[0]
    with duckdb.connect(str(settings.warehouse.path), read_only=True) as con:
        data = load_window(con, manifest, settings, window)
    floor = untrained_predict(data, manifest, settings)
    assert floor.shape == (len(data.days), len(data.arrays.codes), len(HORIZONS)) and np.isfinite(floor).all()
    # Member 0 of an ensemble starts as the single model of its seed; member 1 is seed + 1's.
    pair = settings.model_copy(update={"model": settings.model.model_copy(update={"ensemble": 2})})
    members = initial_model(pair, manifest, data.training).members
    single = initial_model(settings, manifest, data.training).state_dict()
    assert all(torch.equal(single[k], v) for k, v in members[0].state_dict().items())
    assert not all(torch.equal(single[k], v) for k, v in members[1].state_dict().items())
    # Every label of the window, training and out-of-sample, replaced: the floor's scores do not move.
    for arrays in (data.training.arrays, data.arrays):
        arrays.targets[:] = np.nan
        arrays.forward_returns[:] = 1e6
    assert np.array_equal(floor, untrained_predict(data, manifest, settings))


def test_a_too_short_history_fails_naming_what_is_needed(market):
    config, _, dates = market
    state = backtest(config=config, start=date(2021, 3, 1), end=END, step=STEP, return_state=True)
    assert state.is_failed()
    with pytest.raises(ValueError, match=r"too few for a retrain: it needs \d+ \(69 warm-up, 20\+ train, 20 valid"):
        state.result()
    # The hint is right: the day before it is refused, the day itself is planned.
    earliest = date.fromisoformat(state.message.rsplit(" ", 1)[-1])
    with pytest.raises(ValueError, match="too few"):
        plan_backtest(dates, dates[dates.index(earliest) - 1], END, STEP, load_config(config), 69)
    assert plan_backtest(dates, earliest, END, STEP, load_config(config), 69)[0].as_of == earliest
