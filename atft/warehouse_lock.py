"""Runs that share a warehouse take turns: a file lock beside the DuckDB file, with a bounded wait.

DuckDB lets one process open a file for writing, and while it does, refuses every other process, even a
read-only one (``Could not set lock on file``). Scheduled runs overlap: the evening ingest, the daily score
and the weekly retrain. So before DuckDB opens the file, a run takes ``<warehouse>.lock``: shared to read,
exclusive to write. A run that finds it taken waits, saying who holds it and since when, and gives up
with that message after ``timeout_s``. The kernel drops the lock of a killed process, so a crash never
leaves the warehouse locked.

Each holder leaves a small record in ``<warehouse>.lock.d/`` naming itself (process, and the flow run when
there is one: see ``set_holder_label``), so that a waiting run can say what it waits for.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

logger = logging.getLogger(__name__)
DEFAULT_TIMEOUT_S = 1800.0
_POLL_S = 0.25
_REPORT_EVERY_S = 60.0


class WarehouseBusy(TimeoutError):
    """Another run held the warehouse for longer than the wait allows; the message names it."""


@dataclass(frozen=True)
class Holder:
    pid: int
    mode: str  # "read" or "write"
    since: str  # ISO time, UTC
    label: str

    def describe(self) -> str:
        return f"{self.label} ({self.mode}, pid {self.pid}) since {self.since}"


def _process_label() -> str:
    return f"process {os.getpid()} `{' '.join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv[:3]))}`"


def _no_label() -> str | None:
    return None


_label: Callable[[], str | None] = _no_label  # the orchestration layer names its runs (set_holder_label)
_held: dict[tuple[Path, int], list[str]] = {}  # (lock file, thread) -> modes held, innermost last
_held_guard = threading.Lock()


def set_holder_label(label: Callable[[], str | None]) -> None:
    """How a holder names itself in waiters' messages, e.g. the current flow run; None falls back to the process."""
    global _label
    _label = label


class WarehouseLock:
    """Shared (``exclusive=False``) or exclusive hold on the warehouse at ``db_path``; a context manager.

    Re-entrant within a thread: a thread that holds the lock may open the warehouse again, except to write
    while it holds it only to read, which could never be granted and fails at once.
    """

    def __init__(self, db_path: Path, *, exclusive: bool, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.db_path = Path(db_path)
        self.lock_path = self.db_path.with_name(self.db_path.name + ".lock")
        self.records = self.db_path.with_name(self.db_path.name + ".lock.d")
        self.mode = "write" if exclusive else "read"
        self.timeout_s = timeout_s
        self._fd: int | None = None
        self._record: Path | None = None
        self._key = (self.lock_path.resolve(), threading.get_ident())

    def __enter__(self) -> WarehouseLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        with _held_guard:
            held = _held.get(self._key)
            if held:
                if self.mode == "write" and "write" not in held:
                    raise RuntimeError(
                        f"warehouse {self.db_path}: this thread holds it to read and now asks to write, which would "
                        "wait for itself; close the read-only warehouse first"
                    )
                held.append(self.mode)
                return
        self._fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self._wait()
        except BaseException:
            os.close(self._fd)
            self._fd = None
            raise
        self._record = self._leave_record()
        with _held_guard:
            _held[self._key] = [self.mode]

    def release(self) -> None:
        with _held_guard:
            held = _held.get(self._key)
            if held and (len(held) > 1 or self._fd is None):
                held.pop()
                return
            _held.pop(self._key, None)
        if self._record is not None:
            with contextlib.suppress(FileNotFoundError):
                self._record.unlink()
            self._record = None
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def holders(self) -> list[Holder]:
        """The live holders' records; records of processes that died are removed on the way."""
        found = []
        for path in sorted(self.records.glob("*.json")) if self.records.is_dir() else []:
            try:
                holder = Holder(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                continue  # being written or removed right now
            if holder.pid == os.getpid() or _alive(holder.pid):
                found.append(holder)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return found

    def _wait(self) -> None:
        assert self._fd is not None
        operation = (fcntl.LOCK_EX if self.mode == "write" else fcntl.LOCK_SH) | fcntl.LOCK_NB
        began = time.monotonic()
        reported = -_REPORT_EVERY_S
        while True:
            try:
                fcntl.flock(self._fd, operation)
                waited = time.monotonic() - began
                if waited > _POLL_S:
                    logger.warning("warehouse %s: got it to %s after waiting %.0f s", self.db_path, self.mode, waited)
                return
            except BlockingIOError:
                waited = time.monotonic() - began
                if waited >= self.timeout_s:
                    raise WarehouseBusy(
                        f"warehouse {self.db_path} busy, held by {self._who()}; gave up after waiting "
                        f"{self.timeout_s:.0f} s to {self.mode} (warehouse.lock_timeout_s)"
                    ) from None
                if waited - reported >= _REPORT_EVERY_S:
                    reported = waited
                    logger.warning(
                        "warehouse %s busy, held by %s; waiting up to %.0f s to %s",
                        self.db_path, self._who(), self.timeout_s - waited, self.mode,
                    )  # fmt: skip
                time.sleep(_POLL_S)

    def _who(self) -> str:
        holders = self.holders()
        return "; ".join(h.describe() for h in holders) if holders else "another process"

    def _leave_record(self) -> Path:
        self.records.mkdir(exist_ok=True)
        holder = Holder(
            pid=os.getpid(),
            mode=self.mode,
            since=datetime.now(UTC).isoformat(timespec="seconds"),
            label=_label() or _process_label(),
        )
        path = self.records / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
        path.write_text(json.dumps(asdict(holder)))
        return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    return True
