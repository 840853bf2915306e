"""Publish from a child process that the registry's crash test kills: ``python publish_child.py SPEC``.

SPEC is a JSON file: ``registry``, ``staged``, ``manifest`` (a manifest file), ``predictions`` (a Parquet file),
``publish`` (the remaining keyword arguments of ``Registry.publish``), ``hold_after`` and ``held``: after the
version's ``hold_after``-th file is written, the child writes ``held`` (JSON: the staging directory and the files
written so far) and sleeps, so that the parent kills the publish at that known point.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from atft.registry import Registry, storage
from schemas.manifest import FeatureManifest


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    _hold_after(spec["hold_after"], Path(spec["held"]))
    manifest = FeatureManifest.read(spec["manifest"])
    predictions = pq.read_table(spec["predictions"])
    Registry(spec["registry"]).publish(spec["staged"], manifest, **spec["publish"], predictions=predictions)


def _hold_after(count: int, held: Path) -> None:
    write = storage.write_file
    written: list[str] = []

    def write_then_hold(path: Path, data: bytes) -> None:
        write(path, data)
        written.append(path.name)
        if len(written) == count:
            # Renamed into place so that the parent, polling for it, never reads it half-written.
            tmp = held.with_suffix(".tmp")
            tmp.write_text(json.dumps({"staging": str(path.parent), "written": written}))
            os.replace(tmp, held)
            time.sleep(600)

    storage.write_file = write_then_hold


if __name__ == "__main__":
    main(sys.argv[1])
