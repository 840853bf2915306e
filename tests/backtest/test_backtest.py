"""Backtest plan and stitching: as-of dates every step, OOS segments that tile the replay, overlaps refused."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
import torch

from atft.backtest import (
    add_rank_average,
    block_bootstrap_interval,
    chained_start,
    plan_backtest,
    rank_ic_differences,
    selection_halves,
    stitch,
    window_wins,
)
from atft.config import PipelineConfig, PortfolioConfig, SyntheticSourceConfig
from atft.windows import retrain_windows

DATES = [date(2022, 1, 3) + timedelta(days=i) for i in range(400)]
WARM_UP = 70
CONFIG = PipelineConfig.model_validate({
    "name": "b", "source": SyntheticSourceConfig(kind="synthetic"),
    "retrain": {"train_days": 100, "valid_days": 40}, "evaluation": {"eval_days": 10},
})  # fmt: skip


def earliest_as_of() -> date:
    """The first day with enough history for a retrain, by asking retrain_windows day by day."""
    for day in DATES:
        try:
            retrain_windows(DATES, day, CONFIG, WARM_UP)
        except ValueError:
            continue
        return day
    raise AssertionError("no feasible day")


def test_as_of_dates_every_step_and_oos_segments_tile_the_replay():
    windows = plan_backtest(DATES, DATES[200], DATES[260], 25, CONFIG, WARM_UP)
    assert [w.as_of for w in windows] == [DATES[200], DATES[225], DATES[250]]
    for w in windows:
        assert w.oos_start == DATES[DATES.index(w.as_of) + 1] and w.oos_days == 25
        assert w.retrain == retrain_windows(DATES, w.as_of, CONFIG, WARM_UP) and w.retrain.eval_end < w.as_of
    # Each segment ends on the next as-of date: together they cover DATES[201..275] once.
    assert [w.oos_end for w in windows[:-1]] == [w.as_of for w in windows[1:]]


def test_the_last_segment_ends_with_the_data_and_a_last_day_as_of_is_left_out():
    windows = plan_backtest(DATES, DATES[380], DATES[-1], 19, CONFIG, WARM_UP)
    assert [w.as_of for w in windows] == [DATES[380]]
    assert (windows[0].oos_end, windows[0].oos_days) == (DATES[-1], 19)
    with pytest.raises(ValueError, match="nothing to predict"):
        plan_backtest(DATES, DATES[-1], DATES[-1], 5, CONFIG, WARM_UP)


def test_too_little_history_names_what_is_needed_and_the_earliest_start():
    earliest = earliest_as_of()
    with pytest.raises(
        ValueError, match=rf"it needs \d+ \(70 warm-up.*; the earliest as-of date with enough history is {earliest}"
    ):
        plan_backtest(DATES, DATES[100], DATES[300], 20, CONFIG, WARM_UP)
    assert plan_backtest(DATES, earliest, earliest, 20, CONFIG, WARM_UP)[0].as_of == earliest


def test_bad_ranges_and_steps_are_errors():
    with pytest.raises(ValueError, match="no session of the feature table between"):
        plan_backtest(DATES, date(2030, 1, 1), date(2030, 2, 1), 5, CONFIG, WARM_UP)
    with pytest.raises(ValueError, match="step must be at least 1"):
        plan_backtest(DATES, DATES[200], DATES[300], 0, CONFIG, WARM_UP)


def test_stitching_refuses_a_stock_day_predicted_twice():
    first = pd.DataFrame({"window": 0, "Date": [DATES[1], DATES[2]], "Code": "1301", "pred_1d": [0.1, 0.2]})
    second = pd.DataFrame({"window": 1, "Date": [DATES[2], DATES[3]], "Code": "1301", "pred_1d": [0.3, 0.4]})
    with pytest.raises(
        ValueError, match=r"1 stock-days are predicted more than once, e.g. 1301 on 2022-01-05 by windows \[0, 1\]"
    ):
        stitch([first, second])
    stitched = stitch([second.iloc[1:], first])
    assert list(stitched["Date"]) == DATES[1:4] and list(stitched["window"]) == [0, 0, 1]


def test_the_bootstrap_interval_covers_the_mean_and_widens_with_autocorrelated_days():
    rng = np.random.default_rng(3)
    white = rng.normal(0.01, 0.1, 500)
    mean, low, high = block_bootstrap_interval(white, block=5)
    assert mean == pytest.approx(white.mean()) and low < mean < high
    # Overlapping 20-day labels make neighbouring days alike: longer blocks keep that, and the interval widens.
    smooth = np.convolve(rng.normal(0.0, 0.1, 520), np.ones(20) / 20, mode="valid")[:500]
    _, short_low, short_high = block_bootstrap_interval(smooth, block=1)
    _, long_low, long_high = block_bootstrap_interval(smooth, block=20)
    assert long_high - long_low > 2 * (short_high - short_low)
    assert np.isnan(block_bootstrap_interval(white[:15], block=10)[1])  # too few days for two blocks


def test_differences_are_taken_against_the_best_baseline_day_by_day():
    days = pd.date_range("2024-01-01", periods=200)
    rng = np.random.default_rng(0)
    daily = pd.DataFrame({"model_rank_ic_5d": rng.normal(0.05, 0.05, 200),
                          "ridge_rank_ic_5d": rng.normal(0.02, 0.05, 200),
                          "lightgbm_rank_ic_5d": rng.normal(0.01, 0.05, 200),
                          "reversal_rank_ic_5d": rng.normal(0.0, 0.05, 200)}, index=days)  # fmt: skip
    block = rank_ic_differences(daily, [5])["5d"]
    assert block["best_baseline"] == "ridge" and "ridge" not in block["differences"]
    model = block["differences"]["model"]
    assert model["mean"] == pytest.approx((daily["model_rank_ic_5d"] - daily["ridge_rank_ic_5d"]).mean())
    assert 0 < model["low"] < model["mean"] < model["high"]


def test_the_rank_average_is_the_mean_of_each_days_percentile_ranks():
    frame = pd.DataFrame(
        {
            "Date": [1, 1, 1, 2, 2, 2],
            "Code": list("abcabc"),
            "pred_5d": [3.0, 2.0, 1.0, 1.0, 2.0, 3.0],
            "ridge_5d": [30.0, 10.0, 20.0, 1.0, 2.0, 3.0],
        }
    )
    out = add_rank_average(frame, ["model", "ridge"], [5])
    assert out["ensemble_5d"].tolist() == pytest.approx([1.0, 0.5, 0.5, 1 / 3, 2 / 3, 1.0])


def test_a_warm_start_replay_chains_each_window_to_the_one_before_and_a_cold_one_never_does():
    windows = plan_backtest(DATES, earliest_as_of(), DATES[-2], 20, CONFIG, WARM_UP)
    previous = {"weight": torch.ones(3)}
    assert chained_start(CONFIG, windows[1], previous).state_dict is None  # train.warm_start: none
    warm = CONFIG.model_copy(update={"train": CONFIG.train.model_copy(update={"warm_start": "champion"})})
    first = chained_start(warm, windows[0], None)
    assert first.state_dict is None and first.describe() == {
        "from_version": None,
        "reason": "window 0 is the first retrain of the replay: training from scratch",
    }
    later = chained_start(warm, windows[2], previous)
    assert later.version == "window 1" and later.state_dict is previous
    assert later.train_settings(warm.train).epochs == warm.train.warm_start_epochs


def test_the_halves_split_the_record_by_window_and_wins_count_windows_won():
    rng = np.random.default_rng(3)
    days = list(pd.bdate_range("2024-01-01", periods=50).date)  # as the stitched frame holds them
    frame = pd.DataFrame([(k // 10, day, f"S{s}") for k, day in enumerate(days) for s in range(30)],
                         columns=["window", "Date", "Code"])  # fmt: skip
    for prefix in ("label", "target", "pred", "ridge", "lightgbm", "reversal"):
        frame[f"{prefix}_5d"] = rng.normal(size=len(frame))
    frame["pred_5d"] += frame["label_5d"] * np.where(frame["window"] >= 2, 1.0, 0.0)  # skill only in later windows
    portfolio = PortfolioConfig()
    halves = selection_halves(frame, [5], portfolio)
    assert halves["earlier"]["windows"] == [0, 1] and halves["later"]["windows"] == [2, 3, 4]
    assert halves["earlier"]["oos"] == f"{days[0]}..{days[19]}"
    for name, part in (("earlier", frame["window"] < 2), ("later", frame["window"] >= 2)):
        daily = frame[part].groupby("Date")[["pred_5d", "label_5d"]].apply(lambda d: d.rank().corr().iloc[0, 1])
        assert halves[name]["metrics"]["model"]["rank_ic_5d"] == pytest.approx(daily.mean(), abs=1e-9)
    later, earlier = (halves[h]["metrics"]["model"]["rank_ic_5d"] for h in ("later", "earlier"))
    assert later > 0.5 > abs(earlier)
    assert selection_halves(frame[frame["window"] == 0], [5], portfolio) == {}

    rows = [{"model_rank_ic_5d": m, "ridge_rank_ic_5d": r, "lightgbm_rank_ic_5d": 0.0} for m, r in
            [(0.02, 0.01), (0.00, 0.01), (None, 0.01), (0.03, float("nan")), (0.01, 0.00)]]  # fmt: skip
    assert window_wins(rows, "rank_ic_5d") == {"model": {"ridge": 2, "lightgbm": 3}}
