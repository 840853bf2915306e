"""J-Quants API (v1): an HTTP client and the ``JQuantsSource`` built on it.

The client pulls the whole market one trading day at a time (``/prices/daily_quotes?date=``), the
pull J-Quants recommends for bulk downloads. It checks only the payload shape: values are validated
by the ingest like those of every other source.

Secrets (mail address, password, refresh and id tokens) never reach a log line, an exception
message or a repr: the refresh token travels in a query parameter, so every URL or API text that
could end up in a message is redacted first.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import date, datetime
from typing import Any

import httpx
import pandas as pd

from atft.calendar import TradingCalendar
from atft.config import JQuantsSourceConfig
from atft.sources.base import LISTED_INFO_COLUMNS, QuoteChunk, SourceError, TransientSourceError
from schemas.columns import CANONICAL_QUOTE_COLUMNS

log = logging.getLogger(__name__)

ENV_REFRESH_TOKEN = "JQUANTS_REFRESH_TOKEN"
ENV_MAILADDRESS = "JQUANTS_MAILADDRESS"
ENV_PASSWORD = "JQUANTS_PASSWORD"

_MASK = "***"
_SECRET_PATTERNS = (
    re.compile(r"(refreshtoken=)[^&\s\"'<>]+", re.IGNORECASE),
    re.compile(r"(Bearer\s+)[^\s\"'<>]+", re.IGNORECASE),
)


def _redact(text: str, secrets: tuple[str | None, ...] = ()) -> str:
    """``text`` with known secret values and token-shaped fragments (query parameter, bearer) masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, _MASK)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(rf"\g<1>{_MASK}", text)
    return text


class _RedactTokens(logging.Filter):
    """httpx logs every request URL at INFO, and the auth_refresh URL carries the refresh token."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = _redact(record.getMessage()), None
        return True


_HTTPX_REDACTION = _RedactTokens()
# addFilter ignores a filter already present, so re-imports do not stack filters.
logging.getLogger("httpx").addFilter(_HTTPX_REDACTION)


@dataclass(frozen=True, repr=False)
class JQuantsCredentials:
    """A refresh token, or a mail address and password to obtain one. Every field is masked in repr."""

    refresh_token: str | None = None
    mailaddress: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        if not self.refresh_token and not (self.mailaddress and self.password):
            raise SourceError("J-Quants credentials need a refresh token, or both a mail address and a password")

    def __repr__(self) -> str:
        shown = (f"{f.name}={None if getattr(self, f.name) is None else _MASK}" for f in fields(self))
        return f"JQuantsCredentials({', '.join(shown)})"

    __str__ = __repr__

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> JQuantsCredentials:
        """``JQUANTS_REFRESH_TOKEN``, else ``JQUANTS_MAILADDRESS`` and ``JQUANTS_PASSWORD``."""
        names = (ENV_REFRESH_TOKEN, ENV_MAILADDRESS, ENV_PASSWORD)
        value = {name: environ.get(name, "").strip() for name in names}
        if value[ENV_REFRESH_TOKEN]:
            return cls(refresh_token=value[ENV_REFRESH_TOKEN])
        if value[ENV_MAILADDRESS] and value[ENV_PASSWORD]:
            return cls(mailaddress=value[ENV_MAILADDRESS], password=value[ENV_PASSWORD])
        # Names only, never values: with only the mail address set, it must not be echoed.
        unset = [name for name in (ENV_MAILADDRESS, ENV_PASSWORD) if not value[name]]
        half = f" ({', '.join(unset)} is unset)" if len(unset) == 1 else ""
        raise SourceError(
            f"no J-Quants credentials: set {ENV_REFRESH_TOKEN}, "
            f"or {ENV_MAILADDRESS} and {ENV_PASSWORD}{half}; "
            "or configure a Prefect Secret block via source.credentials_block"
        )


@dataclass(frozen=True)
class _Endpoint:
    """A paginated, per-day data endpoint and the record fields the source needs from it."""

    name: str
    path: str
    list_key: str
    text_fields: tuple[str, ...]
    # Numbers or null (null: a halted stock has no prices).
    number_fields: tuple[str, ...] = ()


_QUOTE_NUMBERS = CANONICAL_QUOTE_COLUMNS[2:]  # Open .. AdjustmentFactor
_DAILY_QUOTES = _Endpoint("daily_quotes", "/prices/daily_quotes", "daily_quotes", ("Code", "Date"), _QUOTE_NUMBERS)
_LISTED_INFO = _Endpoint(
    "listed_info",
    "/listed/info",
    "info",
    ("Code", "Date", "CompanyName", "Sector17Code", "Sector33Code", "MarketCode"),
)


class JQuantsClient:
    """J-Quants v1 over ``httpx``: token handling, retries with backoff, pagination, payload-shape checks."""

    def __init__(
        self,
        config: JQuantsSourceConfig,
        credentials: JQuantsCredentials,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._config = config
        self._credentials = credentials
        self._sleep = sleep
        self._http = httpx.Client(base_url=config.base_url, transport=transport, timeout=config.timeout_seconds)
        self._refresh_token = credentials.refresh_token
        self._id_token: str | None = None

    def __repr__(self) -> str:
        return f"JQuantsClient(base_url={self._config.base_url!r})"

    def close(self) -> None:
        self._http.close()

    def daily_quotes(self, day: date) -> list[dict[str, Any]]:
        """Every stock's quote on ``day``; empty when J-Quants has none (holiday, not yet published)."""
        return self._records(_DAILY_QUOTES, day)

    def listed_info(self, day: date) -> list[dict[str, Any]]:
        """Every listing known on ``day``."""
        return self._records(_LISTED_INFO, day)

    # -- pagination and payload shape

    def _records(self, endpoint: _Endpoint, day: date) -> list[dict[str, Any]]:
        where = f"{endpoint.path} {day.isoformat()}"
        params = {"date": day.strftime("%Y%m%d")}
        records: list[Any] = []
        seen_keys: set[str] = set()
        while True:
            payload = self._call("GET", endpoint.path, where, authorized=True, params=params)
            page = payload.get(endpoint.list_key) if isinstance(payload, dict) else None
            if not isinstance(page, list):
                found = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
                raise SourceError(f"J-Quants {where}: malformed payload, no {endpoint.list_key!r} list (found {found})")
            records.extend(page)
            next_key = payload.get("pagination_key")
            if not next_key:
                break
            if next_key in seen_keys:
                raise SourceError(f"J-Quants {where}: pagination_key {next_key!r} came back twice; stopping")
            seen_keys.add(next_key)
            params = {**params, "pagination_key": next_key}
        _check_records(records, endpoint, where)
        pages = _count(len(seen_keys) + 1, "page")
        log.info("J-Quants %s %s: %d rows (%s)", endpoint.name, day, len(records), pages)
        return records

    # -- one call: auth, retries, status handling, JSON

    def _call(
        self,
        method: str,
        path: str,
        where: str,
        *,
        authorized: bool,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
    ) -> Any:
        """One API call. A data endpoint's 401 means an expired id token: refresh it once and resend."""
        request = {"method": method, "url": path, "params": params, "json": json}
        response = self._send(request, where, authorized)
        if authorized and response.status_code == 401:
            log.info("J-Quants %s: id token rejected (expired?); refreshing it once", where)
            self._id_token = None
            response = self._send(request, where, authorized)
            if response.status_code == 401:
                raise SourceError(
                    f"J-Quants rejected the credentials: {where} answered HTTP 401 "
                    f"even with a fresh id token ({self._api_message(response)})"
                )
        if response.status_code >= 400:
            if not authorized and response.status_code in (400, 401, 403):
                raise SourceError(
                    f"J-Quants rejected the credentials at {path}: HTTP {response.status_code} "
                    f"({self._api_message(response)}); check the mail address and password or the refresh "
                    "token (a refresh token expires after one week)"
                )
            raise SourceError(f"J-Quants {where}: HTTP {response.status_code} ({self._api_message(response)})")
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("content-type", "no content type")
            raise SourceError(f"J-Quants {where}: malformed payload, response is not JSON ({kind})") from None

    def _send(self, request: dict[str, Any], where: str, authorized: bool) -> httpx.Response:
        """Send, retrying HTTP 429/5xx and transport errors with exponential backoff."""
        attempts = self._config.max_retries + 1
        attempt = 0
        while True:
            headers = {"Authorization": f"Bearer {self._bearer()}"} if authorized else {}
            retry_after = 0.0
            try:
                response = self._http.request(**request, headers=headers)
            except httpx.TransportError as exc:
                # httpx messages may quote the URL, which for auth_refresh holds the refresh token.
                problem = f"{type(exc).__name__}: {self._scrub(str(exc))}"
            else:
                if response.status_code != 429 and response.status_code < 500:
                    return response
                problem = f"HTTP {response.status_code}"
                retry_after = _seconds(response.headers.get("Retry-After"))
            if attempt + 1 == attempts:
                raise TransientSourceError(
                    f"J-Quants {where}: {problem}, giving up after {_count(attempts, 'attempt')}"
                ) from None
            delay = max(self._config.backoff_seconds * 2**attempt, retry_after)
            log.warning(
                "J-Quants %s: %s; retry %d of %d in %.1fs",
                where,
                problem,
                attempt + 1,
                self._config.max_retries,
                delay,
            )
            self._sleep(delay)
            attempt += 1

    def _bearer(self) -> str:
        """The cached id token; on first use obtained from the refresh token (itself from mail/password)."""
        if self._id_token is None:
            if self._refresh_token is None:
                body = {"mailaddress": self._credentials.mailaddress, "password": self._credentials.password}
                self._refresh_token = self._token("/token/auth_user", "refreshToken", json=body)
            refresh = {"refreshtoken": self._refresh_token}
            self._id_token = self._token("/token/auth_refresh", "idToken", params=refresh)
        return self._id_token

    def _token(self, path: str, key: str, **body: Any) -> str:
        payload = self._call("POST", path, path, authorized=False, **body)
        token = payload.get(key) if isinstance(payload, dict) else None
        if not isinstance(token, str) or not token:
            raise SourceError(f"J-Quants {path}: malformed payload, no {key!r} in the response")
        return token

    def _api_message(self, response: httpx.Response) -> str:
        """The API's ``message`` field, redacted; J-Quants explains every 4xx there."""
        try:
            message = response.json().get("message")
        except (ValueError, AttributeError):
            message = None
        return self._scrub(str(message)) if message else "no message"

    def _scrub(self, text: str) -> str:
        given = self._credentials
        secrets = (
            given.refresh_token,
            given.mailaddress,
            given.password,
            self._refresh_token,
            self._id_token,
        )
        return _redact(text, secrets)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _seconds(retry_after: str | None) -> float:
    """A numeric Retry-After header in seconds; the HTTP-date form is rare enough to fall back to backoff."""
    try:
        return max(float(retry_after), 0.0) if retry_after else 0.0
    except ValueError:
        return 0.0


def _check_records(records: list[Any], endpoint: _Endpoint, where: str) -> None:
    """Raise a ``SourceError`` listing the first few records that lack a field or carry a wrong type."""
    problems = [f"record {i}: {p}" for i, rec in enumerate(records) if (p := _record_problem(rec, endpoint))]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise SourceError(
            f"J-Quants {where}: malformed payload, {len(problems)} of {len(records)} records unusable: "
            + "; ".join(problems[:3])
            + more
        )


def _record_problem(record: Any, endpoint: _Endpoint) -> str | None:
    if not isinstance(record, dict):
        return f"expected an object, found {type(record).__name__}"
    label = f"Code {record.get('Code')!r}"
    missing = [f for f in (*endpoint.text_fields, *endpoint.number_fields) if f not in record]
    if missing:
        return f"{label} lacks {', '.join(missing)}"
    wrong = [f"{f}={record[f]!r} (expected text)" for f in endpoint.text_fields if not _is_text(record[f])]
    wrong += [
        f"{f}={record[f]!r} (expected a number or null)"
        for f in endpoint.number_fields
        if record[f] is not None and not _is_number(record[f])
    ]
    if _is_text(record["Date"]) and not _is_iso_date(record["Date"]):
        wrong.append(f"Date={record['Date']!r} (expected YYYY-MM-DD)")
    return f"{label} has {', '.join(wrong)}" if wrong else None


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _is_number(value: Any) -> bool:
    # bool is an int subclass, but true/false in a price field is a broken payload.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_iso_date(value: str) -> bool:
    try:
        datetime.strptime(value, "%Y-%m-%d")
    except ValueError:
        return False
    return True


class JQuantsSource:
    """``MarketSource`` over the J-Quants API: one whole-market request series per trading session."""

    name = "jquants"

    def __init__(
        self,
        config: JQuantsSourceConfig,
        calendar: TradingCalendar,
        credentials: JQuantsCredentials | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._config = config
        self._calendar = calendar
        self._credentials = credentials
        self._transport = transport
        self._sleep = sleep
        self._client: JQuantsClient | None = None

    def __repr__(self) -> str:
        return f"JQuantsSource(base_url={self._config.base_url!r}, calendar={self._calendar.name!r})"

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def quote_chunks(self, start: date | None, end: date | None) -> Iterator[QuoteChunk]:
        """One chunk per trading session in [start, end]; days J-Quants returns no rows for are skipped."""
        if start is None or end is None:
            raise SourceError(
                "the J-Quants source needs a start date: pass start=YYYY-MM-DD for the first ingest; later "
                "ingests continue from the last trading day in the warehouse"
            )
        for session in self._calendar.sessions(start, end):
            day = session.date()
            records = self._api().daily_quotes(day)
            if not records:
                log.info("J-Quants daily_quotes %s: no rows (not published yet?); skipping the day", day)
                continue
            yield QuoteChunk(frame=_quotes_frame(records), origin=f"jquants daily_quotes {day}")

    def listed_info(self, as_of: date) -> pd.DataFrame:
        """Listings known on ``as_of``; each record is valid from its ``Date``, with no known end."""
        records = self._api().listed_info(as_of)
        frame = pd.DataFrame(records, columns=list(_LISTED_INFO.text_fields)).astype("str")
        frame["ValidFrom"] = _dates(frame["Date"])
        frame["ValidTo"] = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns]")
        return frame[list(LISTED_INFO_COLUMNS)]

    def default_window(self) -> tuple[date | None, date | None]:
        """No fixed start (the plan decides how far back); up to the last session that has begun."""
        return None, self._calendar.session_on_or_before(date.today())

    def _api(self) -> JQuantsClient:
        """The client, built at first use so that a source can be constructed before credentials exist."""
        if self._client is None:
            credentials = self._credentials
            if credentials is None:
                if self._config.credentials_block:
                    # atft never imports Prefect: the flow resolves the block and passes the credentials.
                    raise SourceError(
                        f"source.credentials_block is {self._config.credentials_block!r}, but no credentials "
                        "were passed to JQuantsSource; the flow must load the Secret block and pass them"
                    )
                credentials = JQuantsCredentials.from_env()
            self._client = JQuantsClient(self._config, credentials, transport=self._transport, sleep=self._sleep)
        return self._client


def _quotes_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(records, columns=list(CANONICAL_QUOTE_COLUMNS))
    numbers = list(_QUOTE_NUMBERS)
    frame[numbers] = frame[numbers].astype("float64")  # null (halted stock) becomes NaN
    frame["Code"] = frame["Code"].astype("str")
    frame["Date"] = _dates(frame["Date"])
    return frame


def _dates(values: pd.Series) -> pd.Series:
    # pandas 3 infers microsecond resolution from strings; quote frames carry datetime64[ns].
    return pd.to_datetime(values, format="%Y-%m-%d").astype("datetime64[ns]")
