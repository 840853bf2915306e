"""Runs sharing a warehouse take turns: waits with who holds it, a bounded wait, readers together, crashes forgotten."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from atft.warehouse import Warehouse
from atft.warehouse_lock import WarehouseBusy, WarehouseLock

ROOT = Path(__file__).resolve().parents[2]
# A child process that opens the warehouse, says so in a file, and holds it for a while (or until killed).
HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from atft.warehouse import Warehouse
    from atft.warehouse_lock import set_holder_label
    path, mode, seconds, ready = sys.argv[1], sys.argv[2], float(sys.argv[3]), Path(sys.argv[4])
    set_holder_label(lambda: "flow run ingest-nightly (1234)")
    with Warehouse(path, read_only=mode == "read") as wh:
        wh.con.execute("SELECT 1").fetchall()
        ready.write_text("held")
        time.sleep(seconds)
    """
)


def hold(path: Path, mode: str, seconds: float, tmp_path: Path) -> subprocess.Popen:
    ready = tmp_path / f"ready-{mode}-{time.monotonic_ns()}"
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), mode, str(seconds), str(ready)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert child.poll() is None, "the holding child exited early"
        assert time.monotonic() < deadline, "the holding child never took the warehouse"
        time.sleep(0.05)
    return child


@pytest.fixture
def warehouse(tmp_path) -> Path:
    path = tmp_path / "shared.duckdb"
    with Warehouse(path):
        pass
    return path


def test_a_reader_waits_for_a_writer_in_another_process_and_then_opens(warehouse, tmp_path):
    # Without the lock, DuckDB refuses at once: "Could not set lock on file ... Conflicting lock is held".
    child = hold(warehouse, "write", 2.0, tmp_path)
    began = time.monotonic()
    with Warehouse(warehouse, read_only=True, lock_timeout_s=60) as wh:
        assert wh.row_count("raw_quotes") == 0
    assert time.monotonic() - began > 0.5
    assert child.wait(30) == 0


def test_a_writer_waits_for_a_reader_too(warehouse, tmp_path):
    child = hold(warehouse, "read", 2.0, tmp_path)
    with Warehouse(warehouse, lock_timeout_s=60) as wh:
        wh.con.execute("SELECT 1").fetchall()
    assert child.wait(30) == 0


def test_the_wait_is_bounded_and_names_the_holder(warehouse, tmp_path):
    child = hold(warehouse, "write", 30.0, tmp_path)
    try:
        began = time.monotonic()
        with pytest.raises(WarehouseBusy) as info, Warehouse(warehouse, read_only=True, lock_timeout_s=1.0):
            pass
        assert 1.0 <= time.monotonic() - began < 10
        message = str(info.value)
        assert message.startswith(f"warehouse {warehouse} busy, held by flow run ingest-nightly (1234) (write, pid ")
        assert " since 20" in message and "gave up after waiting 1 s to read (warehouse.lock_timeout_s)" in message
    finally:
        child.kill()
        child.wait(30)


def test_readers_share_the_warehouse(warehouse, tmp_path):
    child = hold(warehouse, "read", 30.0, tmp_path)
    try:
        began = time.monotonic()
        with Warehouse(warehouse, read_only=True, lock_timeout_s=0) as wh:
            assert wh.row_count("raw_quotes") == 0
        assert time.monotonic() - began < 5
    finally:
        child.kill()
        child.wait(30)


def test_a_killed_holder_leaves_the_warehouse_free_and_its_record_is_cleared(warehouse, tmp_path):
    child = hold(warehouse, "write", 300.0, tmp_path)
    lock = WarehouseLock(warehouse, exclusive=True, timeout_s=0)
    assert [h.pid for h in lock.holders()] == [child.pid]
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    with Warehouse(warehouse, lock_timeout_s=5) as wh:
        wh.con.execute("SELECT 1").fetchall()
        assert [h.pid for h in lock.holders()] == [os.getpid()]
    assert lock.holders() == []


def test_nested_opens_in_one_thread_are_granted_but_read_then_write_fails_at_once(warehouse):
    with (
        Warehouse(warehouse, read_only=True, lock_timeout_s=0),
        Warehouse(warehouse, read_only=True),
        pytest.raises(RuntimeError, match="holds it to read and now asks to write"),
    ):
        Warehouse(warehouse, lock_timeout_s=0).__enter__()
    # Everything was released: a writer gets it straight away.
    with Warehouse(warehouse, lock_timeout_s=0):
        pass


def test_the_holder_label_defaults_to_the_process(warehouse, monkeypatch):
    monkeypatch.setattr("atft.warehouse_lock._label", lambda: None)
    with WarehouseLock(warehouse, exclusive=False) as lock:
        (holder,) = lock.holders()
    assert holder.label.startswith(f"process {os.getpid()} ") and holder.mode == "read"
