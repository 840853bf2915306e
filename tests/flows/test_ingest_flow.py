"""The ``ingest`` flow end to end: real Prefect runs, real DuckDB files, artifacts and retries."""

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import yaml

import atft.ingest
import flows.ingest as ingest_flow
from atft.sources.base import SourceError, TransientSourceError
from atft.warehouse import Warehouse

REPO = Path(__file__).resolve().parents[2]


def small_config(tmp_path: Path, name: str = "flowtest", **source: object) -> str:
    """A small synthetic market config file, the way a user would write one."""
    path = tmp_path / f"{name}.yaml"
    config = {
        "name": name,
        "calendar": "XTKS",
        "source": {"kind": "synthetic", "seed": 3, "n_stocks": 30, "start": "2023-01-04", "end": "2023-06-30"} | source,
        "universe": {"code_pattern": r"^\d{4}$"},
        "warehouse": {"path": str(tmp_path / f"{name}.duckdb")},
    }
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_flow_ingests_into_the_warehouse_and_records_the_prefect_run(tmp_path):
    config = small_config(tmp_path)
    state = ingest_flow.ingest(config=config, return_state=True)
    assert state.is_completed()
    summary = state.result()
    assert summary.status == "succeeded"
    assert summary.rows_inserted > 3000 and summary.codes == 30
    with Warehouse(tmp_path / "flowtest.duckdb", read_only=True) as wh:
        assert wh.row_count("raw_quotes") == summary.rows_inserted
        assert wh.fingerprint("raw_quotes") == summary.content_hash
        (entry,) = wh.log_entries()
    # The ingest log names the Prefect flow run, so a row in the warehouse leads back to the run in the UI.
    assert entry.run_id == str(state.state_details.flow_run_id)


def test_flow_publishes_a_table_artifact_keyed_by_config(tmp_path, read_artifacts):
    config = small_config(tmp_path, name="artifact_test")
    ingest_flow.ingest(config=config)
    (artifact,) = read_artifacts("ingest-artifact-test")
    rows = {row["item"]: row["value"] for row in json.loads(artifact.data)}
    assert rows["source"] == "synthetic"
    assert rows["rows inserted"] > 0 and rows["rows rejected"] == 0
    assert len(rows["raw_quotes sha256"]) == 64


def test_flow_parameters_override_window_and_warehouse(tmp_path):
    config = small_config(tmp_path)
    other = tmp_path / "elsewhere.duckdb"
    summary = ingest_flow.ingest(config=config, start=date(2023, 3, 1), end=date(2023, 3, 31), warehouse=str(other))
    assert (summary.first_date, summary.last_date) == (date(2023, 3, 1), date(2023, 3, 31))
    assert other.exists() and not (tmp_path / "flowtest.duckdb").exists()
    # Any config key, as a deployment run passes it (--param overrides='{"source.n_stocks": 12}'): this run only.
    third = tmp_path / "third.duckdb"
    summary = ingest_flow.ingest(config=config, start=date(2023, 3, 1), end=date(2023, 3, 31),
                                 overrides={"warehouse.path": str(third), "source.n_stocks": 12})  # fmt: skip
    assert summary.codes == 12 and third.exists() and not (tmp_path / "flowtest.duckdb").exists()


@pytest.fixture
def no_retry_delay(monkeypatch):
    fast = ingest_flow.load_market_data.with_options(retry_delay_seconds=0)
    monkeypatch.setattr(ingest_flow, "load_market_data", fast)


@pytest.mark.usefixtures("no_retry_delay")
def test_transient_source_errors_are_retried_within_the_same_flow_run(tmp_path, monkeypatch):
    """The first attempt fails mid-ingest (after staging a chunk); the retry in the same run succeeds."""
    attempts = []
    real_build_source = atft.ingest.build_source

    def flaky_source(config, calendar):
        source = real_build_source(config, calendar)
        attempts.append(source)
        if len(attempts) > 1:
            return source

        class DropsAfterOneChunk:
            name = source.name
            default_window = source.default_window
            listed_info = source.listed_info

            def quote_chunks(self, start, end):
                yield next(iter(source.quote_chunks(start, end)))
                raise TransientSourceError("J-Quants /prices/daily_quotes: HTTP 503, giving up after 6 attempts")

        return DropsAfterOneChunk()

    monkeypatch.setattr(atft.ingest, "build_source", flaky_source)
    state = ingest_flow.ingest(config=small_config(tmp_path), return_state=True)
    assert state.is_completed(), state.message
    assert len(attempts) == 2
    with Warehouse(tmp_path / "flowtest.duckdb", read_only=True) as wh:
        entries = wh.log_entries()
        assert wh.row_count("raw_quotes") == state.result().rows_inserted
    # Both attempts are on record under the one flow run.
    assert [e.status for e in entries] == ["failed", "succeeded"]
    assert {e.run_id for e in entries} == {str(state.state_details.flow_run_id)}
    assert "HTTP 503" in entries[0].message


@pytest.mark.usefixtures("no_retry_delay")
def test_bad_data_is_not_retried_and_fails_the_run_with_the_reason(tmp_path, monkeypatch):
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise SourceError("prices.csv: columns do not match the mapping: missing ['Close']")

    monkeypatch.setattr(ingest_flow, "run_ingest", broken)
    state = ingest_flow.ingest(config=small_config(tmp_path), return_state=True)
    assert state.is_failed()
    assert len(calls) == 1
    with pytest.raises(SourceError, match=r"missing \['Close'\]"):
        state.result()


def test_a_mistyped_config_fails_the_run_naming_the_key(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("name: typo\nsource: {kind: synthetic, n_stock: 30}\n")
    state = ingest_flow.ingest(config=str(path), return_state=True)
    assert state.is_failed()
    with pytest.raises(ValueError, match=r"unknown key 'source.n_stock' \(did you mean 'n_stocks'\?\)"):
        state.result()


def test_the_flow_runs_from_plain_python_with_no_server(tmp_path):
    """The ad-hoc path users take: a fresh interpreter, no PREFECT_API_URL, no server running."""
    config = small_config(tmp_path, name="adhoc")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    done = subprocess.run(
        [sys.executable, "-m", "flows.ingest", config],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ingest adhoc (synthetic)" in done.stdout and "succeeded" in done.stdout
    with Warehouse(tmp_path / "adhoc.duckdb", read_only=True) as wh:
        assert wh.row_count("raw_quotes") > 3000


def test_one_way_jumps_are_flagged_in_a_health_artifact(tmp_path, read_artifacts):
    rows = ["Code,Date,Open,High,Low,Close,Volume", "AAA,2018-01-02,10,10.2,9.9,10,100",
            "AAA,2018-01-03,10,10.2,9.9,10.1,100", "AAA,2018-01-04,16,16.3,15.9,16.2,100",
            "AAA,2018-01-05,16.2,16.4,16,16.3,100"]  # fmt: skip
    (tmp_path / "q.csv").write_text("\n".join(rows) + "\n")
    config = tmp_path / "jumps.yaml"
    config.write_text(yaml.safe_dump({
        "name": "jumps", "calendar": "XNYS",
        "source": {"kind": "files", "path": str(tmp_path / "q.csv"), "columns": {c: c for c in rows[0].split(",")},
                   "fill": {"AdjustmentFactor": 1.0}},
        "universe": {"code_pattern": "^[A-Z]{1,5}$"}, "warehouse": {"path": str(tmp_path / "jumps.duckdb")},
    }))  # fmt: skip
    summary = ingest_flow.ingest(config=str(config))
    assert summary.rows_rejected == 0 and len(summary.jumps) == 2
    (artifact,) = read_artifacts("ingest-jumps-health")
    flagged = json.loads(artifact.data)
    assert {(row["Code"], row["Date"], row["column"], row["move"]) for row in flagged} == {
        ("AAA", "2018-01-04", "Open", "1.6x"),
        ("AAA", "2018-01-04", "Close", "1.6x"),
    }
