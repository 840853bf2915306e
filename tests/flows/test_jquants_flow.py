"""The ingest flow against a J-Quants-shaped HTTP API on loopback, with the refresh token in a Prefect Secret.

This runs the whole production path of ``ingest/daily-jp``: config -> Secret block -> token auth ->
paginated daily quotes over real HTTP -> validation -> warehouse, with the token kept out of every log.
"""

import asyncio
import json
import threading
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogWorker

import flows.ingest as ingest_flow
from atft.warehouse import Warehouse

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "jquants"
REFRESH_TOKEN = "refresh-token-from-the-secret-block-5f1d"
ID_TOKEN = json.loads((FIXTURES / "auth_refresh.json").read_text())["idToken"]


class FakeJQuants(BaseHTTPRequestHandler):
    """Serves the recorded-shape fixtures; rejects a wrong refresh token or bearer like the real API."""

    seen: ClassVar[list[str]] = []

    def log_message(self, *args):  # keep the test output clean
        pass

    def _send(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        url = urlparse(self.path)
        self.seen.append(url.path)
        if url.path == "/v1/token/auth_refresh" and parse_qs(url.query).get("refreshtoken") == [REFRESH_TOKEN]:
            return self._send(200, {"idToken": ID_TOKEN})
        return self._send(400, {"message": "'refreshtoken' is incorrect."})

    def do_GET(self):
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.seen.append(f"{url.path}?date={query.get('date')}")
        if self.headers.get("Authorization") != f"Bearer {ID_TOKEN}":
            return self._send(401, {"message": "The incoming token is invalid or expired."})
        if url.path == "/v1/listed/info":
            return self._send(200, json.loads((FIXTURES / "listed_info_20240104.json").read_text()))
        stem = f"daily_quotes_{query['date']}"
        pages = [FIXTURES / f"{stem}.json"] if (FIXTURES / f"{stem}.json").exists() else []
        pages = [json.loads(p.read_text()) for p in pages or sorted(FIXTURES.glob(f"{stem}_page*.json"))]
        if not pages:
            return self._send(200, {"daily_quotes": []})
        keys = [page.get("pagination_key") for page in pages]
        key = query.get("pagination_key")
        return self._send(200, pages[0 if key is None else keys.index(key) + 1])


@pytest.fixture
def jquants_api():
    FakeJQuants.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeJQuants)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def jp_config(tmp_path: Path, base_url: str) -> str:
    config = yaml.safe_load(Path("deployments/jp_daily.yaml").read_text())
    config["source"] |= {"base_url": base_url, "credentials_block": "jquants-test-token", "backoff_seconds": 0}
    config["warehouse"] = {"path": str(tmp_path / "jp.duckdb")}
    # One halted stock among eight rows: quarantined, and well above the production default fraction.
    config["validation"]["max_rejected_fraction"] = 0.2
    path = tmp_path / "jp.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def flow_run_logs(flow_run_id) -> list[str]:
    APILogWorker.drain_all()  # logs reach the API in batches

    async def read():
        async with get_client() as client:
            logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            return [log.message for log in logs]

    return asyncio.run(read())


def test_daily_jp_ingest_with_the_refresh_token_from_a_secret_block(tmp_path, monkeypatch, jquants_api):
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    for name in ("JQUANTS_REFRESH_TOKEN", "JQUANTS_MAILADDRESS", "JQUANTS_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    Secret(value=REFRESH_TOKEN).save("jquants-test-token", overwrite=True)

    state = ingest_flow.ingest(
        config=jp_config(tmp_path, jquants_api), start=date(2024, 1, 4), end=date(2024, 1, 9), return_state=True
    )

    assert state.is_completed(), state.message
    summary = state.result()
    assert (summary.rows_received, summary.rows_inserted, summary.rows_rejected) == (8, 7, 1)
    # The token came from the Secret (no mail/password login), and 2024-01-06..08 (weekend, holiday) were skipped.
    assert FakeJQuants.seen[0] == "/v1/token/auth_refresh"
    assert "/v1/token/auth_user" not in FakeJQuants.seen
    assert {s for s in FakeJQuants.seen if "daily_quotes" in s} == {
        f"/v1/prices/daily_quotes?date={d}" for d in ("20240104", "20240105", "20240109")
    }
    with Warehouse(tmp_path / "jp.duckdb", read_only=True) as wh:
        codes = {code for (code,) in wh.con.execute("SELECT DISTINCT Code FROM raw_quotes").fetchall()}
        (reason,) = wh.con.execute("SELECT reason FROM rejected_rows").fetchall()[0]
        sectors = wh.con.execute("SELECT Code, Sector33Code FROM listed_info ORDER BY Code").fetchall()
    assert codes == {"13010", "72030", "86970", "99840"}
    assert "Open is missing" in reason
    assert ("72030", "3700") in sectors
    logs = flow_run_logs(state.state_details.flow_run_id)
    assert any("jquants daily_quotes 2024-01-04" in line for line in logs)
    assert not any(REFRESH_TOKEN in line or ID_TOKEN in line for line in logs)


def test_a_wrong_token_in_the_secret_fails_the_run_without_retrying_or_leaking_it(tmp_path, monkeypatch, jquants_api):
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    Secret(value="not-the-right-token-9c2e").save("jquants-test-token", overwrite=True)
    state = ingest_flow.ingest(config=jp_config(tmp_path, jquants_api), start=date(2024, 1, 4), return_state=True)
    assert state.is_failed()
    assert FakeJQuants.seen.count("/v1/token/auth_refresh") == 1
    with pytest.raises(Exception, match="rejected the credentials") as raised:
        state.result()
    assert "not-the-right-token-9c2e" not in str(raised.value)
