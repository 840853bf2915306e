"""Feature contracts that block training: the columns of some data against a feature manifest.

Checked before anything expensive starts (a build is written, a model is trained, a checkpoint scores),
so that the drifts this platform exists to prevent fail loudly and say what to do: a model config of 82
inputs meeting data of 437, a CS-Z block that silently disappeared, ``code`` where ``Code`` was expected.

Names are compared exactly, on the Arrow or pandas schema. DuckDB identifiers are case-insensitive, so
a SQL query over the warehouse would happily read ``code`` as ``Code`` and hide the drift; never check a
contract through SQL. Key columns are checked by name and position; their types are the warehouse's.

Dtypes are normalised to the manifest's canonical names. A tz-naive timestamp counts as ``"date"``:
pandas has no date dtype, and a DataFrame must get the same verdict as the Arrow table made from it.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd
import pyarrow as pa
from pandas.api.types import is_datetime64_dtype, is_string_dtype, pandas_dtype

from schemas.manifest import DTYPES, FeatureManifest
from schemas.naming import ColumnDiff, diff_columns

Scope = Literal["table", "inputs"]
Columns = pa.Schema | pa.Table | pd.DataFrame | Sequence[tuple[str, object]]

_SHOWN = 10  # names quoted per problem; the count is always given
_SCOPES: dict[str, str] = {
    "table": "a stored feature table: keys, inputs, targets",
    "inputs": "model inputs: keys and features",
}
_ARROW_DTYPES: dict[pa.DataType, str] = {
    pa.float32(): "float32",
    pa.float64(): "float64",
    pa.bool_(): "bool",
    pa.int64(): "int64",
    pa.string(): "string",
    pa.large_string(): "string",
    pa.string_view(): "string",
    pa.date32(): "date",
    pa.date64(): "date",
}


@dataclass(frozen=True, kw_only=True)
class ContractDiff:
    """How data's columns differ from a manifest. Positions count from 0 in the respective column lists."""

    manifest: FeatureManifest = field(repr=False)
    scope: Scope
    missing: tuple[str, ...]  # expected, not found (case-only pairs excluded)
    extra: tuple[str, ...]  # found, not expected (case-only pairs excluded)
    case_only: tuple[tuple[str, str], ...]  # (expected, found)
    moved: tuple[tuple[str, int, int], ...]  # (name, expected position, found position)
    dtype_changed: tuple[tuple[str, str, str], ...]  # (name, expected, found)
    hash_mismatch: tuple[str, str] | None  # (expected manifest sha256, found sha256)
    expected_width: int
    found_width: int
    duplicated: tuple[str, ...] = ()  # found more than once

    @property
    def empty(self) -> bool:
        problems = (self.missing, self.extra, self.case_only, self.moved, self.dtype_changed, self.duplicated)
        return not any(problems) and self.hash_mismatch is None and self.expected_width == self.found_width

    def problems(self) -> list[str]:
        """One line per kind of difference, as ``describe`` lists them."""
        found = []
        if self.case_only:
            pairs = ColumnDiff(missing=(), unexpected=(), case_only=self.case_only).describe()
            found.append(f"case-only: {pairs}")
        if self.missing:
            found.append(f"missing {_count(self.missing)}: {_names(self.missing)}{self._whole_groups()}")
        if self.extra:
            found.append(f"extra {_count(self.extra)}: {_names(self.extra)}")
        if self.duplicated:
            found.append(f"duplicated: {_names(self.duplicated)} found more than once")
        if self.expected_width != self.found_width:
            found.append(f"width: manifest says {self.expected_width} inputs, data has {self.found_width}")
        if self.moved:
            moves = (f"{n!r} at position {f}, expected {e}" for n, e, f in self.moved)
            found.append(f"order: {_shown(moves, len(self.moved), '; ')} (positions count from 0)")
        if self.dtype_changed:
            changes = (f"{n!r} is {f}, expected {e}" for n, e, f in self.dtype_changed)
            found.append(f"dtype: {_shown(changes, len(self.dtype_changed), '; ')}")
        if self.hash_mismatch:
            e, f = self.hash_mismatch
            found.append(f"manifest hash: expected {e[:12]}…, the data's manifest is {f[:12]}…")
        return found

    def describe(self) -> str:
        m = self.manifest
        head = f"manifest {m.sha256[:12]}…, {m.width} input features"
        if self.empty:
            return f"feature contract satisfied ({head})"
        lines = [f"feature contract violated ({head}; checked as {_SCOPES[self.scope]}):"]
        lines += [f"  - {text}" for text in self.problems()]
        lines.append(f"  what to do: {self._remedy()}")
        return "\n".join(lines)

    def _whole_groups(self) -> str:
        columns = self.manifest.features + (self.manifest.targets if self.scope == "table" else ())
        groups: dict[str, list[str]] = {}
        for c in columns:
            groups.setdefault(c.group, []).append(c.name)
        missing = set(self.missing)
        gone = [g for g, names in groups.items() if missing.issuperset(names)]
        if not gone:
            return ""
        what = f"the whole {' and '.join(gone)} group{'s' if len(gone) > 1 else ''}"
        explained = sum(len(groups[g]) for g in gone) == len(self.missing)
        return f" ({what})" if explained else f" (including {what})"

    def _remedy(self) -> str:
        m = self.manifest
        fixes = []
        if self.case_only:
            fixes.append("spell the columns exactly as the manifest does where the data is produced")
        if self.missing or self.extra or self.duplicated or self.dtype_changed or self.hash_mismatch:
            fixes.append(
                f"rebuild the features with feature code {m.code_version!r} so that they match manifest "
                f"{m.sha256[:12]}, or retrain against the data's manifest; never resize a model's inputs to fit"
            )
        elif self.moved:
            fixes.append("select the columns in manifest order (FeatureManifest.columns) before writing or scoring")
        return "; ".join(fixes)


class ContractViolation(ValueError):
    """Data that does not match the manifest it is used with. ``diff`` says how."""

    def __init__(self, diff: ContractDiff) -> None:
        self.diff = diff
        super().__init__(diff.describe())


def diff_contract(
    actual: Columns, manifest: FeatureManifest, *, scope: Scope = "table", actual_hash: str | None = None
) -> ContractDiff:
    """Compare ``actual``'s columns with the manifest.

    ``scope="table"``: the stored feature table (keys, features, targets, in that order).
    ``scope="inputs"``: what a model consumes (keys, features); target columns in the data are ignored.
    ``actual_hash``: the sha256 of the manifest the data was built under, where known.
    """
    if scope not in _SCOPES:
        raise ValueError(f"scope must be one of {list(_SCOPES)}, got {scope!r}")
    expected_columns = manifest.features + (manifest.targets if scope == "table" else ())
    expected = list(manifest.keys) + [c.name for c in expected_columns]
    expected_dtypes = {c.name: c.dtype for c in expected_columns}
    ignored = set() if scope == "table" else set(manifest.target_names)
    # (position in the data, name, canonical dtype), positions kept from before targets are ignored.
    found = [(i, name, dtype) for i, (name, dtype) in enumerate(_columns(actual)) if name not in ignored]
    found_names = [name for _, name, _ in found]

    names = diff_columns(found_names, expected)
    renamed_expected = {e for e, _ in names.case_only}
    renamed_found = {f for _, f in names.case_only}
    not_inputs = {n.casefold() for n in manifest.keys + (manifest.target_names if scope == "table" else ())}
    return ContractDiff(
        manifest=manifest,
        scope=scope,
        missing=tuple(c for c in names.missing if c not in renamed_expected),
        extra=tuple(c for c in names.unexpected if c not in renamed_found),
        case_only=names.case_only,
        moved=_moved(expected, found),
        dtype_changed=tuple(
            (name, expected_dtypes[name], dtype)
            for _, name, dtype in found
            if name in expected_dtypes and dtype != expected_dtypes[name]
        ),
        hash_mismatch=None if actual_hash in (None, manifest.sha256) else (manifest.sha256, actual_hash),
        expected_width=manifest.width,
        found_width=sum(1 for n in found_names if n.casefold() not in not_inputs),
        duplicated=tuple(n for n, count in Counter(found_names).items() if count > 1),
    )


def check_contract(
    actual: Columns, manifest: FeatureManifest, *, scope: Scope = "table", actual_hash: str | None = None
) -> ContractDiff:
    """``diff_contract``, raising ``ContractViolation`` unless the data matches exactly."""
    diff = diff_contract(actual, manifest, scope=scope, actual_hash=actual_hash)
    if not diff.empty:
        raise ContractViolation(diff)
    return diff


def _columns(actual: Columns) -> list[tuple[str, str]]:
    if isinstance(actual, pa.Table):
        actual = actual.schema
    if isinstance(actual, pa.Schema):
        return [(f.name, _canonical_dtype(f.type)) for f in actual]
    if isinstance(actual, pd.DataFrame):
        return [(str(name), _canonical_dtype(dtype)) for name, dtype in actual.dtypes.items()]
    return [(name, _canonical_dtype(dtype)) for name, dtype in actual]


def _canonical_dtype(dtype: object) -> str:
    """The manifest's name for an Arrow, numpy or pandas dtype; anything else keeps its own name."""
    if isinstance(dtype, pd.ArrowDtype):
        dtype = dtype.pyarrow_dtype
    if isinstance(dtype, pa.DataType):
        if dtype in _ARROW_DTYPES:
            return _ARROW_DTYPES[dtype]
        return "date" if pa.types.is_timestamp(dtype) and dtype.tz is None else str(dtype)
    if isinstance(dtype, str) and dtype in DTYPES:
        return dtype
    try:
        dtype = pandas_dtype(dtype)
    except TypeError:
        return str(dtype)
    if isinstance(dtype, pd.DatetimeTZDtype):
        return str(dtype)
    if is_datetime64_dtype(dtype):
        return "date"
    if is_string_dtype(dtype):  # object, str, StringDtype
        return "string"
    name = str(dtype).lower()  # numpy and nullable pandas: float32/Float32, int64/Int64, bool/boolean
    return "bool" if name == "boolean" else name


def _moved(expected: Sequence[str], found: Sequence[tuple[int, str, str]]) -> tuple[tuple[str, int, int], ...]:
    """Columns out of order: those outside a longest subsequence already in manifest order.

    That is the fewest columns whose moves explain the order found, so one misplaced column is reported
    once rather than shifting every column after it.
    """
    position = {name: i for i, name in enumerate(expected)}
    common = [(position[name], i, name) for i, name, _ in found if name in position]
    keep = _longest_increasing([e for e, _, _ in common])
    return tuple((name, e, f) for k, (e, f, name) in enumerate(common) if k not in keep)


def _longest_increasing(values: Sequence[int]) -> set[int]:
    """Indices of one longest strictly increasing subsequence (patience sorting, O(n log n))."""
    tail_values: list[int] = []
    tail_index: list[int] = []
    previous = [-1] * len(values)
    for i, v in enumerate(values):
        k = bisect.bisect_left(tail_values, v)
        previous[i] = tail_index[k - 1] if k else -1
        if k == len(tail_values):
            tail_values.append(v)
            tail_index.append(i)
        else:
            tail_values[k] = v
            tail_index[k] = i
    keep = set()
    i = tail_index[-1] if tail_index else -1
    while i >= 0:
        keep.add(i)
        i = previous[i]
    return keep


def _count(names: Sequence[str]) -> str:
    return f"{len(names)} column{'s' if len(names) != 1 else ''}"


def _names(names: Sequence[str]) -> str:
    return _shown(names, len(names), ", ")


def _shown(items: Iterable[str], total: int, sep: str) -> str:
    shown = [item for _, item in zip(range(_SHOWN), items, strict=False)]
    return sep.join(shown) + (f"{sep}… ({total - _SHOWN} more)" if total > _SHOWN else "")
