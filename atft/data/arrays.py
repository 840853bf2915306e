"""Dense date-major arrays from a feature table, in manifest order, for windows and day batches.

The table's columns are checked against the manifest (case-sensitive, on the Arrow schema) before a
single row is read: a drifted table never reaches a model. Large universes can keep the feature cube
in a memory-mapped file (optionally float16) so that it never sits in RAM twice; workers reopen it by
path instead of pickling its contents.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from atft.features.panel import sector_panel
from atft.features.store import feature_codes, feature_dates, feature_rows, feature_schema
from schemas.contract import check_contract
from schemas.manifest import FeatureManifest

GRAPH_RETURN = "ret_1d"  # the input the day graph correlates; every manifest of this platform has it


@dataclass
class StoredCube:
    """A ``[days, stocks, features]`` array, in memory or in a .npy file opened lazily (pickle-safe by path)."""

    shape: tuple[int, int, int]
    dtype: str
    path: Path | None = None
    _array: np.ndarray | None = field(default=None, repr=False)

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            # Copy-on-write: writable views for torch.from_numpy, while the file itself is never written.
            self._array = np.load(self.path, mmap_mode="c")
        return self._array

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        if self.path is not None:
            state["_array"] = None  # a worker reopens the file instead of receiving a copy of it
        return state


@dataclass
class FeatureArrays:
    """Everything a model needs from one feature table over a date range; picklable, no connections held."""

    manifest: FeatureManifest
    horizons: list[int]
    dates: pd.DatetimeIndex  # [D] every day with rows in the table
    codes: np.ndarray  # [S] sorted
    cube: StoredCube  # [D, S, F] inputs in manifest order; 0 where missing (models see 0 for a missing input)
    present: np.ndarray  # [D, S] bool: the stock has a row that day
    targets: np.ndarray  # [D, S, H] float32 CS-Z forward returns: what models learn
    target_valid: np.ndarray  # [D, S, H] bool
    forward_returns: np.ndarray  # [D, S, H] float32 raw forward returns: what a portfolio earns
    returns: np.ndarray  # [D, S] float32 daily returns for the day graph
    sector: np.ndarray  # [D, S] int16, -1 unknown

    @property
    def x(self) -> np.ndarray:
        return self.cube.array


def load_arrays(
    con: duckdb.DuckDBPyConnection,
    manifest: FeatureManifest,
    start: date,
    end: date,
    *,
    history: int = 0,
    cache_dir: Path | None = None,
    float16: bool = False,
) -> FeatureArrays:
    """Rows of ``manifest``'s table for days in [start, end], plus ``history`` earlier days for lookbacks."""
    check_contract(feature_schema(con, manifest.table_name), manifest)
    table = manifest.table_name
    days = feature_dates(con, table, through=end)
    first = next((i for i, d in enumerate(days) if d >= start), len(days))
    days = days[max(0, first - history) :]
    if not days or days[-1] < start:
        raise ValueError(f"{table} has no rows between {start} and {end}")
    dates = pd.DatetimeIndex(days)
    codes = np.array(feature_codes(con, table, days[0], end), dtype=object)
    rows = feature_rows(con, table, days[0], end)
    d = dates.get_indexer(pd.DatetimeIndex(rows["Date"].to_numpy(zero_copy_only=False)))
    s = np.searchsorted(codes, rows["Code"].to_numpy(zero_copy_only=False))
    shape = (len(dates), len(codes))

    dtype = "float16" if float16 else "float32"
    cube = StoredCube((*shape, manifest.width), dtype)
    if cache_dir is None:
        x = np.zeros(cube.shape, dtype=dtype)
    else:
        cache_dir.mkdir(parents=True, exist_ok=True)
        cube.path = cache_dir / f"{table}_{days[0]}_{end}_{dtype}.npy"
        x = np.lib.format.open_memmap(cube.path, mode="w+", dtype=dtype, shape=cube.shape)  # zero-filled
    for j, name in enumerate(manifest.feature_names):
        # Missing is 0 once, here, instead of a NaN scrub of every window of every batch.
        x[d, s, j] = np.nan_to_num(rows[name].to_numpy(zero_copy_only=False), nan=0.0)
    if cache_dir is None:
        cube._array = x
    else:
        x.flush()
        del x

    present = np.zeros(shape, dtype=bool)
    present[d, s] = True
    horizons = _horizons(manifest)
    targets = np.full((*shape, len(horizons)), np.nan, dtype=np.float32)
    forward = np.full_like(targets, np.nan)
    valid = np.zeros((*shape, len(horizons)), dtype=bool)
    for k, h in enumerate(horizons):
        targets[d, s, k] = rows[f"target_{h}d_cs_z"].to_numpy(zero_copy_only=False)
        forward[d, s, k] = rows[f"target_{h}d"].to_numpy(zero_copy_only=False)
        valid[d, s, k] = rows[f"target_{h}d_valid"].to_numpy(zero_copy_only=False)
    valid &= np.isfinite(targets)
    returns = np.full(shape, np.nan, dtype=np.float32)
    returns[d, s] = rows[GRAPH_RETURN].to_numpy(zero_copy_only=False)
    return FeatureArrays(
        manifest=manifest,
        horizons=horizons,
        dates=dates,
        codes=codes,
        cube=cube,
        present=present,
        targets=targets,
        target_valid=valid,
        forward_returns=forward,
        returns=returns,
        sector=sector_panel(con, codes, dates).T.copy(),
    )


def _horizons(manifest: FeatureManifest) -> list[int]:
    """Horizons of the manifest's return targets, e.g. target_5d -> 5, in manifest order."""
    return [int(m[1]) for n in manifest.target_names if (m := re.fullmatch(r"target_(\d+)d", n))]
