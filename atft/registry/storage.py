"""Where a registry keeps its bytes: the few operations publishing and reading need, and the local filesystem.

A version becomes visible all at once or not at all. Locally that is a directory written and fsynced under a
hidden ``.staging-*`` name, then renamed into place: readers list only the final names, so a publisher killed
mid-write leaves a hidden directory that nothing reads (``discard_stale`` removes it later). An object store
would implement the same seam by writing the version's files in order under a prefix, the checksum file last,
and treating a version without its checksum file as not there.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

STAGING_PREFIX = ".staging-"
LOCK_NAME = ".lock"


class Storage(Protocol):
    """The registry's view of a store: immutable versions of named files, plus small root documents."""

    def location(self, version: str | None = None) -> str:
        """Human-readable place of the store, or of one version in it, for messages."""
        ...

    def versions(self) -> list[str]:
        """Names of committed versions, never of ones still being written."""
        ...

    def files(self, version: str) -> list[str]:
        """Names of the files in a committed version, as stored (without reading them)."""
        ...

    def read(self, version: str, name: str) -> bytes: ...

    def commit(self, version: str, files: Mapping[str, bytes]) -> None:
        """Write a new version holding exactly ``files``, durably, in order; it appears all at once."""
        ...

    def read_root(self, name: str) -> bytes | None:
        """A small document at the store's root (the champion pointer), or None if absent."""
        ...

    def replace_root(self, name: str, data: bytes) -> None:
        """Replace a root document atomically: readers see the old content or the new, never a mix."""
        ...

    def locked(self) -> AbstractContextManager[None]:
        """Exclusive section across processes, for read-modify-write of root documents."""
        ...

    def discard_stale(self, max_age_s: float) -> list[str]:
        """Remove leftovers of publishers that died more than ``max_age_s`` ago; returns what was removed."""
        ...

    def remove(self, version: str) -> None:
        """Make a version disappear at once for readers, then delete its files."""
        ...


class LocalStorage:
    """A directory: one subdirectory per version, root documents next to them, a lock file for writers."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def location(self, version: str | None = None) -> str:
        return str(self.root if version is None else self.root / version)

    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def files(self, version: str) -> list[str]:
        return sorted(p.name for p in (self.root / version).iterdir())

    def read(self, version: str, name: str) -> bytes:
        return (self.root / version / name).read_bytes()

    def commit(self, version: str, files: Mapping[str, bytes]) -> None:
        target = self.root / version
        if target.exists():
            raise FileExistsError(f"version {target} already exists")
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            for name, data in files.items():
                write_file(staging / name, data)
            _fsync_dir(staging)
            # A directory rename is atomic, and fails rather than merging if the target appeared meanwhile.
            os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _fsync_dir(self.root)

    def read_root(self, name: str) -> bytes | None:
        try:
            return (self.root / name).read_bytes()
        except FileNotFoundError:
            return None

    def replace_root(self, name: str, data: bytes) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{name}.{uuid.uuid4().hex}.tmp"
        try:
            write_file(tmp, data)
            os.replace(tmp, self.root / name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.root)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        # flock belongs to the open file description: it excludes other processes and other threads alike, and
        # the kernel releases it when a holder dies, so a killed publisher never leaves the registry locked.
        fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def discard_stale(self, max_age_s: float) -> list[str]:
        if not self.root.is_dir():
            return []
        cutoff = time.time() - max_age_s
        removed = []
        for path in self.root.iterdir():
            leftover = path.name.startswith(STAGING_PREFIX) or (path.name.startswith(".") and path.suffix == ".tmp")
            if not leftover:
                continue
            try:
                modified = path.lstat().st_mtime
            except FileNotFoundError:  # another publisher's live staging, renamed into place since the listing
                continue
            if modified < cutoff:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(path.name)
        return sorted(removed)

    def remove(self, version: str) -> None:
        # Renamed to a staging name first: readers never list a half-deleted version.
        doomed = self.root / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
        os.rename(self.root / version, doomed)
        _fsync_dir(self.root)
        shutil.rmtree(doomed, ignore_errors=True)


def write_file(path: Path, data: bytes) -> None:
    """Create ``path`` with ``data`` and fsync it: after a crash the file is complete or its directory never
    became visible. Module-level so that a test can interrupt a publish between two files."""
    with open(path, "xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
