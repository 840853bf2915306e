"""What a complete, untampered version is: a fixed set of files, each matching the sha256 recorded at publish.

The layout is closed, but for pictures: a version may also hold ``chart-<name>.png`` files (its training curves,
evaluation window, inputs), each covered by the checksums like any other file. A file that is not in the layout
(a ``weights.pt`` or ``model.pkl`` dropped in by hand) is reported by name and never opened, so a pickled checkpoint
can neither be loaded nor executed by accident. ``champion_problems`` says what a consistent champion pointer is:
published versions and a history that leads to them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
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
CHAMPION_FIELDS: tuple[str, ...] = ("champion", "previous", "history")
EVENT_FIELDS: tuple[str, ...] = ("at", "action", "version", "replaced")  # one history entry
ACTIONS: tuple[str, ...] = ("promote", "rollback", "withdraw")
CHART = re.compile(r"^chart-[a-z0-9-]+\.png$")  # optional pictures; never loaded, only shown
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
    for name in sorted(set(stored) - set(PAYLOAD) - {CHECKSUMS} - {n for n in stored if CHART.match(n)}):
        why = "a pickled checkpoint is never read" if name.endswith(_PICKLE_SUFFIXES) else "not part of a version"
        problems.append(f"unexpected file {name} ({why}); versions are immutable: remove it")
    for name in (*PAYLOAD, *sorted(n for n in stored if CHART.match(n))):
        if name not in stored and name != WEIGHTS:
            problems.append(f"missing file {name}")
        elif name in stored and name not in recorded:
            problems.append(f"{name} is not covered by {CHECKSUMS}")
    problems += [
        f"{CHECKSUMS} lists {name}, which is not part of a version"
        for name in recorded
        if name not in PAYLOAD and not CHART.match(name)
    ]
    return problems


def content_problems(recorded: Mapping[str, str], read: Callable[[str], bytes]) -> tuple[dict[str, bytes], list[str]]:
    """Read and hash every payload file; returns the bytes that matched and one line per file that did not.

    Callers use the returned bytes, not a second read, so what is loaded is exactly what was verified.
    """
    verified, problems = {}, []
    for name in (*PAYLOAD, *sorted(n for n in recorded if CHART.match(n))):
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


def champion_problems(document: Mapping[str, Any], verified: Mapping[str, Sequence[str]], where: str) -> list[str]:
    """Everything wrong with the champion pointer ``document`` (read from ``where``), given every published
    version's verification problems; empty when consistent.

    The history is replayed the way promote, rollback and withdraw append to it: each event replaces the champion
    the one before left, and the recorded champion and stack of former champions must be where it leads.
    """
    missing = [f for f in CHAMPION_FIELDS if f not in document]
    if missing:
        return [f"{where}: no field {', '.join(missing)}, expected the fields {', '.join(CHAMPION_FIELDS)}"]
    wrong: list[tuple[str, Any, str]] = [
        (f, document[f], f"no such field: the fields are {', '.join(CHAMPION_FIELDS)}")
        for f in sorted(set(document) - set(CHAMPION_FIELDS))
    ]
    champion, previous, history = (document[f] for f in CHAMPION_FIELDS)
    if champion is not None and (not isinstance(champion, str) or champion not in verified):
        wrong.append(("champion", champion, "a published version or null"))
    elif champion is not None and verified[champion]:
        failures = "; ".join(verified[champion])
        wrong.append(("champion", champion, f"an intact version; it failed verification: {failures}"))
    if isinstance(previous, list):
        wrong += [
            (f"previous[{i}]", v, "a published version: a rollback returns to it")
            for i, v in enumerate(previous)
            if not isinstance(v, str) or v not in verified
        ]
    else:
        wrong.append(("previous", previous, "a list of former champions, most recent last"))
    if not isinstance(history, list):
        wrong.append(("history", history, "a list of promote, rollback and withdraw events, oldest first"))
    else:
        malformed = [p for i, event in enumerate(history) for p in _event_problems(f"history[{i}]", event)]
        # A replay of malformed events would only add noise to the problems already found.
        wrong += malformed or _replay_problems(champion, previous, history, verified)
    return [f"{where}: {field} is {_shown(value)}, expected {expected}" for field, value, expected in wrong]


def _event_problems(field: str, event: Any) -> list[tuple[str, Any, str]]:
    if not isinstance(event, dict) or sorted(event) != sorted(EVENT_FIELDS):
        return [(field, event, f"an object with exactly the fields {', '.join(EVENT_FIELDS)}")]
    wrong: list[tuple[str, Any, str]] = []
    try:
        aware = datetime.fromisoformat(event["at"]).tzinfo is not None
    except (TypeError, ValueError):
        aware = False
    if not aware:
        wrong.append((f"{field}.at", event["at"], "an ISO 8601 time with its zone, such as 2024-06-14T09:30:00Z"))
    action = event["action"]
    if action not in ACTIONS:
        wrong.append((f"{field}.action", action, f"one of {', '.join(ACTIONS)}"))
    # Only a withdraw can leave no champion, and only a promotion can start from none.
    for name, none_for in (("version", "withdraw"), ("replaced", "promote")):
        value = event[name]
        if not isinstance(value, str) and (value is not None or action != none_for):
            wrong.append((f"{field}.{name}", value, f"a version id (null only in a {none_for})"))
    return wrong


def _replay_problems(
    champion: Any, previous: Any, history: list[dict[str, Any]], verified: Mapping[str, Sequence[str]]
) -> list[tuple[str, Any, str]]:
    """Well-formed events applied in order to an empty pointer, as ``Registry`` applies them."""
    # A publish that fails after promoting is withdrawn, then discarded: only such a version may be gone.
    withdrawn = {e["replaced"] for e in history if e["action"] == "withdraw"}
    wrong: list[tuple[str, Any, str]] = []
    state: str | None = None
    stack: list[str] = []
    gone: set[str] = set()
    for i, event in enumerate(history):
        field, action, version = f"history[{i}]", event["action"], event["version"]
        if i and datetime.fromisoformat(event["at"]) < datetime.fromisoformat(history[i - 1]["at"]):
            wrong.append((f"{field}.at", event["at"], f"no earlier than history[{i - 1}].at {history[i - 1]['at']}"))
        for name in ("version", "replaced"):
            named = event[name]
            if named is not None and named not in verified and named not in withdrawn and named not in gone:
                gone.add(named)  # once per version, at its first mention
                wrong.append((f"{field}.{name}", named, "a published version (only a withdrawn one may be gone)"))
        if event["replaced"] != state:
            after = f"history[{i - 1}]" if i else "no event"
            wrong.append((f"{field}.replaced", event["replaced"], f"{_shown(state)}, the champion after {after}"))
        if action == "withdraw":
            restored = stack[-1] if stack else None
            if version != restored:
                expected = f"{_shown(restored)}, the champion before the withdrawn one"
                wrong.append((f"{field}.version", version, expected))
            stack = stack[:-1]
        elif version == state:
            wrong.append((f"{field}.version", version, f"a version other than the champion it replaced, in a {action}"))
        elif action == "promote" and state is not None:
            stack.append(state)
        elif action == "rollback":
            stack = stack[: max((j for j, v in enumerate(stack) if v == version), default=len(stack))]
        state = version
    last = f"history[{len(history) - 1}].version" if history else "an empty history"
    if champion != state:
        wrong.append(("champion", champion, f"{_shown(state)}, where the history leads ({last})"))
    if isinstance(previous, list) and previous != stack:
        wrong.append(("previous", previous, f"{_shown(stack)}, the former champions the history leaves"))
    return wrong


def _shown(value: Any) -> str:
    """A value as it reads in the JSON file, cut short: a whole history would drown the message."""
    text = json.dumps(value)
    return text if len(text) <= 200 else f"{text[:200]}..."
