"""What a complete, untampered version is: a fixed set of files, each matching the sha256 recorded at publish.

The layout is closed. A file that is not in it (a ``weights.pt`` or ``model.pkl`` dropped in by hand) is
reported by name and never opened, so a pickled checkpoint can neither be loaded nor executed by accident.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from atft.registry.errors import RegistryError

WEIGHTS = "weights.safetensors"
MODEL = "model.json"  # the staged model description: describe(), manifest hash, windows, best epoch
HISTORY = "history.json"  # per-epoch training records from staging
MANIFEST = "manifest.json"
METRICS = "metrics.json"
GATES = "gates.json"
PREDICTIONS = "predictions.parquet"  # the evaluation window's predictions
METADATA = "version.json"
CHECKSUMS = "checksums.json"  # written last; covers every other file
PAYLOAD: tuple[str, ...] = (WEIGHTS, MODEL, HISTORY, MANIFEST, METRICS, GATES, PREDICTIONS, METADATA)
# Names that look like pickled checkpoints get a pointed message instead of just "unexpected".
_PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checksum_document(files: Mapping[str, bytes]) -> bytes:
    document = {"algorithm": "sha256", "files": {name: sha256(data) for name, data in sorted(files.items())}}
    return (json.dumps(document, indent=2) + "\n").encode()


def recorded_checksums(data: bytes) -> dict[str, str]:
    """The name -> sha256 map of a checksum file; RegistryError if it is not one."""
    try:
        document = json.loads(data)
        files = document["files"]
        if document["algorithm"] != "sha256" or not all(isinstance(v, str) for v in files.values()):
            raise ValueError(f"unsupported checksum document: {document!r:.200}")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RegistryError(f"{CHECKSUMS} is unreadable: {exc}") from None
    return dict(files)


def layout_problems(stored: list[str], recorded: Mapping[str, str]) -> list[str]:
    """Differences between the files present, the files recorded and the layout; reads no file content."""
    problems = []
    if WEIGHTS not in stored:
        pickles = [n for n in stored if n.endswith(_PICKLE_SUFFIXES)]
        found = f" (found {', '.join(pickles)}: pickled checkpoints are never loaded, they can run code)"
        problems.append(f"no {WEIGHTS}{found if pickles else ''}")
    for name in sorted(set(stored) - set(PAYLOAD) - {CHECKSUMS}):
        why = "a pickled checkpoint is never read" if name.endswith(_PICKLE_SUFFIXES) else "not part of a version"
        problems.append(f"unexpected file {name} ({why}); versions are immutable: remove it")
    for name in PAYLOAD:
        if name not in stored and name != WEIGHTS:
            problems.append(f"missing file {name}")
        elif name in stored and name not in recorded:
            problems.append(f"{name} is not covered by {CHECKSUMS}")
    problems += [
        f"{CHECKSUMS} lists {name}, which is not part of a version" for name in recorded if name not in PAYLOAD
    ]
    return problems


def content_problems(recorded: Mapping[str, str], read: Callable[[str], bytes]) -> tuple[dict[str, bytes], list[str]]:
    """Read and hash every payload file; returns the bytes that matched and one line per file that did not.

    Callers use the returned bytes, not a second read, so what is loaded is exactly what was verified.
    """
    verified, problems = {}, []
    for name in PAYLOAD:
        data = read(name)
        actual = sha256(data)
        if actual != recorded[name]:
            problems.append(f"{name} was modified after publication: sha256 {actual}, recorded {recorded[name]}")
        else:
            verified[name] = data
    return verified, problems


def parse_json(data: bytes, name: str) -> dict[str, Any]:
    """A stored JSON object; RegistryError naming the file otherwise."""
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise RegistryError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise RegistryError(f"{name} holds {type(document).__name__}, expected a JSON object")
    return document
