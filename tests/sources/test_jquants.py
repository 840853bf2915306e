"""J-Quants client and source against a fake API served through ``httpx.MockTransport``.

The fake checks credentials the way the API does (mail/password, refresh token, bearer id token) and
serves the JSON fixtures under ``tests/fixtures/jquants``; tests queue extra replies (401, 429, 5xx,
transport errors, malformed bodies) in front of it. Nothing here touches the network or really sleeps.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from atft.calendar import TradingCalendar
from atft.config import JQuantsSourceConfig
from atft.sources.base import LISTED_INFO_COLUMNS, SourceError, TransientSourceError
from atft.sources.jquants import JQuantsClient, JQuantsCredentials, JQuantsSource
from schemas.columns import CANONICAL_QUOTE_COLUMNS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "jquants"
# Distinctive values, so that a leak anywhere is found by a plain substring search.
MAIL = "leak-canary.mail@example.co.jp"
PASSWORD = "pw-LEAK-CANARY-5b2e9d"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


REFRESH_TOKEN = fixture("auth_user.json")["refreshToken"]
ID_TOKEN = fixture("auth_refresh.json")["idToken"]
SECRETS = (MAIL, PASSWORD, REFRESH_TOKEN, ID_TOKEN)
JAN4 = date(2024, 1, 4)


def api_error(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"message": message})


class FakeJQuants:
    """Answers like J-Quants v1; ``queue`` puts scripted replies for one endpoint ahead of the normal ones."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self._queued: dict[str, list[httpx.Response | Exception]] = defaultdict(list)

    def queue(self, endpoint: str, *replies: httpx.Response | Exception) -> None:
        self._queued[endpoint].extend(replies)

    def calls(self) -> list[tuple[str, ...]]:
        """Each request as (method, endpoint), followed by its date and pagination_key when sent."""
        return [
            (
                r.method,
                _endpoint(r),
                *(r.url.params[k] for k in ("date", "pagination_key") if k in r.url.params),
            )
            for r in self.requests
        ]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        endpoint = _endpoint(request)
        if self._queued[endpoint]:
            reply = self._queued[endpoint].pop(0)
            if isinstance(reply, Exception):
                raise reply
            return reply
        if endpoint == "/token/auth_user":
            if json.loads(request.content) != {"mailaddress": MAIL, "password": PASSWORD}:
                return api_error(400, "'mailaddress' or 'password' is incorrect.")
            return httpx.Response(200, json=fixture("auth_user.json"))
        if endpoint == "/token/auth_refresh":
            if request.url.params.get("refreshtoken") != REFRESH_TOKEN:
                return api_error(400, "'refreshtoken' is incorrect.")
            return httpx.Response(200, json=fixture("auth_refresh.json"))
        if request.headers.get("Authorization") != f"Bearer {ID_TOKEN}":
            return api_error(401, "The incoming token is invalid or expired.")
        return httpx.Response(200, json=self._page(endpoint, request.url.params))

    def _page(self, endpoint: str, params: httpx.QueryParams) -> dict[str, Any]:
        name = {"/prices/daily_quotes": "daily_quotes", "/listed/info": "listed_info"}[endpoint]
        stem = f"{name}_{params['date']}"
        files = [FIXTURES / f"{stem}.json"] if (FIXTURES / f"{stem}.json").exists() else []
        pages = [fixture(f.name) for f in files or sorted(FIXTURES.glob(f"{stem}_page*.json"))]
        # A request the test did not plan for fails the test instead of being answered.
        assert pages, f"no fixture for {endpoint} {params}"
        keys = [page.get("pagination_key") for page in pages]
        key = params.get("pagination_key")
        return pages[0 if key is None else keys.index(key) + 1]


def _endpoint(request: httpx.Request) -> str:
    return request.url.path.removeprefix("/v1")


@pytest.fixture(scope="module")
def xtks() -> TradingCalendar:
    return TradingCalendar("XTKS")


@pytest.fixture
def api() -> FakeJQuants:
    return FakeJQuants()


@pytest.fixture
def sleeps() -> list[float]:
    return []


def config(**overrides: Any) -> JQuantsSourceConfig:
    return JQuantsSourceConfig(kind="jquants", **{"max_retries": 3, "backoff_seconds": 0.5, **overrides})


def mail_credentials() -> JQuantsCredentials:
    return JQuantsCredentials(mailaddress=MAIL, password=PASSWORD)


def make_client(api: FakeJQuants, sleeps: list[float]) -> JQuantsClient:
    return JQuantsClient(config(), mail_credentials(), httpx.MockTransport(api), sleeps.append)


def make_source(api: FakeJQuants, sleeps: list[float], calendar: TradingCalendar) -> JQuantsSource:
    return JQuantsSource(config(), calendar, mail_credentials(), httpx.MockTransport(api), sleeps.append)


# -- happy path


def test_quote_chunks_pull_each_session_and_follow_pagination(api, sleeps, xtks, caplog):
    caplog.set_level(logging.INFO, logger="atft.sources.jquants")
    chunks = list(make_source(api, sleeps, xtks).quote_chunks(JAN4, date(2024, 1, 9)))

    page2_key = fixture("daily_quotes_20240104_page1.json")["pagination_key"]
    # 2024-01-06..08 are a weekend and Coming of Age Day: never requested.
    assert api.calls() == [
        ("POST", "/token/auth_user"),
        ("POST", "/token/auth_refresh"),
        ("GET", "/prices/daily_quotes", "20240104"),
        ("GET", "/prices/daily_quotes", "20240104", page2_key),
        ("GET", "/prices/daily_quotes", "20240105"),
        ("GET", "/prices/daily_quotes", "20240109"),
    ]
    # 2024-01-09 answered no rows: skipped, with a log line.
    assert [c.origin for c in chunks] == [
        "jquants daily_quotes 2024-01-04",
        "jquants daily_quotes 2024-01-05",
    ]
    messages = [r.getMessage() for r in caplog.records]
    assert "J-Quants daily_quotes 2024-01-04: 4 rows (2 pages)" in messages
    assert any("2024-01-09: no rows" in m and "skipping" in m for m in messages)
    assert sleeps == []

    jan4, jan5 = (c.frame for c in chunks)
    assert tuple(jan4.columns) == CANONICAL_QUOTE_COLUMNS
    assert jan4["Code"].tolist() == ["13010", "72030", "86970", "99840"]
    assert pd.api.types.is_string_dtype(jan4["Code"])
    assert jan4["Date"].dtype == "datetime64[ns]"
    assert (jan4["Date"] == pd.Timestamp("2024-01-04")).all()
    assert jan4.dtypes[list(CANONICAL_QUOTE_COLUMNS[2:])].eq(np.float64).all()
    assert list(jan4.index) == [0, 1, 2, 3]
    toyota = jan4.loc[1]
    assert (toyota["Open"], toyota["Close"], toyota["Volume"]) == (2590.0, 2641.5, 26174300.0)
    # The halted stock's null prices become NaN, still as float64 columns.
    halted = jan5.loc[jan5["Code"] == "13010"].iloc[0]
    assert np.isnan(halted[["Open", "High", "Low", "Close", "Volume", "TurnoverValue"]].astype(float)).all()
    assert jan5.dtypes[list(CANONICAL_QUOTE_COLUMNS[2:])].eq(np.float64).all()


def test_refresh_token_credentials_skip_auth_user_and_id_token_is_cached(api):
    client = JQuantsClient(config(), JQuantsCredentials(refresh_token=REFRESH_TOKEN), httpx.MockTransport(api))
    client.listed_info(JAN4)
    client.daily_quotes(date(2024, 1, 5))
    assert [c[:2] for c in api.calls()] == [
        ("POST", "/token/auth_refresh"),
        ("GET", "/listed/info"),
        ("GET", "/prices/daily_quotes"),
    ]


def test_listed_info_maps_to_listing_columns(api, sleeps, xtks):
    info = make_source(api, sleeps, xtks).listed_info(JAN4)
    assert tuple(info.columns) == LISTED_INFO_COLUMNS
    assert info["Code"].tolist() == ["13010", "72030", "86970", "99840"]
    toyota = info.set_index("Code").loc["72030"]
    assert (toyota["CompanyName"], toyota["Sector17Code"], toyota["MarketCode"]) == (
        "トヨタ自動車",
        "6",
        "0111",
    )
    # Codes stay text: the leading zero of Sector33Code 0050 survives.
    assert info.set_index("Code").loc["13010", "Sector33Code"] == "0050"
    for column in ("Code", "CompanyName", "Sector17Code", "Sector33Code", "MarketCode"):
        assert pd.api.types.is_string_dtype(info[column]), column
    assert info["ValidFrom"].dtype == "datetime64[ns]"
    assert (info["ValidFrom"] == pd.Timestamp("2024-01-04")).all()
    assert info["ValidTo"].dtype == "datetime64[ns]"
    assert info["ValidTo"].isna().all()
    assert api.calls()[-1] == ("GET", "/listed/info", "20240104")


def test_default_window_ends_at_the_latest_session_and_leaves_the_start_to_the_caller(xtks):
    start, end = JQuantsSource(config(), xtks).default_window()
    assert start is None
    assert end == xtks.session_on_or_before(date.today())


def test_an_unbounded_start_is_refused_before_any_request(api, xtks):
    with pytest.raises(SourceError, match="needs a start date"):
        list(JQuantsSource(config(), xtks, transport=httpx.MockTransport(api)).quote_chunks(None, date(2024, 1, 5)))
    assert api.calls() == []


# -- tokens


def test_expired_id_token_is_refreshed_once(api, sleeps):
    api.queue("/prices/daily_quotes", api_error(401, "The incoming token is invalid or expired."))
    records = make_client(api, sleeps).daily_quotes(date(2024, 1, 5))
    assert len(records) == 4
    assert [c[:2] for c in api.calls()] == [
        ("POST", "/token/auth_user"),
        ("POST", "/token/auth_refresh"),
        ("GET", "/prices/daily_quotes"),
        ("POST", "/token/auth_refresh"),
        ("GET", "/prices/daily_quotes"),
    ]


def test_second_401_means_rejected_credentials(api, sleeps):
    expired = api_error(401, "The incoming token is invalid or expired.")
    api.queue("/prices/daily_quotes", expired, expired)
    with pytest.raises(SourceError, match="J-Quants rejected the credentials") as raised:
        make_client(api, sleeps).daily_quotes(JAN4)
    assert not isinstance(raised.value, TransientSourceError)
    assert "/prices/daily_quotes 2024-01-04" in str(raised.value)
    assert len(api.requests) == 5


def test_wrong_password_is_a_credentials_error(api, sleeps):
    client = JQuantsClient(
        config(), JQuantsCredentials(mailaddress=MAIL, password="not-the-password"), httpx.MockTransport(api)
    )
    with pytest.raises(SourceError, match=r"rejected the credentials at /token/auth_user: HTTP 400") as raised:
        client.daily_quotes(JAN4)
    assert "'mailaddress' or 'password' is incorrect." in str(raised.value)
    assert "not-the-password" not in str(raised.value)


# -- retries


def test_429_backs_off_and_honours_a_larger_retry_after(api, sleeps, caplog):
    api.queue(
        "/prices/daily_quotes",
        httpx.Response(429, headers={"Retry-After": "7"}),
        httpx.Response(429, headers={"Retry-After": "0"}),
    )
    records = make_client(api, sleeps).daily_quotes(date(2024, 1, 5))
    assert len(records) == 4
    # Attempt 0: Retry-After 7 beats 0.5 s of backoff; attempt 1: backoff 0.5 * 2 beats Retry-After 0.
    assert sleeps == [7.0, 1.0]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "J-Quants /prices/daily_quotes 2024-01-05: HTTP 429; retry 1 of 3 in 7.0s",
        "J-Quants /prices/daily_quotes 2024-01-05: HTTP 429; retry 2 of 3 in 1.0s",
    ]


def test_transport_errors_are_retried(api, sleeps):
    api.queue("/token/auth_user", httpx.ConnectError("connection reset by peer"))
    api.queue("/prices/daily_quotes", httpx.ReadTimeout("timed out"))
    assert len(make_client(api, sleeps).daily_quotes(date(2024, 1, 5))) == 4
    assert sleeps == [0.5, 0.5]


def test_exhausted_5xx_retries_raise_a_transient_error(api, sleeps):
    api.queue("/prices/daily_quotes", *[httpx.Response(503, text="Service Unavailable")] * 4)
    with pytest.raises(TransientSourceError) as raised:
        make_client(api, sleeps).daily_quotes(JAN4)
    assert str(raised.value) == ("J-Quants /prices/daily_quotes 2024-01-04: HTTP 503, giving up after 4 attempts")
    assert sleeps == [0.5, 1.0, 2.0]


def test_other_4xx_fail_at_once_with_the_api_message(api, sleeps):
    api.queue("/listed/info", api_error(403, "This API is not available on your subscription plan."))
    with pytest.raises(SourceError) as raised:
        make_client(api, sleeps).listed_info(JAN4)
    assert not isinstance(raised.value, TransientSourceError)
    assert str(raised.value) == (
        "J-Quants /listed/info 2024-01-04: HTTP 403 (This API is not available on your subscription plan.)"
    )
    assert sleeps == []


# -- payload shape


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        pytest.param(
            httpx.Response(200, json={"message": "Internal error"}),
            "malformed payload, no 'daily_quotes' list (found ['message'])",
            id="missing-list-key",
        ),
        pytest.param(
            httpx.Response(200, json=fixture("malformed_daily_quotes.json")),
            "malformed payload, 2 of 2 records unusable: record 0: Code '72030' lacks Close; "
            "record 1: Code '99840' has Open='6,205' (expected a number or null)",
            id="missing-close-and-text-price",
        ),
        pytest.param(
            httpx.Response(200, json={"daily_quotes": [{"Code": "72030", "Date": "2024-01-04"}]}),
            "record 0: Code '72030' lacks Open, High, Low, Close, Volume, TurnoverValue, AdjustmentFactor",
            id="bare-record",
        ),
        pytest.param(
            httpx.Response(
                200,
                text="<html><body>504 Gateway Time-out</body></html>",
                headers={"content-type": "text/html"},
            ),
            "malformed payload, response is not JSON (text/html)",
            id="not-json",
        ),
    ],
)
def test_malformed_payload_is_a_source_error(api, sleeps, reply, expected):
    api.queue("/prices/daily_quotes", reply)
    with pytest.raises(SourceError) as raised:
        make_client(api, sleeps).daily_quotes(JAN4)
    assert str(raised.value).startswith("J-Quants /prices/daily_quotes 2024-01-04: ")
    assert expected in str(raised.value)


def test_listed_info_record_with_a_numeric_code_is_malformed(api, sleeps):
    record = {**fixture("listed_info_20240104.json")["info"][1], "Sector33Code": 3700}
    api.queue("/listed/info", httpx.Response(200, json={"info": [record]}))
    with pytest.raises(SourceError, match=r"record 0: Code '72030' has Sector33Code=3700 \(expected text\)"):
        make_client(api, sleeps).listed_info(JAN4)


def test_repeated_pagination_key_stops_instead_of_looping(api, sleeps):
    page1 = httpx.Response(200, json=fixture("daily_quotes_20240104_page1.json"))
    api.queue("/prices/daily_quotes", page1, page1)
    with pytest.raises(SourceError, match=r"pagination_key .* came back twice"):
        make_client(api, sleeps).daily_quotes(JAN4)
    assert len(api.requests) == 4


# -- secrets


def _no_leak(api: FakeJQuants) -> None:
    """Nothing goes wrong: the secrets could only leak through logs (httpx logs every URL)."""


def _echoing_refresh_rejection(api: FakeJQuants) -> None:
    api.queue("/token/auth_refresh", api_error(400, f"refreshtoken={REFRESH_TOKEN} is incorrect."))


def _echoing_bearer_rejection(api: FakeJQuants) -> None:
    rejected = api_error(401, f"Authorization: Bearer {ID_TOKEN} is invalid.")
    api.queue("/prices/daily_quotes", rejected, rejected)


def _transport_error_quoting_the_url(api: FakeJQuants) -> None:
    url = f"https://api.jquants.com/v1/token/auth_refresh?refreshtoken={REFRESH_TOKEN}"
    api.queue("/token/auth_refresh", *[httpx.ConnectError(f"cannot connect to {url}")] * 4)


@pytest.mark.parametrize(
    "scenario",
    [_no_leak, _echoing_refresh_rejection, _echoing_bearer_rejection, _transport_error_quoting_the_url],
)
def test_secrets_never_leak(api, sleeps, xtks, caplog, scenario):
    caplog.set_level(logging.DEBUG)
    scenario(api)
    credentials = mail_credentials()
    source = JQuantsSource(config(), xtks, credentials, httpx.MockTransport(api), sleeps.append)
    shown = [repr(credentials), str(credentials), repr(source), repr(JQuantsClient(config(), credentials))]
    try:
        list(source.quote_chunks(JAN4, date(2024, 1, 5)))
    except SourceError as exc:
        shown += traceback.format_exception(exc)
    shown += [record.getMessage() for record in caplog.records]
    text = "\n".join(shown)
    assert [secret for secret in SECRETS if secret in text] == []
    assert "JQuantsCredentials(refresh_token=None, mailaddress=***, password=***)" in text
    # The redaction is seen at work, not merely vacuous: httpx logged the auth_refresh request.
    assert "auth_refresh?refreshtoken=***" in text
    if scenario is not _no_leak:
        assert "Traceback" in text


# -- credentials from the environment


def test_from_env_prefers_the_refresh_token():
    env = {"JQUANTS_REFRESH_TOKEN": " tok-123 ", "JQUANTS_MAILADDRESS": MAIL, "JQUANTS_PASSWORD": PASSWORD}
    assert JQuantsCredentials.from_env(env) == JQuantsCredentials(refresh_token="tok-123")


def test_from_env_falls_back_to_mail_and_password():
    env = {"JQUANTS_MAILADDRESS": MAIL, "JQUANTS_PASSWORD": PASSWORD, "JQUANTS_REFRESH_TOKEN": "  "}
    assert JQuantsCredentials.from_env(env) == mail_credentials()


@pytest.mark.parametrize(
    ("env", "unset_note"),
    [
        ({}, ""),
        ({"JQUANTS_MAILADDRESS": MAIL}, " (JQUANTS_PASSWORD is unset)"),
        ({"JQUANTS_PASSWORD": PASSWORD, "JQUANTS_REFRESH_TOKEN": ""}, " (JQUANTS_MAILADDRESS is unset)"),
    ],
)
def test_from_env_without_credentials_names_the_variables_only(env, unset_note):
    with pytest.raises(SourceError) as raised:
        JQuantsCredentials.from_env(env)
    message = str(raised.value)
    assert message == (
        "no J-Quants credentials: set JQUANTS_REFRESH_TOKEN, or JQUANTS_MAILADDRESS and JQUANTS_PASSWORD"
        f"{unset_note}; or configure a Prefect Secret block via source.credentials_block"
    )
    assert MAIL not in message and PASSWORD not in message


def test_credentials_need_a_token_or_a_full_pair():
    with pytest.raises(SourceError, match="need a refresh token"):
        JQuantsCredentials(mailaddress=MAIL)


def test_source_reads_the_environment_only_at_first_request(api, sleeps, xtks, monkeypatch):
    for name in ("JQUANTS_REFRESH_TOKEN", "JQUANTS_MAILADDRESS", "JQUANTS_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    # No credentials anywhere yet: constructing must not fail, the first request must.
    source = JQuantsSource(config(), xtks, transport=httpx.MockTransport(api), sleep=sleeps.append)
    with pytest.raises(SourceError, match="JQUANTS_REFRESH_TOKEN"):
        next(source.quote_chunks(JAN4, JAN4))
    assert api.requests == []
    monkeypatch.setenv("JQUANTS_MAILADDRESS", MAIL)
    monkeypatch.setenv("JQUANTS_PASSWORD", PASSWORD)
    assert len(source.listed_info(JAN4)) == 4


def test_source_with_a_credentials_block_wants_them_passed_in(xtks, monkeypatch):
    monkeypatch.setenv("JQUANTS_REFRESH_TOKEN", "tok-from-env")
    source = JQuantsSource(config(credentials_block="jquants-refresh-token"), xtks)
    with pytest.raises(SourceError, match="credentials_block is 'jquants-refresh-token'"):
        source.listed_info(JAN4)
