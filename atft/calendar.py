"""Trading calendars (XTKS for Tokyo, XNYS for New York) from ``exchange-calendars``."""

from __future__ import annotations

import warnings
from datetime import date, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

import exchange_calendars as xc
import pandas as pd
from pandas.errors import Pandas4Warning

# exchange-calendars defaults to 20 years back; rolling backtests reach further.
_CALENDAR_START = "2000-01-04"


class CalendarError(ValueError):
    """A date outside what the calendar knows, or an unknown calendar name."""


class TradingCalendar:
    """Sessions of one exchange, as tz-naive midnight timestamps and ``datetime.date`` at the API."""

    def __init__(self, name: str) -> None:
        self.name = name
        try:
            self._cal = _load(name)
        except xc.errors.InvalidCalendarName as exc:
            raise CalendarError(f"unknown trading calendar {name!r}") from exc
        self.first_session: date = self._cal.first_session.date()
        self.last_session: date = self._cal.last_session.date()

    def __repr__(self) -> str:
        return f"TradingCalendar({self.name!r})"

    def _check(self, day: date) -> None:
        if not self.first_session <= day <= self.last_session:
            raise CalendarError(
                f"{day} is outside the {self.name} calendar ({self.first_session} to {self.last_session})"
            )

    def sessions(self, start: date, end: date) -> pd.DatetimeIndex:
        """Trading days in [start, end], both ends included."""
        self._check(start)
        self._check(end)
        return pd.DatetimeIndex(self._cal.sessions_in_range(pd.Timestamp(start), pd.Timestamp(end)), name="Date")

    def is_session(self, day: date) -> bool:
        self._check(day)
        return bool(self._cal.is_session(pd.Timestamp(day)))

    def session_on_or_before(self, day: date) -> date:
        self._check(day)
        return self._cal.date_to_session(pd.Timestamp(day), direction="previous").date()

    @property
    def tz(self) -> str:
        """The exchange's IANA time zone, e.g. ``America/New_York``."""
        return str(self._cal.tz)

    def local_days(self, stamps: pd.Series) -> tuple[pd.Series, pd.Series]:
        """Exchange-local days (naive midnights) of tz-aware timestamps, and which stamps are day stamps.

        A day stamp is local midnight or the close of that day's session (the regular close on a non-session
        day): the two ways a daily bar is commonly time-stamped. Any other time of day is not a daily bar.
        """
        local = stamps.dt.tz_convert(self.tz).dt.tz_localize(None)
        days = local.dt.normalize()
        closes = self._cal.closes.dt.tz_convert(self.tz).dt.tz_localize(None)
        close_times = closes - closes.dt.normalize()
        regular = close_times.mode().iloc[0]
        expected_close = days.map(close_times).fillna(regular)
        time_of_day = local - days
        return days.dt.as_unit("ns"), (time_of_day == pd.Timedelta(0)) | (time_of_day == expected_close)

    def today(self) -> date:
        """Today's date in the exchange's time zone: a run scheduled after the Tokyo close is on Tokyo's day."""
        return datetime.now(ZoneInfo(str(self._cal.tz))).date()

    def next_session(self, day: date) -> date:
        """The first trading day strictly after ``day``."""
        self._check(day)
        return self._cal.date_to_session(pd.Timestamp(day) + pd.Timedelta(days=1), direction="next").date()


@lru_cache(maxsize=4)
def _load(name: str) -> xc.ExchangeCalendar:
    with warnings.catch_warnings():
        # exchange-calendars 4.13 reads Series.values of tz-aware data in its constructor; pandas 3.1 deprecates
        # that, with no effect on the sessions it builds.
        warnings.simplefilter("ignore", Pandas4Warning)
        return xc.get_calendar(name, start=_CALENDAR_START)
