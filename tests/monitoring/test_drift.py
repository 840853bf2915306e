"""Input drift: PSI on known distributions, and a planted shift found, named and ranked first on a real table."""

from __future__ import annotations

import math
import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from atft.config import DriftConfig, load_config
from atft.drift import input_drift, psi
from atft.features.build import build_features
from atft.features.store import feature_dates
from atft.ingest import ingest
from atft.warehouse import Warehouse
from schemas.manifest import FeatureManifest


def test_psi_is_zero_for_the_same_distribution_and_grows_with_a_shift() -> None:
    rng = np.random.default_rng(0)
    reference = rng.standard_normal(20_000)
    assert psi(reference, rng.standard_normal(5_000)) < 0.01
    shifted = psi(reference, rng.standard_normal(5_000) + 1.0)
    assert shifted > 0.25 > psi(reference, rng.standard_normal(5_000) + 0.2) > 0.01
    # By hand: two equal halves of the reference, one of them emptied in the current sample.
    ref = np.repeat([0.0, 1.0], 50)
    expected = (1e-4 - 0.5) * math.log(1e-4 / 0.5) + (1.0 - 0.5) * math.log(1.0 / 0.5)
    assert math.isclose(psi(ref, np.ones(10), bins=2), expected, rel_tol=1e-9)
    assert math.isnan(psi(reference, np.array([np.nan])))


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory, small_market) -> tuple[Path, FeatureManifest, list[date]]:
    config = load_config(small_market(tmp_path_factory.mktemp("drift"), "drift"))
    ingest(config)
    manifest = FeatureManifest.read(build_features(config).manifest_path)
    with Warehouse(config.warehouse.path, read_only=True) as wh:
        dates = feature_dates(wh.con, manifest.table_name)
    return config.warehouse.path, manifest, dates


def test_a_planted_shift_is_ranked_first_and_named(table, tmp_path: Path) -> None:
    path, manifest, dates = table
    day = dates[-5]
    raw = next(f.name for f in manifest.features if not f.name.endswith("_cs_z"))
    shifted = Path(shutil.copy(path, tmp_path / "shifted.duckdb"))
    with Warehouse(shifted) as wh:
        wh.con.execute(f'UPDATE {manifest.table_name} SET "{raw}" = "{raw}" * 5 + 3 WHERE Date = ?', [day])
        report = input_drift(wh.con, manifest, dates[60], dates[180], day, DriftConfig(reference_days=40))
    assert len(report.reference_days) == 40 and report.reference_days[0] == dates[60]
    top = report.inputs.iloc[0]
    assert top["input"] == raw and top["psi"] > 1.0 and top["ks"] > 0.5
    assert raw in report.describe(report.over(1.0))
    assert report.over(None).empty
    # Untouched, the same input on the same day reads as what it is on this market.
    with Warehouse(path, read_only=True) as wh:
        plain = input_drift(wh.con, manifest, dates[60], dates[180], day, DriftConfig(reference_days=40))
    assert plain.inputs.set_index("input").loc[raw, "psi"] < top["psi"] / 5
    assert set(plain.inputs["input"]) == {f.name for f in manifest.features}
    # A market-wide input has one value a day: no cross-section to compare, but its rank among the training days.
    market = plain.inputs[plain.inputs["psi"].isna()]
    assert not market.empty and market["percentile"].between(0, 1).all() and market["ks"].isna().all()
