"""The checkpoint registry: publish a staged training result as an immutable version, name a champion, roll back.

A version is published all at once (see ``storage``): readers see it complete with its checksum file, or not
at all. The champion pointer (``champion.json``) is replaced atomically under a lock, so concurrent publishers
never lose a promotion. It keeps the stack of former champions, which makes a rollback one call.

The registry records what the caller decided (gate results, whether to promote); it refuses only what must
never be published: a result whose gates did not pass, or weights trained against another manifest.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from atft.registry.errors import CheckpointRefused, EmptyRegistry, PublishRefused, RegistryError
from atft.registry.integrity import (
    CHART,
    CHECKSUMS,
    GATES,
    HISTORY,
    MANIFEST,
    METADATA,
    METRICS,
    MODEL,
    PREDICTIONS,
    WEIGHTS,
    champion_problems,
    checksum_document,
    content_problems,
    layout_problems,
    parse_json,
    recorded_checksums,
)
from atft.registry.provenance import code_version, library_versions
from atft.registry.storage import LocalStorage, Storage
from schemas.manifest import FeatureManifest, ManifestError

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

    from atft.models import ContractModel

CHAMPION = "champion.json"
# A staging leftover older than this belongs to a dead publisher (a live one writes a version in seconds); the
# next publish removes it. Younger ones may belong to a concurrent publisher and are left alone.
STALE_AFTER_S = 3600.0
WINDOW_KEYS: tuple[str, ...] = ("train_start", "train_end", "valid_start", "valid_end", "eval_start", "eval_end")
# v<UTC time to the microsecond>Z-<random>: unique across concurrent publishers, and sorts by creation time.
_VERSION_ID = re.compile(r"^v\d{8}T\d{12}Z-[0-9a-f]{6}$")


@dataclass(frozen=True)
class VersionRecord:
    """A version's JSON documents, read without hashing the payload (``Registry.verify`` does that)."""

    version: str
    metadata: dict[str, Any]  # version.json
    model: dict[str, Any]  # model.json: describe(), manifest hash, training windows, best epoch
    metrics: dict[str, Any]
    gates: dict[str, Any]
    champion: bool
    problems: tuple[str, ...] = ()  # missing, unexpected or unreadable files; empty for an intact version

    @property
    def passed(self) -> bool:
        return self.gates.get("passed") is True


@dataclass(frozen=True)
class LoadedCheckpoint:
    version: str
    model: ContractModel  # in eval mode, on the CPU
    manifest: FeatureManifest
    metadata: dict[str, Any]
    metrics: dict[str, Any]
    gates: dict[str, Any]


@dataclass(frozen=True)
class ChampionState:
    champion: str | None
    previous: tuple[str, ...] = ()  # former champions, most recent last: where a rollback returns to
    history: tuple[dict[str, Any], ...] = ()  # every promotion and rollback, oldest first

    def to_json(self) -> bytes:
        document = {"champion": self.champion, "previous": list(self.previous), "history": list(self.history)}
        return (json.dumps(document, indent=2) + "\n").encode()


class Registry:
    """Versions of published checkpoints in ``root`` (a path: the local filesystem; or any ``Storage``)."""

    def __init__(self, root: str | os.PathLike[str] | Storage) -> None:
        self.storage: Storage = LocalStorage(root) if isinstance(root, str | os.PathLike) else root

    def publish(
        self,
        staged_dir: str | os.PathLike[str],
        manifest: FeatureManifest,
        *,
        metrics: Mapping[str, Any],
        gates: Mapping[str, Any],
        windows: Mapping[str, date | str],
        data_fingerprint: str,
        predictions: pa.Table | pd.DataFrame,
        promote: bool = True,
        config: Mapping[str, Any] | None = None,
        charts: Mapping[str, bytes] | None = None,
    ) -> str:
        """Publish a staged result (``atft.training.session.stage``) as a new version; returns its id.

        ``gates``: the caller's verdict, ``{"passed": bool, "results": [{"gate", "value", "passed"}, ...]}``;
        anything but ``passed: True`` is refused. ``windows``: ``WINDOW_KEYS`` as dates or ISO strings; train and
        valid must be the staged ones. ``data_fingerprint``: the hash of the warehouse table trained on.
        ``predictions``: the evaluation window's scores, with the manifest's key columns.
        ``promote``: make the new version the champion (the previous one can be rolled back to).
        ``config``: the pipeline settings the run used, kept in the version's metadata.
        ``charts``: PNG pictures by name (``training`` is stored as ``chart-training.png``), kept with the version.
        """
        staged_dir = Path(staged_dir)
        if gates.get("passed") is not True:
            raise PublishRefused(
                f"the gates rejected {staged_dir} ({_failures(gates)}); a rejected model is never published"
            )
        if not isinstance(data_fingerprint, str) or not data_fingerprint:
            raise PublishRefused("a data fingerprint (the warehouse table's hash) is needed to publish")
        files = _staged_files(staged_dir)
        described = parse_json(files[MODEL], f"{staged_dir / MODEL}")
        window_dates = _windows(windows, described.get("windows", {}))
        # Imported here: the CLI's list, show and rollback never pay for importing torch and the models.
        from atft.registry.loading import build_checkpoint

        try:
            build_checkpoint(files, manifest)
        except ValueError as exc:
            raise PublishRefused(f"staged result {staged_dir} cannot be published: {exc}") from None
        now = datetime.now(UTC)
        version = f"v{now:%Y%m%dT%H%M%S%f}Z-{secrets.token_hex(3)}"
        metadata = {
            "version": version,
            "created_at": _iso(now),
            "model": described.get("model"),
            "manifest_sha256": manifest.sha256,
            "feature_table": manifest.table_name,
            "windows": window_dates,
            "data_fingerprint": data_fingerprint,
            "code_version": code_version(),
            "libraries": library_versions(),
            "python": platform.python_version(),
            "staged_from": str(staged_dir.resolve()),
            "promote_on_publish": promote,
            "warm_start": described.get("warm_start"),
            "config": dict(config) if config is not None else None,
        }
        files |= {
            MANIFEST: manifest.to_json().encode(),
            METRICS: _json(metrics, METRICS),
            GATES: _json(gates, GATES),
            PREDICTIONS: _parquet(predictions, manifest.keys),
            METADATA: _json(metadata, METADATA),
        }
        for name, image in (charts or {}).items():
            if not CHART.match(f"chart-{name}.png") or not image.startswith(b"\x89PNG"):
                raise PublishRefused(f"chart {name!r} must be a PNG named with lowercase letters, digits and dashes")
            files[f"chart-{name}.png"] = image
        self.discard_stale()
        # The checksum file goes last: on a store without atomic directories it is what marks a version complete.
        self.storage.commit(version, {**files, CHECKSUMS: checksum_document(files)})
        if promote:
            self.promote(version)
        return version

    def versions(self) -> list[VersionRecord]:
        """Every published version, oldest first. Unfinished publishes are never listed."""
        champion = self.champion().champion
        return [self._record(v, champion) for v in self._committed()]

    def show(self, version: str | None = None) -> VersionRecord:
        """One version's record; the champion's when ``version`` is None."""
        return self._record(self._resolve(version), self.champion().champion)

    def verify(self, version: str | None = None) -> list[str]:
        """Everything wrong with a version's files (tampered, missing, unexpected); empty when intact."""
        return self._check(self._resolve(version))[1]

    def verify_all(self) -> dict[str, list[str]]:
        """Everything wrong with each version, oldest first, then with ``champion.json`` when there is one: the
        champion must be published and intact, former champions published, and the history must lead to both.

        Only reads: nothing is locked or written, and an unreadable ``champion.json`` is a problem, not an error.
        """
        known, data = self._committed(), self.storage.read_root(CHAMPION)
        if not known and data is None:
            raise EmptyRegistry(self.storage.location())
        results = {v: self._check(v)[1] for v in known}
        if data is not None:
            where = f"{self.storage.location()}/{CHAMPION}"
            try:
                results[CHAMPION] = champion_problems(parse_json(data, where), results, where)
            except RegistryError as exc:
                results[CHAMPION] = [str(exc)]
        return results

    def load(
        self,
        version: str | None = None,
        *,
        con: duckdb.DuckDBPyConnection | None = None,
        table: str | None = None,
    ) -> LoadedCheckpoint:
        """The model of a version (the champion's by default) after verifying every file's checksum.

        With ``con``, the feature table (``table``, by default the manifest's own table name) must match the
        checkpoint's manifest column for column; otherwise ``CheckpointRefused`` with the difference.
        """
        version = self._resolve(version)
        files = self._verified(version)
        try:
            manifest = FeatureManifest.from_json(files[MANIFEST].decode())
        except (ManifestError, UnicodeDecodeError) as exc:
            raise CheckpointRefused(f"version {version}: {MANIFEST} is invalid: {exc}") from None
        metadata = parse_json(files[METADATA], METADATA)
        if metadata.get("manifest_sha256") != manifest.sha256:
            raise CheckpointRefused(
                f"version {version}: {MANIFEST} hashes to {manifest.sha256}, but the version records "
                f"{metadata.get('manifest_sha256')}"
            )
        from atft.registry.loading import build_checkpoint, check_feature_table

        if con is not None:
            check_feature_table(con, table or manifest.table_name, manifest, version)
        try:
            model = build_checkpoint(files, manifest)
        except ValueError as exc:
            raise CheckpointRefused(f"version {version} cannot be loaded: {exc}") from None
        metrics, gates = parse_json(files[METRICS], METRICS), parse_json(files[GATES], GATES)
        return LoadedCheckpoint(version, model, manifest, metadata, metrics, gates)

    def manifest(self, version: str | None = None) -> FeatureManifest:
        """The feature manifest a version (the champion's by default) was trained against, after verifying its files."""
        return FeatureManifest.from_json(self._verified(self._resolve(version))[MANIFEST].decode())

    def predictions(self, version: str | None = None) -> pa.Table:
        """The evaluation-window predictions a version was published with, after verifying its files."""
        return pq.read_table(pa.BufferReader(self._verified(self._resolve(version))[PREDICTIONS]))

    def champion(self) -> ChampionState:
        data = self.storage.read_root(CHAMPION)
        if data is None:
            return ChampionState(None)
        document = parse_json(data, f"{self.storage.location()}/{CHAMPION}")
        try:
            return ChampionState(document["champion"], tuple(document["previous"]), tuple(document["history"]))
        except (KeyError, TypeError) as exc:
            raise RegistryError(f"{self.storage.location()}/{CHAMPION} is malformed: missing {exc}") from None

    def promote(self, version: str) -> None:
        """Make an intact version the champion; the current one becomes the one a rollback returns to."""
        version = self._resolve(version)
        with self.storage.locked():
            state = self.champion()
            if state.champion == version:
                return
            if parse_json(self._verified(version)[GATES], GATES).get("passed") is not True:
                raise RegistryError(f"version {version} did not pass its gates and cannot become champion")
            previous = (*state.previous, state.champion) if state.champion else state.previous
            self._set_champion(state, version, previous, "promote")

    def rollback(self, to: str | None = None) -> str:
        """Make the previous champion (or ``to``, any intact version) the champion again; returns it."""
        target = None if to is None else self._resolve(to)
        # Checked before locking too: a mistyped registry path must not be created by a command that only fails.
        if self.champion().champion is None:
            empty = "" if self._committed() else " (nothing has been published yet)"
            raise RegistryError(f"nothing to roll back in {self.storage.location()}: there is no champion{empty}")
        with self.storage.locked():
            state = self.champion()
            if target is None:
                if not state.previous:
                    raise RegistryError(
                        f"no previous champion to roll back to: {state.champion} is the only champion there has been"
                    )
                target = state.previous[-1]
            if target == state.champion:
                raise RegistryError(f"{target} is already the champion")
            # The stack goes back to what preceded the target's last reign; the rolled-back champion leaves it.
            cut = max((i for i, v in enumerate(state.previous) if v == target), default=len(state.previous))
            self._verified(target)
            self._set_champion(state, target, state.previous[:cut], "rollback")
        return target

    def withdraw(self, version: str) -> None:
        """Undo the promotion of ``version`` just made: the champion it replaced (or none) is champion again."""
        with self.storage.locked():
            state = self.champion()
            if state.champion != version:
                return
            target = state.previous[-1] if state.previous else None
            event = {"at": _iso(datetime.now(UTC)), "action": "withdraw", "version": target, "replaced": version}
            document = ChampionState(target, state.previous[:-1], (*state.history, event))
            self.storage.replace_root(CHAMPION, document.to_json())

    def discard(self, version: str) -> None:
        """Remove a version that is not the champion: the undo of a publish whose surrounding transaction failed."""
        version = self._resolve(version)
        with self.storage.locked():
            if self.champion().champion == version:
                raise RegistryError(f"{version} is the champion; roll back first, then discard it")
            self.storage.remove(version)

    def discard_stale(self, max_age_s: float = STALE_AFTER_S) -> list[str]:
        """Remove what publishers killed more than ``max_age_s`` ago left behind; readers never see it anyway."""
        return self.storage.discard_stale(max_age_s)

    def _set_champion(self, state: ChampionState, version: str, previous: tuple[str, ...], action: str) -> None:
        event = {"at": _iso(datetime.now(UTC)), "action": action, "version": version, "replaced": state.champion}
        self.storage.replace_root(CHAMPION, ChampionState(version, previous, (*state.history, event)).to_json())

    def _resolve(self, version: str | None) -> str:
        """A committed version's id; the champion's for None. RegistryError naming what exists otherwise."""
        known = self._committed()
        where = self.storage.location()
        if not known:
            raise EmptyRegistry(where)
        if version is None:
            version = self.champion().champion
            if version is None:
                raise RegistryError(f"the registry at {where} has no champion; name a version ({known[-1]} is newest)")
        if version not in known:
            shown = ", ".join(known[-5:])
            raise RegistryError(f"unknown version {version!r} in {where}; newest versions: {shown}")
        return version

    def _committed(self) -> list[str]:
        """Ids of versions a publisher completed, oldest first. A directory without a checksum file was not
        published through the registry (a hand-made copy, say): nothing vouches for its content."""
        return [v for v in self.storage.versions() if _VERSION_ID.match(v) and CHECKSUMS in self.storage.files(v)]

    def _layout(self, version: str) -> tuple[list[str], dict[str, str], list[str]]:
        """The files stored, the checksums recorded, and what is wrong with either; reads no payload file, so a
        planted file is reported by name and never opened."""
        stored = self.storage.files(version)
        try:
            recorded = recorded_checksums(self.storage.read(version, CHECKSUMS))
        except RegistryError as exc:
            return stored, {}, [str(exc)]
        return stored, recorded, layout_problems(stored, recorded)

    def _record(self, version: str, champion: str | None) -> VersionRecord:
        stored, _, problems = self._layout(version)
        documents = {}
        for name in (METADATA, MODEL, METRICS, GATES):
            try:
                documents[name] = parse_json(self.storage.read(version, name), name) if name in stored else {}
            except RegistryError as exc:
                documents[name] = {}
                problems.append(str(exc))
        return VersionRecord(
            version,
            documents[METADATA],
            documents[MODEL],
            documents[METRICS],
            documents[GATES],
            version == champion,
            tuple(problems),
        )

    def _check(self, version: str) -> tuple[dict[str, bytes], list[str]]:
        """The verified bytes of every payload file, and every problem found."""
        _, recorded, problems = self._layout(version)
        if problems:
            return {}, problems
        return content_problems(recorded, lambda name: self.storage.read(version, name))

    def _verified(self, version: str) -> dict[str, bytes]:
        files, problems = self._check(version)
        if problems:
            listed = "\n".join(f"  - {p}" for p in problems)
            raise CheckpointRefused(
                f"version {version} at {self.storage.location(version)} failed verification:\n{listed}"
            )
        return files


def _failures(gates: Mapping[str, Any]) -> str:
    failed = [str(r.get("gate", r)) for r in gates.get("results", ()) if isinstance(r, dict) and not r.get("passed")]
    return f"failed: {', '.join(failed)}" if failed else f"gates['passed'] is {gates.get('passed')!r}, not True"


def _staged_files(staged_dir: Path) -> dict[str, bytes]:
    files = {}
    for name in (WEIGHTS, MODEL, HISTORY):
        try:
            files[name] = (staged_dir / name).read_bytes()
        except OSError as exc:
            raise PublishRefused(f"staged result {staged_dir} is incomplete: cannot read {name}: {exc}") from None
    return files


def _windows(windows: Mapping[str, date | str], staged: Mapping[str, str]) -> dict[str, str]:
    """ISO dates of the training, validation and evaluation windows, checked for order and against staging."""
    missing, unknown = set(WINDOW_KEYS) - set(windows), set(windows) - set(WINDOW_KEYS)
    if missing or unknown:
        raise PublishRefused(
            f"windows need exactly {', '.join(WINDOW_KEYS)}; missing {sorted(missing)}, unknown {sorted(unknown)}"
        )
    try:
        days = {k: _day(windows[k]) for k in WINDOW_KEYS}
    except (TypeError, ValueError) as exc:
        raise PublishRefused(f"windows must be dates or ISO date strings: {exc}") from None
    spans = [(days[f"{w}_start"], days[f"{w}_end"]) for w in ("train", "valid", "eval")]
    # Each window must end before the next starts: the evaluation is held out from everything the model saw.
    if any(s > e for s, e in spans) or any(end >= start for (_, end), (start, _) in itertools.pairwise(spans)):
        raise PublishRefused(f"windows must be ordered train < valid < eval, each start <= end; got {days}")
    isoformat = {k: d.isoformat() for k, d in days.items()}
    differ = {k: (v, isoformat[k]) for k, v in staged.items() if k in isoformat and v != isoformat[k]}
    if differ:
        raise PublishRefused(f"windows differ from the staged result's (staged, given): {differ}")
    return isoformat


def _day(value: date | str) -> date:
    if isinstance(value, datetime):  # pandas Timestamp included
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(value)


def _json(document: Mapping[str, Any], name: str) -> bytes:
    try:
        return (json.dumps(document, indent=2, default=_plain) + "\n").encode()
    except (TypeError, ValueError) as exc:
        raise PublishRefused(f"{name} cannot be stored as JSON: {exc}") from None


def _plain(value: object) -> object:
    """numpy and torch scalars, and dates, as JSON; anything else is an error rather than a silent str()."""
    if isinstance(value, date):
        return value.isoformat()
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return value.item()
    raise TypeError(f"{type(value).__name__} {value!r:.80} is not JSON-serialisable")


def _parquet(predictions: pa.Table | pd.DataFrame, keys: tuple[str, ...]) -> bytes:
    table = (
        predictions if isinstance(predictions, pa.Table) else pa.Table.from_pandas(predictions, preserve_index=False)
    )
    missing = [k for k in keys if k not in table.column_names]
    if missing or table.num_rows == 0:
        raise PublishRefused(
            f"predictions need rows and the key columns {list(keys)} (names are case-sensitive); "
            f"got {table.num_rows} rows of {table.column_names}"
        )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
