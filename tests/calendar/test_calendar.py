from __future__ import annotations

import re
from datetime import date

import pandas as pd
import pytest

from atft.calendar import CalendarError, TradingCalendar


@pytest.fixture(scope="module")
def xnys() -> TradingCalendar:
    return TradingCalendar("XNYS")


def test_xtks_new_year_holidays_are_not_sessions(xtks_calendar):
    for day in (date(2023, 12, 31), date(2024, 1, 1), date(2024, 1, 2), date(2024, 1, 3)):
        assert not xtks_calendar.is_session(day), day
    assert xtks_calendar.is_session(date(2023, 12, 29))
    assert xtks_calendar.is_session(date(2024, 1, 4))


def test_xtks_sessions_around_new_year(xtks_calendar):
    sessions = xtks_calendar.sessions(date(2023, 12, 27), date(2024, 1, 10))
    assert isinstance(sessions, pd.DatetimeIndex)
    assert sessions.name == "Date"
    assert sessions.tz is None
    assert [d.date() for d in sessions] == [
        date(2023, 12, 27),
        date(2023, 12, 28),
        date(2023, 12, 29),
        date(2024, 1, 4),
        date(2024, 1, 5),
        # 2024-01-08 is Coming-of-Age Day
        date(2024, 1, 9),
        date(2024, 1, 10),
    ]


def test_sessions_include_both_ends(xtks_calendar):
    sessions = xtks_calendar.sessions(date(2024, 1, 4), date(2024, 1, 5))
    assert [d.date() for d in sessions] == [date(2024, 1, 4), date(2024, 1, 5)]


def test_jp_holiday_is_not_a_session(xtks_calendar):
    assert not xtks_calendar.is_session(date(2024, 1, 8))  # Coming-of-Age Day, a Monday
    assert not xtks_calendar.is_session(date(2024, 2, 12))  # National Foundation Day, observed
    assert xtks_calendar.is_session(date(2024, 1, 9))


def test_weekends_are_not_sessions(xtks_calendar, xnys):
    for cal in (xtks_calendar, xnys):
        assert not cal.is_session(date(2024, 1, 6)), cal  # Saturday
        assert not cal.is_session(date(2024, 1, 7)), cal  # Sunday
    weekdays = set(xtks_calendar.sessions(date(2023, 1, 4), date(2023, 12, 29)).day_of_week)
    assert weekdays == {0, 1, 2, 3, 4}


def test_session_on_or_before(xtks_calendar):
    assert xtks_calendar.session_on_or_before(date(2024, 1, 4)) == date(2024, 1, 4)
    assert xtks_calendar.session_on_or_before(date(2024, 1, 3)) == date(2023, 12, 29)
    assert xtks_calendar.session_on_or_before(date(2024, 1, 8)) == date(2024, 1, 5)
    assert xtks_calendar.session_on_or_before(date(2024, 1, 7)) == date(2024, 1, 5)


def test_next_session_is_strictly_after(xtks_calendar):
    assert xtks_calendar.next_session(date(2023, 12, 29)) == date(2024, 1, 4)
    assert xtks_calendar.next_session(date(2024, 1, 4)) == date(2024, 1, 5)
    assert xtks_calendar.next_session(date(2024, 1, 5)) == date(2024, 1, 9)
    assert xtks_calendar.next_session(date(2024, 1, 1)) == date(2024, 1, 4)


def test_out_of_range_date_names_the_calendar_range(xtks_calendar):
    expected_range = f"({xtks_calendar.first_session} to {xtks_calendar.last_session})"
    assert xtks_calendar.first_session == date(2000, 1, 4)
    early = re.escape(f"1999-12-31 is outside the XTKS calendar {expected_range}")
    with pytest.raises(CalendarError, match=early):
        xtks_calendar.is_session(date(1999, 12, 31))
    late = re.escape(f"2200-01-05 is outside the XTKS calendar {expected_range}")
    for call in (
        xtks_calendar.is_session,
        xtks_calendar.session_on_or_before,
        xtks_calendar.next_session,
        lambda d: xtks_calendar.sessions(date(2024, 1, 4), d),
    ):
        with pytest.raises(CalendarError, match=late):
            call(date(2200, 1, 5))


def test_calendar_error_is_a_value_error():
    assert issubclass(CalendarError, ValueError)


def test_unknown_calendar_name():
    with pytest.raises(CalendarError, match=re.escape("unknown trading calendar 'XXXX'")):
        TradingCalendar("XXXX")


def test_xnys_sessions(xnys):
    assert repr(xnys) == "TradingCalendar('XNYS')"
    assert xnys.is_session(date(2018, 2, 7))
    assert not xnys.is_session(date(2017, 12, 25))  # Christmas
    assert not xnys.is_session(date(2018, 1, 15))  # Martin Luther King Jr. Day: a Tokyo session
    assert xnys.is_session(date(2024, 1, 8))  # Coming-of-Age Day in Japan only
    assert xnys.session_on_or_before(date(2017, 12, 25)) == date(2017, 12, 22)
    assert xnys.next_session(date(2017, 12, 22)) == date(2017, 12, 26)
