"""What every market-data source delivers to the ingest.

A source yields ``QuoteChunk``s whose frames carry the canonical quote columns, in canonical order,
not yet validated: validation and quarantine belong to the ingest, so every source gets the same
checks and the same error reports.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

import pandas as pd

from schemas.columns import CANONICAL_QUOTE_COLUMNS

LISTED_INFO_COLUMNS: tuple[str, ...] = (
    "Code",
    "CompanyName",
    "Sector17Code",
    "Sector33Code",
    "MarketCode",
    "ValidFrom",
    "ValidTo",
)
ORACLE_COLUMNS: tuple[str, ...] = ("Code", "Date", "oracle_1d", "oracle_5d", "oracle_10d", "oracle_20d")


class SourceError(RuntimeError):
    """The source cannot deliver data: unreadable file, malformed payload, bad credentials."""


class TransientSourceError(SourceError):
    """A failure that may pass on retry (HTTP 429/5xx, connection reset)."""


@dataclass(frozen=True)
class QuoteChunk:
    """A slice of quotes from one origin.

    ``frame`` has exactly ``CANONICAL_QUOTE_COLUMNS`` in order (values may still be invalid); its
    index is the row number inside ``origin`` so that error reports can point at the source row.
    ``oracle`` is only set by the synthetic source: the true expected forward returns, with
    ``ORACLE_COLUMNS``, stored apart so that nothing that builds features can read it. ``file_columns`` maps a
    canonical column to the origin's own name for it where they differ, so that reports can name both.
    """

    frame: pd.DataFrame
    origin: str
    oracle: pd.DataFrame | None = None
    file_columns: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if tuple(self.frame.columns) != CANONICAL_QUOTE_COLUMNS:
            raise ValueError(
                f"{self.origin}: source produced columns {list(self.frame.columns)}, "
                f"expected {list(CANONICAL_QUOTE_COLUMNS)}"
            )


class MarketSource(Protocol):
    """A market-data source. ``name`` is recorded in the ingest log."""

    name: str

    def quote_chunks(self, start: date | None, end: date | None) -> Iterator[QuoteChunk]:
        """Quotes with ``start <= Date <= end`` (None: unbounded on that side), in chunks of bounded size."""
        ...

    def listed_info(self, as_of: date) -> pd.DataFrame | None:
        """Listing records with ``LISTED_INFO_COLUMNS`` known on ``as_of``, or None if the source has none."""
        ...

    def default_window(self) -> tuple[date | None, date | None]:
        """The (start, end) used when the caller gives none; None means unbounded on that side."""
        ...
