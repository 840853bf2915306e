"""Data health: day-over-day jumps in a stock's prices and volume.

A move beyond a bound, on a day without an ``AdjustmentFactor`` (which would explain it), is a jump. A jump
that the next day takes back, to within the bound of where it started, is the shape of a bad tick: the
row is quarantined. A one-way jump is only flagged, since real stocks do move 50% in a day.

Moves are measured in log terms, so a bound means the same up and down: 0.4 is a rise to 1.4x or a fall
to 1/1.4 of the previous value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from schemas.columns import CANONICAL_QUOTE_COLUMNS
from schemas.raw_quotes import REJECTED_COLUMNS

PRICE_JUMP_COLUMNS: tuple[str, ...] = ("Open", "Close")  # High and Low spike for real, e.g. in a flash crash
NEIGHBOURHOOD_COLUMNS: tuple[str, ...] = (*CANONICAL_QUOTE_COLUMNS, "staged", "origin", "source_row")


@dataclass(frozen=True)
class HealthCheck:
    """What the jump rule found among the staged rows: quarantined bad ticks and flagged one-way jumps."""

    bad_ticks: pd.DataFrame  # REJECTED_COLUMNS plus ``origin``
    jumps: list[dict[str, object]]  # Code, Date, column, before, value, after, move


def check_jumps(rows: pd.DataFrame, price_bound: float | None, volume_bound: float | None) -> HealthCheck:
    """Judge the staged rows of ``rows`` (``NEIGHBOURHOOD_COLUMNS``: staged rows and their stocks' rows on
    either side, already in the warehouse) against the jump bounds; None turns a bound off."""
    rows = rows.sort_values(["Code", "Date"], ignore_index=True)
    same_stock_before = rows["Code"].eq(rows["Code"].shift(1))
    same_stock_after = rows["Code"].eq(rows["Code"].shift(-1))
    plain = rows["AdjustmentFactor"].eq(1.0)
    plain_after = plain.shift(-1, fill_value=False)
    bounds = {c: price_bound for c in PRICE_JUMP_COLUMNS} | {"Volume": volume_bound}
    tick = pd.Series(False, index=rows.index)
    reasons = pd.Series("", index=rows.index)
    jumps, one_way = [], []
    for column, bound in bounds.items():
        if bound is None:
            continue
        limit = np.log1p(bound)
        level = np.log(rows[column].where(rows[column] > 0).astype(float))
        move = (level - level.shift(1)).where(same_stock_before & plain)
        back = (level.shift(-1) - level).where(same_stock_after & plain_after)
        jump = (move.abs() > limit) & rows["staged"]
        reverted = jump & (back.abs() > limit) & (np.sign(back) != np.sign(move)) & ((move + back).abs() < limit)
        before, after = rows[column].shift(1), rows[column].shift(-1)
        for i in np.flatnonzero(reverted):
            reasons[i] += (
                f"{'; ' if reasons[i] else ''}{column} {_g(before[i])} -> {_g(rows[column][i])} -> {_g(after[i])}: "
                f"a {np.exp(abs(move[i])):.3g}x move taken back the next day, beyond {column} bound {bound:g}"
            )
        tick |= reverted
        one_way.append((column, jump & ~reverted, move, before, after))
    # A bad tick's own other columns, and the move back from it the next day, are not news of their own.
    explained = tick | (tick.shift(1, fill_value=False) & same_stock_before)
    for column, flagged, move, before, after in one_way:
        for i in np.flatnonzero(flagged & ~explained):
            jumps.append({"Code": rows["Code"][i], "Date": pd.Timestamp(rows["Date"][i]).date(), "column": column,
                          "before": float(before[i]), "value": float(rows[column][i]),
                          "after": None if pd.isna(after[i]) else float(after[i]),
                          "move": f"{np.exp(move[i]):.3g}x"})  # fmt: skip
    ticks = rows[tick]
    bad = pd.DataFrame(
        {
            "source_row": ticks["source_row"],
            "Code": ticks["Code"],
            "Date": pd.to_datetime(ticks["Date"]),
            "rule": "bad_tick",
            "reason": "suspected bad tick: " + reasons[tick],
            "record": [json.dumps(r, default=str) for r in ticks[list(CANONICAL_QUOTE_COLUMNS)].to_dict("records")],
            "origin": ticks["origin"],
        },
        columns=[*REJECTED_COLUMNS, "origin"],
    )
    return HealthCheck(bad.reset_index(drop=True), sorted(jumps, key=lambda j: (j["Date"], j["Code"], j["column"])))


def _g(value: object) -> str:
    return "missing" if pd.isna(value) else f"{float(value):g}"
