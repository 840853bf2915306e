"""Case-sensitive column-name comparison that explains itself.

DuckDB identifiers are case-insensitive, so ``code`` and ``Code`` look the same in SQL. Arrow and
pandas lookups are not. Every comparison here is exact, and a case-only difference is named as such.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ColumnDiff:
    """How a found column list differs from the expected one (order not considered)."""

    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    # (expected, found) pairs that differ only in letter case.
    case_only: tuple[tuple[str, str], ...]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected)

    def describe(self) -> str:
        parts = [
            f"{found!r} found where {expected!r} was expected (names are case-sensitive)"
            for expected, found in self.case_only
        ]
        renamed = {e for e, _ in self.case_only} | {f for _, f in self.case_only}
        missing = [c for c in self.missing if c not in renamed]
        unexpected = [c for c in self.unexpected if c not in renamed]
        if missing:
            parts.append(f"missing {missing}")
        if unexpected:
            parts.append(f"unexpected {unexpected}")
        return "; ".join(parts)


def diff_columns(found: Iterable[str], expected: Sequence[str]) -> ColumnDiff:
    found = list(found)
    missing = tuple(c for c in expected if c not in found)
    unexpected = tuple(c for c in found if c not in expected)
    by_fold = {c.casefold(): c for c in unexpected}
    case_only = tuple((c, by_fold[c.casefold()]) for c in missing if c.casefold() in by_fold)
    return ColumnDiff(missing=missing, unexpected=unexpected, case_only=case_only)
