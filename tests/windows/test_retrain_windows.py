"""Rolling-retrain windows: ordered, purged by the longest horizon, all labels known by the as-of date."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from atft.config import PipelineConfig, SyntheticSourceConfig
from atft.windows import retrain_windows

DATES = [date(2022, 1, 3) + timedelta(days=i) for i in range(900)]


def config(execution_lag: int = 0, **retrain) -> PipelineConfig:
    return PipelineConfig.model_validate({
        "name": "w", "source": SyntheticSourceConfig(kind="synthetic"), "retrain": retrain,
        "evaluation": {"eval_days": 30}, "features": {"execution_lag": execution_lag},
    })  # fmt: skip


def test_windows_are_purged_and_evaluation_ends_when_its_last_label_is_known():
    as_of = DATES[700]
    w = retrain_windows(DATES, as_of, config(train_days=300, valid_days=60), warm_up=70)
    index = {d: i for i, d in enumerate(DATES)}
    assert index[as_of] - index[w.eval_end] == 20 and index[w.eval_end] - index[w.eval_start] + 1 == 30
    # 20 sessions (the longest horizon) strictly between each window: a 20-day label never crosses over.
    assert index[w.eval_start] - index[w.valid_end] == 21 and index[w.valid_start] - index[w.train_end] == 21
    assert index[w.valid_end] - index[w.valid_start] + 1 == 60
    assert index[w.train_end] - index[w.train_start] + 1 == 300
    assert w.training.valid_end == w.valid_end


@pytest.mark.parametrize("lag", [1, 3])
def test_every_purge_grows_by_the_execution_lag(lag):
    # The label of day t ends at t + lag + 20: each purge, and the wait for the last eval label, is lag longer.
    as_of = DATES[700]
    w = retrain_windows(DATES, as_of, config(lag, train_days=300, valid_days=60), warm_up=70)
    index = {d: i for i, d in enumerate(DATES)}
    assert index[as_of] - index[w.eval_end] == 20 + lag and index[w.eval_end] - index[w.eval_start] + 1 == 30
    assert index[w.eval_start] - index[w.valid_end] == 21 + lag
    assert index[w.valid_start] - index[w.train_end] == 21 + lag
    assert index[w.valid_end] - index[w.valid_start] + 1 == 60
    assert index[w.train_end] - index[w.train_start] + 1 == 300
    with pytest.raises(ValueError, match=rf"it needs {240 + 3 * lag} .*3 purges of {20 + lag}\)"):
        retrain_windows(DATES, DATES[150], config(lag, train_days=100, valid_days=60), warm_up=70)


def test_a_short_history_shortens_training_after_the_warm_up():
    w = retrain_windows(DATES, DATES[300], config(train_days=500, valid_days=60), warm_up=70)
    assert w.train_start == DATES[70]


def test_no_train_days_expands_training_back_to_the_warm_up():
    for as_of in (DATES[300], DATES[800]):
        expanding = retrain_windows(DATES, as_of, config(train_days=None, valid_days=60), warm_up=70)
        sliding = retrain_windows(DATES, as_of, config(train_days=300, valid_days=60), warm_up=70)
        assert expanding.train_start == DATES[70]
        assert expanding.as_dict() | {"train_start": None} == sliding.as_dict() | {"train_start": None}


def test_days_after_the_as_of_date_are_never_used():
    w = retrain_windows(DATES, DATES[400], config(train_days=100, valid_days=60), warm_up=70)
    assert max(w.as_dict().values()) == DATES[380]


def test_too_little_history_is_an_error_that_counts_what_is_needed():
    with pytest.raises(ValueError, match=r"too few for a retrain: it needs 240"):
        retrain_windows(DATES, DATES[150], config(train_days=100, valid_days=60), warm_up=70)
