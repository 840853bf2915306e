"""The feature manifest: the versioned, hashed contract of one feature table.

A manifest names every column of a feature table in order, with its dtype, its feature group and how
many trading days of history it reads. Its ``features`` are the only source of a model's input width:
nothing may add, drop or reorder an input without producing a manifest with a different ``sha256``.

The hash covers keys, features, targets, the CS-Z settings, the feature code version and the targets'
execution lag (sessions from a signal's close to the close a trade enters at). ``provenance``
(where and when the table was built, from which raw data) is recorded but not hashed, so two builds of
the same contract on different machines or days share one hash and one table name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import numbers
import os
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

FEATURE_GROUPS: tuple[str, ...] = ("price", "volume", "volatility", "sector", "market", "cs_z")
TARGET_GROUP = "target"
DTYPES: tuple[str, ...] = ("float32", "float64", "bool", "int64", "string", "date")
CSZ_FILLS: tuple[str, ...] = ("none", "zero")
# A column named like this is a label whatever its group says: it must never be a model input.
TARGET_PREFIX = "target_"


class ManifestError(ValueError):
    """A manifest that is inconsistent, malformed, tampered with or unreadable."""


@dataclass(frozen=True)
class FeatureColumn:
    name: str
    dtype: str  # one of DTYPES
    group: str  # one of FEATURE_GROUPS for inputs, TARGET_GROUP for targets
    # Trading days of history, the current day included, that the value at day t depends on; 0 for targets.
    lookback: int


@dataclass(frozen=True)
class CSZSettings:
    """Per-date cross-sectional z-scoring: ``clip((x - mean) / std, -clip, clip)`` over the stocks with a value."""

    clip: float  # |z| is clipped at this bound
    min_stocks: int  # a date with fewer stocks having a value gives NaN
    min_std: float  # a std below this (near-constant cross-section) gives NaN
    ddof: int  # 1 = sample std, as Qlib CSZScoreNorm
    fill: str  # "none": NaN stays NaN; "zero": NaN becomes 0 after z-scoring

    def __post_init__(self) -> None:
        problems = []
        if not _is_real(self.clip) or not self.clip > 0:
            problems.append(f"clip must be a number > 0, got {self.clip!r}")
        if not _is_int(self.ddof) or self.ddof not in (0, 1):
            problems.append(f"ddof must be 0 or 1, got {self.ddof!r}")
        # A std needs at least ddof + 1 values; fewer than 2 stocks is no cross-section at all.
        if not _is_int(self.min_stocks) or self.min_stocks < 2:
            problems.append(f"min_stocks must be an integer >= 2, got {self.min_stocks!r}")
        if not _is_real(self.min_std) or not self.min_std >= 0:
            problems.append(f"min_std must be a number >= 0, got {self.min_std!r}")
        if self.fill not in CSZ_FILLS:
            problems.append(f"fill must be one of {list(CSZ_FILLS)}, got {self.fill!r}")
        if problems:
            raise ManifestError("invalid CS-Z settings: " + "; ".join(problems))
        # 5 and 5.0 are the same setting and must serialise, and so hash, the same.
        object.__setattr__(self, "clip", float(self.clip))
        object.__setattr__(self, "min_std", float(self.min_std))


@dataclass(frozen=True)
class FeatureManifest:
    """The ordered inputs and targets of a feature table, keyed by ``keys`` = (stock id, trading date)."""

    features: tuple[FeatureColumn, ...]  # ordered model inputs
    targets: tuple[FeatureColumn, ...]
    cs_z: CSZSettings
    code_version: str  # version of the feature code; bump it when a definition changes
    keys: tuple[str, ...] = ("Code", "Date")
    # Sessions between the close of day t and the entry of its targets: target_h = close[t+lag+h] / close[t+lag] - 1.
    execution_lag: int = 0
    # Raw-data fingerprint, build time, rows, date range: recorded, not hashed, not compared.
    provenance: Mapping[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        # Lists from a caller or from JSON become tuples so that the manifest is immutable and hashable; a copy of
        # provenance (text, as JSON will give it back) so that the caller's dict cannot change it afterwards.
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "targets", tuple(self.targets))
        object.__setattr__(self, "keys", tuple(self.keys))
        object.__setattr__(self, "provenance", {str(k): str(v) for k, v in self.provenance.items()})
        problems = _problems(self)
        if problems:
            raise ManifestError("invalid feature manifest: " + "; ".join(problems))

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(_canonical_json(self).encode("ascii")).hexdigest()

    def label_span(self, horizon: int) -> int:
        """Sessions from a day to the close its ``horizon`` target ends at: how far every purge of it must reach."""
        return self.execution_lag + horizon

    @property
    def width(self) -> int:
        return len(self.features)

    @property
    def warm_up(self) -> int:
        """Leading sessions of a table whose features are incomplete: the longest feature lookback."""
        return max(column.lookback for column in self.features)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.features)

    @property
    def feature_groups(self) -> tuple[str, ...]:
        return tuple(c.group for c in self.features)

    @property
    def target_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.targets)

    @property
    def columns(self) -> tuple[str, ...]:
        return self.keys + self.feature_names + self.target_names

    @property
    def table_name(self) -> str:
        return f"features_{self.sha256[:12]}"

    def to_json(self) -> str:
        document = {
            "sha256": self.sha256,
            "width": self.width,
            **_contract(self),
            "provenance": dict(self.provenance),
        }
        return json.dumps(document, indent=2, ensure_ascii=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> FeatureManifest:
        """Rebuild a manifest and verify that its stored sha256 and width still describe its content."""
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"manifest is not valid JSON: {exc}") from None
        try:
            manifest = cls(
                features=tuple(FeatureColumn(**c) for c in document["features"]),
                targets=tuple(FeatureColumn(**c) for c in document["targets"]),
                cs_z=CSZSettings(**document["cs_z"]),
                code_version=document["code_version"],
                keys=tuple(document["keys"]),
                execution_lag=document.get("execution_lag", 0),
                provenance=document.get("provenance", {}),
            )
            stored_sha, stored_width = document["sha256"], document["width"]
        except (KeyError, TypeError, AttributeError) as exc:
            raise ManifestError(f"manifest is missing or has malformed fields: {exc!r}") from None
        if stored_sha != manifest.sha256:
            raise ManifestError(
                f"manifest sha256 {stored_sha} does not match its content (which hashes to {manifest.sha256}): "
                "it was edited by hand or corrupted; rebuild it with the feature builder instead"
            )
        if stored_width != manifest.width:
            raise ManifestError(f"manifest width {stored_width} does not match its {manifest.width} features")
        return manifest

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically: readers see the old manifest or the new one, never a partial file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(self.to_json())
                fh.flush()
                os.fsync(fh.fileno())
                # mkstemp creates the file 0600; a manifest is meant to be read by every process of the platform.
                os.fchmod(fh.fileno(), 0o644)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return path

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> FeatureManifest:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(f"cannot read feature manifest {path}: {exc}") from exc
        try:
            return cls.from_json(text)
        except ManifestError as exc:
            raise ManifestError(f"invalid feature manifest {path}: {exc}") from None


def input_positions(names: Sequence[str], inputs: Sequence[str], option: str, owner: str) -> list[int]:
    """Positions of ``names`` among ``inputs`` (a manifest's feature names, in order); a name that is not one of them
    is a ValueError naming ``option`` and ``owner`` (the table or manifest) and listing the inputs there are."""
    known = list(inputs)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"{option} names {unknown}, which are not inputs of {owner}; its inputs are: {', '.join(known)}"
        )
    return [known.index(n) for n in names]


def group_positions(wanted: Sequence[str], groups: Sequence[str], option: str, owner: str) -> list[int]:
    """Positions of the inputs whose feature group (``groups``, one per input, in order) is one of ``wanted``; a
    wanted group that no input is in is a ValueError naming ``option`` and ``owner`` and listing the groups."""
    missing = sorted(set(wanted) - set(groups))
    if missing:
        known = ", ".join(sorted(set(groups)))
        raise ValueError(f"{option} names {missing}, but no input of {owner} is in them; its groups are: {known}")
    return [j for j, group in enumerate(groups) if group in wanted]


def _contract(manifest: FeatureManifest) -> dict[str, object]:
    """Everything the hash covers."""
    contract: dict[str, object] = {
        "keys": list(manifest.keys),
        "features": [asdict(c) for c in manifest.features],
        "targets": [asdict(c) for c in manifest.targets],
        "cs_z": asdict(manifest.cs_z),
        "code_version": manifest.code_version,
    }
    # Only when set: a lag-0 manifest keeps the hash, and so the table and the checkpoints, it had before lags.
    if manifest.execution_lag:
        contract["execution_lag"] = manifest.execution_lag
    return contract


def _canonical_json(manifest: FeatureManifest) -> str:
    return json.dumps(_contract(manifest), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _problems(m: FeatureManifest) -> list[str]:
    problems = []
    if len(m.keys) != 2:
        problems.append(f"keys must be (stock id, trading date), got {list(m.keys)}")
    if not m.features:
        problems.append("a manifest needs at least one input feature")
    if not isinstance(m.code_version, str) or not m.code_version:
        problems.append(f"code_version must be a non-empty string, got {m.code_version!r}")
    if not _is_int(m.execution_lag) or m.execution_lag < 0:
        problems.append(f"execution_lag must be an integer >= 0, got {m.execution_lag!r}")
    for role, columns, groups in (("feature", m.features, FEATURE_GROUPS), ("target", m.targets, (TARGET_GROUP,))):
        for c in columns:
            if not isinstance(c, FeatureColumn) or not isinstance(c.name, str) or not c.name:
                problems.append(f"{role} {c!r} is not a FeatureColumn with a name")
                continue
            if c.dtype not in DTYPES:
                problems.append(f"{role} {c.name!r} has dtype {c.dtype!r}, expected one of {list(DTYPES)}")
            if c.group not in groups:
                problems.append(f"{role} {c.name!r} has group {c.group!r}, expected one of {list(groups)}")
            if role == "feature" and not (_is_int(c.lookback) and c.lookback >= 1):
                problems.append(f"feature {c.name!r} has lookback {c.lookback!r}, expected an integer >= 1")
            if role == "target" and c.lookback != 0:
                problems.append(f"target {c.name!r} has lookback {c.lookback!r}, expected 0")
    if problems:
        # Name checks below assume well-formed columns.
        return problems
    targets = set(m.target_names)
    leaked = [n for n in m.feature_names if n in targets or n.startswith(TARGET_PREFIX)]
    if leaked:
        problems.append(f"target columns among the inputs: {leaked}")
    names = list(m.keys) + list(m.feature_names) + list(m.target_names)
    duplicated = sorted(n for n, count in Counter(names).items() if count > 1)
    if duplicated:
        problems.append(f"duplicate column names: {duplicated}")
    return problems


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
