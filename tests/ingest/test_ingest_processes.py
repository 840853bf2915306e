"""Ingests in several processes: overlapping runs take turns, and a killed run is marked interrupted by the next."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import yaml

from atft.config import load_config
from atft.ingest import ingest
from atft.warehouse import Warehouse

ROOT = Path(__file__).resolve().parents[2]
INGEST = textwrap.dedent(
    """
    import sys
    from atft.config import load_config
    from atft.ingest import ingest
    ingest(load_config(sys.argv[1]), run_id=sys.argv[2], on_progress=lambda _: None)
    """
)
# An ingest whose source stalls after its first chunk, so that the test can kill it mid-load.
STALLING_INGEST = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from atft.calendar import TradingCalendar
    from atft.config import load_config
    from atft.ingest import ingest
    from atft.sources.synthetic import SyntheticSource

    class Stalling(SyntheticSource):
        def quote_chunks(self, start, end):
            for chunk in super().quote_chunks(start, end):
                yield chunk
                Path(sys.argv[3]).write_text("loading")
                time.sleep(300)

    config = load_config(sys.argv[1])
    source = Stalling(config.source, TradingCalendar("XTKS"))
    ingest(config, run_id=sys.argv[2], source=source, on_progress=lambda _: None)
    """
)


def write_config(tmp_path: Path, end: str = "2023-12-28") -> Path:
    path = tmp_path / "market.yaml"
    source = {"kind": "synthetic", "n_stocks": 40, "start": "2023-01-04", "end": end, "chunk_stocks": 15}
    config = {"name": "processes", "source": source, "universe": {"code_pattern": r"^\d{4}$"},
              "warehouse": {"path": str(tmp_path / "w.duckdb")}}  # fmt: skip
    path.write_text(yaml.safe_dump(config))
    return path


def child(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *args], env={**os.environ, "PYTHONPATH": str(ROOT)})


def log_of(path: Path) -> dict[str, str]:
    with Warehouse(path, read_only=True) as wh:
        return {entry.run_id: entry.status for entry in wh.log_entries()}


def test_two_ingests_started_together_both_succeed(tmp_path):
    # Before the warehouse lock, the second failed at once: "Could not set lock on file ... Conflicting lock".
    config = write_config(tmp_path)
    runs = [child(INGEST, str(config), f"run-{i}") for i in range(2)]
    assert [run.wait(300) for run in runs] == [0, 0]
    statuses = log_of(tmp_path / "w.duckdb")
    assert statuses.keys() == {"run-0", "run-1"}
    # Whichever came second re-read the last trading day only (an incremental run), or found nothing new.
    assert set(statuses.values()) <= {"succeeded", "up_to_date"}
    with Warehouse(tmp_path / "w.duckdb", read_only=True) as wh:
        assert wh.con.execute("SELECT count(DISTINCT Code) FROM raw_quotes").fetchall()[0][0] == 40


def test_a_killed_ingest_is_logged_as_started_and_marked_interrupted_by_the_next(tmp_path):
    config_path = write_config(tmp_path)
    config = load_config(config_path)
    warehouse = tmp_path / "w.duckdb"
    ingest(config, end=load_config(config_path).source.start.replace(month=3, day=31), on_progress=lambda _: None)
    with Warehouse(warehouse, read_only=True) as wh:
        before = wh.fingerprint("raw_quotes")

    loading = tmp_path / "loading"
    stalled = child(STALLING_INGEST, str(config_path), "killed-run", str(loading))
    deadline = time.monotonic() + 120
    while not loading.exists():
        assert stalled.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    stalled.send_signal(signal.SIGKILL)
    stalled.wait(30)

    # The kill left the run's own trace, and not a row of its data.
    assert log_of(warehouse)["killed-run"] == "started"
    with Warehouse(warehouse, read_only=True) as wh:
        assert wh.fingerprint("raw_quotes") == before

    ingest(config, run_id="next-run", on_progress=lambda _: None)
    with Warehouse(warehouse, read_only=True) as wh:
        entries = {entry.run_id: entry for entry in wh.log_entries()}
    assert entries["killed-run"].status == "interrupted"
    assert entries["killed-run"].finished_at is None
    assert "marked by ingest run next-run" in entries["killed-run"].message
    assert entries["next-run"].status == "succeeded"
