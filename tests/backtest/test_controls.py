"""Honesty controls: shuffled labels leave nothing to learn, a planted leak is loud, the alarm names leakage, and a
control is read against the floor of networks that never saw a label."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from atft.baselines import ridge_scores
from atft.controls import (
    FLOOR_SEEDS,
    LEAKAGE_RANK_IC,
    SHUFFLED_RANK_IC,
    UntrainedFloor,
    leakage_warnings,
    plant_leak,
    shuffle_labels,
    shuffled_verdict,
)
from atft.data.arrays import FeatureArrays, StoredCube
from atft.metrics import daily_rank_ic
from schemas.manifest import CSZSettings, FeatureColumn, FeatureManifest

DAYS, STOCKS, WIDTH, HORIZONS = 120, 80, 4, [1, 5]
TRAIN, HELD_OUT = list(range(0, 80)), list(range(90, 120))


def linear_market(seed: int = 0) -> FeatureArrays:
    """Labels linear in the inputs plus noise, both z-scored across each day's stocks as the platform's CS-Z columns
    are (otherwise a day's mean input would still predict its mean label after a shuffle within the day); a fifth of
    the stock-days absent."""
    rng = np.random.default_rng(seed)
    present = rng.random((DAYS, STOCKS)) > 0.2
    x = cross_sectional_z(rng.normal(size=(DAYS, STOCKS, WIDTH)), present)
    y = cross_sectional_z(x[..., :1] - 0.5 * x[..., 1:2] + rng.normal(size=(DAYS, STOCKS, len(HORIZONS))), present)
    features = tuple(FeatureColumn(f"f{i}_csz", "float32", "cs_z", 1) for i in range(WIDTH))
    targets = tuple(FeatureColumn(f"target_{h}d", "float32", "target", 0) for h in HORIZONS)
    return FeatureArrays(
        manifest=FeatureManifest(features, targets, CSZSettings(5.0, 10, 1e-8, 1, "none"), "test"),
        horizons=HORIZONS,
        dates=pd.bdate_range("2024-01-01", periods=DAYS),
        codes=np.array([f"S{i:03d}" for i in range(STOCKS)], dtype=object),
        cube=StoredCube(x.shape, "float32", _array=x),
        present=present,
        targets=y,
        target_valid=np.repeat(present[..., None], len(HORIZONS), axis=-1),
        forward_returns=0.01 * y,
        returns=np.zeros((DAYS, STOCKS), dtype=np.float32),
        sector=np.full((DAYS, STOCKS), -1, dtype=np.int16),
    )


def cross_sectional_z(values: np.ndarray, present: np.ndarray) -> np.ndarray:
    out = np.zeros(values.shape, dtype=np.float32)
    for day in range(DAYS):
        here = values[day, present[day]]
        out[day, present[day]] = (here - here.mean(0)) / here.std(0)
    return out


def held_out_rank_ic(fit_on: FeatureArrays, truth: FeatureArrays) -> float:
    scores = ridge_scores(fit_on, TRAIN, truth, HELD_OUT, list(range(WIDTH)))[..., 1]
    mask = truth.target_valid[HELD_OUT, :, 1]
    return float(np.nanmean(daily_rank_ic(scores, truth.targets[HELD_OUT, :, 1], mask)))


def shuffled(arrays: FeatureArrays, seed: int) -> FeatureArrays:
    out = copy.deepcopy(arrays)
    shuffle_labels(out, seed)
    return out


def test_shuffled_labels_keep_each_days_labels_but_leave_ridge_nothing_to_learn():
    arrays = linear_market()
    control = shuffled(arrays, seed=1)
    for day in range(DAYS):
        here = arrays.present[day]
        assert np.array_equal(np.sort(control.targets[day, here], axis=0), np.sort(arrays.targets[day, here], axis=0))
        assert np.array_equal(control.targets[day, ~here], arrays.targets[day, ~here])  # absent stocks untouched
        assert control.target_valid[day, here].all() and not control.target_valid[day, ~here].any()
    # The same permutation moves the raw returns with the labels, for every horizon.
    assert np.allclose(control.forward_returns, 0.01 * control.targets)
    assert held_out_rank_ic(arrays, arrays) > 0.3  # the planted signal is there to be found
    # Fitted on shuffled labels, ridge's direction is noise: one fit may still point near the signal by chance, but
    # over many shuffles the held-out RankIC averages out (its spread is about 0.34 per fit, 0.034 for the mean of 100).
    controls = [held_out_rank_ic(shuffled(arrays, seed), arrays) for seed in range(100)]
    assert abs(np.mean(controls)) < 0.1


def test_a_planted_leak_is_the_label_itself_and_the_alarm_goes_off():
    arrays = linear_market()
    plant_leak(arrays, "f3_csz", horizon=5)
    valid = arrays.target_valid[..., 1]
    assert np.array_equal(arrays.x[..., 3][valid], arrays.targets[..., 1][valid])
    assert not arrays.x[..., 3][~valid].any()
    rank_ic = held_out_rank_ic(arrays, arrays)
    assert rank_ic > 0.5
    metrics = {
        "model": {"rank_ic_1d": 0.01, "rank_ic_5d": rank_ic},
        "ridge": {"rank_ic_1d": float("nan"), "rank_ic_5d": 0.02},
        "oracle": {"rank_ic_1d": 0.9, "rank_ic_5d": 0.9},  # knows the truth by construction: never flagged
        "apex": {"rank_ic_1d": None, "rank_ic_5d": LEAKAGE_RANK_IC},  # at the bound, not above it
    }
    (warning,) = leakage_warnings(metrics, HORIZONS)
    assert warning.startswith(f"WARNING: model has a stitched 5d RankIC of {rank_ic:.4f}, above 0.1")
    assert "leakage" in warning


def test_the_untrained_floor_is_spread_about_zero_and_reads_a_control_against_it():
    floor = UntrainedFloor((0.03, -0.04, 0.0, -0.03, 0.04))
    assert floor.spread == pytest.approx(np.sqrt((0.03**2 * 2 + 0.04**2 * 2) / 5))  # about zero, not the mean
    chance = shuffled_verdict(-0.0124, 5, floor)
    assert chance.startswith(f"5d RankIC -0.0124: fixed bound |RankIC| < {SHUFFLED_RANK_IC} FAIL")
    assert f"z {-0.0124 / floor.spread:+.1f}, within it: no sign of a leak" in chance
    assert "ABOVE it: a path from the evaluated labels" in shuffled_verdict(0.12, 5, floor)
    assert "BELOW it: worse than chance" in shuffled_verdict(-0.12, 5, floor)
    assert shuffled_verdict(0.001, 1, floor).startswith("1d RankIC +0.0010: fixed bound |RankIC| < 0.005 pass")
    # Too few untrained networks to tell a spread: the floor is not read, and the line says why.
    few = shuffled_verdict(0.02, 5, UntrainedFloor((0.01, -0.02)))
    assert few.endswith(f"untrained floor: 2 seeds, {FLOOR_SEEDS} needed to read it")
    assert shuffled_verdict(0.02, 5, None).endswith(f"0 seeds, {FLOOR_SEEDS} needed to read it")


def test_each_window_and_seed_draws_its_own_permutation_and_the_same_pair_the_same_one():
    arrays = linear_market()
    first, again, other = (shuffled(arrays, seed) for seed in ((3, 7), (3, 7), (3, 8)))
    assert np.array_equal(first.targets, again.targets)
    assert not np.array_equal(first.targets, other.targets)
