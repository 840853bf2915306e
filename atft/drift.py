"""Input drift: how far a scored day's cross-section of each input has moved from the champion's training data.

For each input of the manifest, the day's values across stocks are compared with the values of a sample of the
champion's training days (pooled over stocks and days) by the population stability index over the reference's
deciles, and by the two-sample Kolmogorov-Smirnov statistic. Raw inputs show level shifts (a volatility regime);
CS-Z inputs are standardised each day, so on them drift means a change of shape (skew, ties, clipping).

PSI reads as the field reads it: below 0.1 stable, 0.1 to 0.25 a moderate shift, above 0.25 a large one.

A market-wide input (one value for every stock on a day, such as breadth) has no cross-section to compare: its PSI
and KS are left empty, and ``percentile`` says where the day's value falls among the reference days' values.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import duckdb
import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

from atft.config import DriftConfig
from atft.features.store import feature_dates, read_inputs
from schemas.manifest import FeatureManifest

BINS = 10
_FLOOR = 1e-4  # the share an empty bin counts as: PSI's log is undefined at zero


def psi(reference: np.ndarray, current: np.ndarray, bins: int = BINS) -> float:
    """Population stability index of ``current`` against ``reference`` over the reference's quantile bins; NaN when
    either side has no finite value. Ties in the reference merge bins rather than leave empty ones."""
    reference, current = reference[np.isfinite(reference)], current[np.isfinite(current)]
    if reference.size == 0 or current.size == 0:
        return float("nan")
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    expected = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=edges.size + 1)
    actual = np.bincount(np.searchsorted(edges, current, side="right"), minlength=edges.size + 1)
    e = np.maximum(expected / reference.size, _FLOOR)
    a = np.maximum(actual / current.size, _FLOOR)
    return float(((a - e) * np.log(a / e)).sum())


@dataclass(frozen=True)
class DriftReport:
    """Per input: PSI and KS of ``day`` against ``reference_days`` of the training window, most drifted first."""

    day: date
    reference_days: list[date]
    inputs: pd.DataFrame  # input, group, psi, ks, percentile, reference_mean, reference_std, day_mean, day_std

    def over(self, threshold: float | None) -> pd.DataFrame:
        """The inputs whose PSI is above ``threshold`` (none when it is None), most drifted first."""
        if threshold is None:
            return self.inputs.iloc[0:0]
        return self.inputs[self.inputs["psi"] > threshold]

    def describe(self, rows: pd.DataFrame) -> str:
        return ", ".join(f"{r.input} (PSI {r.psi:.2f}, KS {r.ks:.2f})" for r in rows.itertuples())


def input_drift(
    con: duckdb.DuckDBPyConnection,
    manifest: FeatureManifest,
    train_start: date,
    train_end: date,
    day: date,
    settings: DriftConfig,
) -> DriftReport:
    """Every input of ``manifest`` on ``day`` against ``settings.reference_days`` training days spread evenly over
    [train_start, train_end] of the same feature table."""
    training = feature_dates(con, manifest.table_name, through=train_end)
    training = [d for d in training if d >= train_start]
    if not training:
        raise ValueError(f"{manifest.table_name} has no days in the training window {train_start}..{train_end}")
    picks = np.unique(np.linspace(0, len(training) - 1, min(settings.reference_days, len(training))).round())
    reference_days = [training[int(i)] for i in picks]
    names = [f.name for f in manifest.features]
    reference = read_inputs(con, manifest.table_name, names, reference_days)
    current = read_inputs(con, manifest.table_name, names, [day])
    if current.empty:
        raise ValueError(f"{manifest.table_name} has no rows on {day}")
    rows = []
    for feature in manifest.features:
        ref = reference[feature.name].to_numpy(dtype=float)
        now = current[feature.name].to_numpy(dtype=float)
        finite_ref, finite_now = ref[np.isfinite(ref)], now[np.isfinite(now)]
        market_wide = np.unique(finite_now).size == 1
        compared = finite_ref.size and finite_now.size and not market_wide
        ks = ks_2samp(finite_ref, finite_now).statistic if compared else float("nan")
        percentile = float((finite_ref < finite_now[0]).mean()) if market_wide and finite_ref.size else float("nan")
        rows.append({
            "input": feature.name, "group": feature.group, "psi": psi(ref, now) if compared else float("nan"),
            "ks": float(ks), "percentile": percentile,
            "reference_mean": _stat(np.mean, finite_ref), "reference_std": _stat(np.std, finite_ref),
            "day_mean": _stat(np.mean, finite_now), "day_std": _stat(np.std, finite_now),
        })  # fmt: skip
    frame = pd.DataFrame(rows).sort_values("psi", ascending=False, na_position="last").reset_index(drop=True)
    return DriftReport(day=day, reference_days=reference_days, inputs=frame)


def _stat(function: object, values: np.ndarray) -> float:
    return float(function(values)) if values.size else float("nan")  # type: ignore[operator]
