"""Training windows: ordered, and with a purge between training labels and validation."""

from datetime import date, timedelta

import pytest

from atft.training.session import Windows

DATES = [date(2024, 1, 1) + timedelta(days=i) for i in range(300)]


def test_trailing_windows_validate_on_the_last_days_after_a_purge():
    w = Windows.trailing(DATES, valid_days=60, purge=20, warm_up=70)
    assert w.train_start == DATES[70] and w.valid_end == DATES[-1]
    assert w.valid_start == DATES[240]
    # 20 whole sessions between the last training day and the first validation day.
    assert DATES.index(w.valid_start) - DATES.index(w.train_end) == 21


def test_too_little_history_is_refused():
    with pytest.raises(ValueError, match="too few"):
        Windows.trailing(DATES[:150], valid_days=60, purge=20, warm_up=70)


def test_windows_must_be_ordered():
    with pytest.raises(ValueError, match="train_end < valid_start"):
        Windows(DATES[0], DATES[10], DATES[10], DATES[20])
