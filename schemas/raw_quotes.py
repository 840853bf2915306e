"""The pandera schema for raw quotes, and the split of its failures into structural and row-level.

Structural failures say the input as a whole is wrong: a missing or unexpected column, a value that
cannot take its column's type, duplicate (Code, Date) keys. The ingest aborts and writes nothing.
Row-level failures are properties of single rows, such as a missing price or a Close outside
[Low, High]. They are quarantined with a reason, unless the policy says abort.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from schemas.columns import CANONICAL_QUOTE_COLUMNS
from schemas.naming import diff_columns

PRICE_COLUMNS: tuple[str, ...] = ("Open", "High", "Low", "Close")
REJECTED_COLUMNS: tuple[str, ...] = ("source_row", "Code", "Date", "rule", "reason", "record")
_SHOWN = 5  # example rows quoted per problem in an error report


class StructuralError(ValueError):
    """Input that cannot be ingested at all. The message names the origin, columns, rows and values."""

    def __init__(self, origin: str, problems: list[str]) -> None:
        self.origin = origin
        self.problems = problems
        super().__init__(f"{origin}: " + "; ".join(problems))


@dataclass(frozen=True)
class RowRule:
    """A row-level check: its pandera name and how to explain one failing row."""

    name: str
    explain: Callable[[pd.Series, str, Mapping[str, object]], str]  # (row, column, context) -> reason


def _fmt(value: object) -> str:
    """One form for a value whether it came as a number (Parquet) or as text (CSV): ``72.5442``, not ``'72.5442'``."""
    if pd.isna(value):
        return "missing"
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return repr(value)
    return f"{float(value):g}" if isinstance(value, numbers.Real) else repr(value)


def _file_name(column: str, ctx: Mapping[str, object]) -> str:
    """`` (file column 'open')`` where the origin's own name for ``column`` differs from it, else nothing."""
    file_columns: Mapping[str, str] = ctx.get("file_columns") or {}  # type: ignore[assignment]
    name = file_columns.get(column, column)
    return "" if name == column else f" (file column {name!r})"


def _col(column: str, ctx: Mapping[str, object]) -> str:
    return column + _file_name(column, ctx)


ROW_RULES: dict[str, RowRule] = {
    rule.name: rule
    for rule in (
        RowRule("not_nullable", lambda row, col, ctx: f"{_col(col, ctx)} is missing"),
        RowRule(
            "code_format",
            lambda row, col, ctx: f"{_col('Code', ctx)} {row['Code']!r} does not match {ctx['code_pattern']}",
        ),
        RowRule(
            "trading_day",
            lambda row, col, ctx: (
                f"{_col('Date', ctx)} {pd.Timestamp(row['Date']).date()} is not a {ctx['calendar']} trading day"
            ),
        ),
        RowRule("positive_price", lambda row, col, ctx: f"{_col(col, ctx)} {_fmt(row[col])} is not a finite price > 0"),
        RowRule("non_negative", lambda row, col, ctx: f"{_col(col, ctx)} {_fmt(row[col])} is not a finite value >= 0"),
        RowRule(
            "positive_factor", lambda row, col, ctx: f"{_col('AdjustmentFactor', ctx)} {_fmt(row[col])} is not > 0"
        ),
        RowRule(
            "high_ge_low",
            lambda row, col, ctx: f"{_col('High', ctx)} {_fmt(row['High'])} < {_col('Low', ctx)} {_fmt(row['Low'])}",
        ),
        RowRule(
            "close_within_range",
            lambda row, col, ctx: (
                f"{_col('Close', ctx)} {_fmt(row['Close'])} outside [{_col('Low', ctx)} {_fmt(row['Low'])}, "
                f"{_col('High', ctx)} {_fmt(row['High'])}]"
            ),
        ),
    )
}


def _either_missing(d: pd.DataFrame, *cols: str) -> pd.Series:
    # Missing values are reported once, by not_nullable, not again by every rule that reads them.
    return d[list(cols)].isna().any(axis=1)


def _non_negative() -> pa.Check:
    # Infinity passes ``>= 0`` and would surface later as a NaN feature with no row named.
    return pa.Check(lambda s: np.isfinite(s) & (s >= 0), name="non_negative")


def raw_quotes_schema(sessions: pd.DatetimeIndex, calendar: str, code_pattern: str) -> pa.DataFrameSchema:
    """Strict, ordered schema of ``raw_quotes`` rows: trading days of ``calendar``, codes matching ``code_pattern``."""
    session_values = pd.DatetimeIndex(sessions).as_unit("ns")

    def price(name: str) -> pa.Column:
        return pa.Column(float, pa.Check(lambda s: np.isfinite(s) & (s > 0), name="positive_price"))

    return pa.DataFrameSchema(
        {
            "Code": pa.Column(str, pa.Check(lambda s: s.str.fullmatch(code_pattern), name="code_format")),
            "Date": pa.Column("datetime64[ns]", pa.Check(lambda s: s.isin(session_values), name="trading_day")),
            **{c: price(c) for c in PRICE_COLUMNS},
            "Volume": pa.Column(float, _non_negative()),
            "TurnoverValue": pa.Column(float, _non_negative(), nullable=True),
            "AdjustmentFactor": pa.Column(float, pa.Check(lambda s: np.isfinite(s) & (s > 0), name="positive_factor")),
        },
        checks=[
            pa.Check(lambda d: (d["High"] >= d["Low"]) | _either_missing(d, "High", "Low"), name="high_ge_low"),
            pa.Check(
                lambda d: d["Close"].between(d["Low"], d["High"]) | _either_missing(d, "Close", "Low", "High"),
                name="close_within_range",
            ),
        ],
        unique=["Code", "Date"],
        strict=True,
        ordered=True,
        coerce=True,
        name="raw_quotes",
        metadata={"calendar": calendar, "code_pattern": code_pattern},
    )


@dataclass(frozen=True)
class ValidatedChunk:
    """Rows that passed, coerced to canonical dtypes, and rows quarantined with ``REJECTED_COLUMNS``."""

    valid: pd.DataFrame
    rejected: pd.DataFrame


def validate_quotes(
    frame: pd.DataFrame, origin: str, schema: pa.DataFrameSchema, file_columns: Mapping[str, str] | None = None
) -> ValidatedChunk:
    """Validate one chunk. Raises ``StructuralError``; returns row-level failures as quarantined rows.

    ``frame``'s index is the row number inside ``origin`` and is what reports quote. ``file_columns`` maps
    canonical columns to the origin's own names, which reports name beside the canonical ones.
    """
    ctx = {**schema.metadata, "file_columns": dict(file_columns or {})}
    try:
        return ValidatedChunk(schema.validate(frame, lazy=True), _empty_rejected())
    except SchemaErrors as exc:
        cases = exc.failure_cases
    structural = cases[~cases["check"].isin(ROW_RULES)]
    if not structural.empty:
        raise StructuralError(origin, _structural_problems(frame, structural, ctx)) from None
    rejected = _explain_rows(frame, cases, ctx)
    kept = frame.drop(index=rejected["source_row"])
    return ValidatedChunk(schema.validate(kept, lazy=True), rejected)


def _empty_rejected() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="datetime64[ns]" if c == "Date" else object) for c in REJECTED_COLUMNS})


def _explain_rows(frame: pd.DataFrame, cases: pd.DataFrame, ctx: Mapping[str, object]) -> pd.DataFrame:
    # Frame-wide checks list every column of a failing row; one reason per (row, rule) is enough.
    cases = cases.assign(column=cases["column"].where(cases["schema_context"] == "Column"))
    cases = cases.drop_duplicates(["index", "check", "column"])
    records = []
    for idx, group in cases.groupby("index", sort=True):
        row = frame.loc[idx]
        records.append(
            {
                "source_row": idx,
                "Code": None if pd.isna(row["Code"]) else str(row["Code"]),
                "Date": pd.to_datetime(row["Date"], errors="coerce"),
                "rule": ",".join(dict.fromkeys(group["check"])),
                "reason": "; ".join(
                    ROW_RULES[c].explain(row, col, ctx) for c, col in zip(group["check"], group["column"], strict=True)
                ),
                "record": json.dumps({k: None if pd.isna(v) else v for k, v in row.items()}, default=str),
            }
        )
    return pd.DataFrame.from_records(records, columns=list(REJECTED_COLUMNS))


def _structural_problems(frame: pd.DataFrame, cases: pd.DataFrame, ctx: Mapping[str, object]) -> list[str]:
    checks = cases["check"].astype(str)
    column_level = checks.isin(["column_in_dataframe", "column_in_schema"])
    if column_level.any():
        # Nothing else is meaningful when the columns themselves are wrong.
        diff = diff_columns(frame.columns, CANONICAL_QUOTE_COLUMNS)
        return [f"columns do not match raw_quotes: {diff.describe()}; expected {list(CANONICAL_QUOTE_COLUMNS)}"]
    problems = []
    if (checks == "column_ordered").any():
        problems.append(f"columns out of order: found {list(frame.columns)}, expected {list(CANONICAL_QUOTE_COLUMNS)}")
    uncoercible = cases[checks.str.startswith("coerce_dtype")]
    for column, group in uncoercible.groupby("column", sort=False):
        dtype = group["check"].iloc[0].removeprefix("coerce_dtype(").rstrip(")")
        problems.append(
            f"column {column!r}{_file_name(column, ctx)}: expected {dtype}, cannot convert {_examples(group)}"
        )
    duplicates = cases[checks == "multiple_fields_uniqueness"]
    if not duplicates.empty:
        rows = sorted(duplicates["index"].unique())
        # A missing Code or Date stays missing through astype(str), and pandera counts missing keys as equal.
        keys = frame.loc[rows, ["Code", "Date"]].astype(str).fillna({"Code": "no code", "Date": "no date"})
        keys = keys.agg(" ".join, axis=1)
        shown = ", ".join(f"row {r} ({k})" for r, k in list(zip(rows, keys, strict=True))[:_SHOWN])
        problems.append(f"duplicate (Code, Date) keys in {len(rows)} rows: {shown}{_more(len(rows))}")
    if not problems:
        # A failure with no dedicated message still gets reported in full rather than dropped.
        problems.append(
            "schema check failed: "
            + "; ".join(f"{r.check} on {r.column}: {r.failure_case!r}" for r in cases.head(_SHOWN).itertuples())
        )
    return problems


def _examples(group: pd.DataFrame) -> str:
    shown = ", ".join(f"row {r.index}: {r.failure_case!r}" for r in group.head(_SHOWN).itertuples())
    return f"{len(group)} value(s): {shown}{_more(len(group))}"


def _more(n: int) -> str:
    return f" and {n - _SHOWN} more" if n > _SHOWN else ""
