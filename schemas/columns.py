"""The canonical columns of the warehouse's quote table, in order: what every source maps its files onto, and what
the raw-quotes schema and the warehouse check. The contract layer owns them, so the library imports them from here."""

from __future__ import annotations

CANONICAL_QUOTE_COLUMNS: tuple[str, ...] = (
    "Code",
    "Date",
    "Open",
    "High",
    "Low",
    "Close",
    "Volume",
    "TurnoverValue",
    "AdjustmentFactor",
)
