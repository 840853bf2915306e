"""The feature table: no look-ahead, incremental equals full, targets, CS-Z, contracts and failure safety."""

from __future__ import annotations

import re
import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import atft.features.build as build_module
from atft.config import (
    CSZConfig,
    FeaturesConfig,
    PipelineConfig,
    SyntheticSourceConfig,
    UniverseConfig,
    WarehouseConfig,
    load_config,
)
from atft.features.build import build_features, feature_manifest
from atft.ingest import ingest
from atft.warehouse import Warehouse
from schemas.contract import check_contract
from schemas.manifest import FeatureManifest, ManifestError

START, END = date(2022, 1, 4), date(2023, 6, 30)
CUT = date(2022, 11, 15)  # a Tuesday and an XTKS session


def make_config(tmp_path: Path, name: str = "w", **features) -> PipelineConfig:
    # Splits, halts and delistings are frequent here so that every path of the panel is exercised.
    source = SyntheticSourceConfig(
        kind="synthetic", seed=11, n_stocks=45, start=START, end=END, split_probability=0.5,
        halt_probability=0.01, delisting_fraction=0.15, late_listing_fraction=0.15,
    )  # fmt: skip
    return PipelineConfig(
        name="features-test",
        source=source,
        universe=UniverseConfig(code_pattern=r"^\d{4}$"),
        warehouse=WarehouseConfig(path=tmp_path / f"{name}.duckdb"),
        features=FeaturesConfig(**{"cs_z": CSZConfig(min_stocks=10), "manifest_dir": tmp_path / name, **features}),
    )


def table(config: PipelineConfig, name: str, until: date | None = None) -> pd.DataFrame:
    with Warehouse(config.warehouse.path, read_only=True) as wh:
        where = "" if until is None else f"WHERE Date <= DATE '{until}'"
        return wh.con.sql(f"SELECT * FROM {name} {where} ORDER BY Code, Date").df()


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The whole market ingested and built once, shared by the read-only tests."""
    tmp = tmp_path_factory.mktemp("full")
    config = make_config(tmp)
    ingest(config, on_progress=lambda _: None)
    return config, build_features(config, on_progress=lambda _: None)


def inputs(manifest: FeatureManifest) -> list[str]:
    return ["Code", "Date", *manifest.feature_names]


def assert_same_values(a: pd.DataFrame, b: pd.DataFrame, columns: list[str]) -> None:
    assert len(a) == len(b)
    for column in columns:
        left, right = a[column].to_numpy(), b[column].to_numpy()
        if left.dtype.kind == "f":
            assert np.array_equal(left, right, equal_nan=True), column
        else:
            assert (left == right).all(), column


# -- look-ahead and incremental -------------------------------------------------------------------------


def test_no_look_ahead_truncating_the_raw_data_leaves_earlier_feature_rows_identical(full, tmp_path):
    config, built = full
    truncated = make_config(tmp_path, "truncated")
    ingest(truncated, end=CUT, on_progress=lambda _: None)
    cut = build_features(truncated, on_progress=lambda _: None)
    assert cut.table == built.table
    manifest = FeatureManifest.read(built.manifest_path)
    before = table(config, built.table, until=CUT)
    after = table(truncated, cut.table)
    assert after["Date"].max() == pd.Timestamp(CUT)
    assert_same_values(before, after, inputs(manifest))
    # Targets are labels: they do look ahead, and near the cut they must differ (they are masked there).
    last = after[after["Date"] == pd.Timestamp(CUT)]
    assert not last["target_1d_valid"].any() and last["target_1d"].isna().all()


def test_incremental_rebuilds_equal_a_full_build_exactly(full, tmp_path):
    config, built = full
    stepped = make_config(tmp_path, "stepped")
    modes = []
    for end in (date(2022, 8, 31), CUT, date(2023, 2, 1), END):
        ingest(stepped, end=end, on_progress=lambda _: None)
        modes.append(build_features(stepped, on_progress=lambda _: None).mode)
    assert modes == ["full", "incremental", "incremental", "incremental"]
    with Warehouse(stepped.warehouse.path, read_only=True) as a, Warehouse(config.warehouse.path, read_only=True) as b:
        assert a.row_count(built.table) == b.row_count(built.table)
        assert a.fingerprint(built.table) == b.fingerprint(built.table)


def test_an_incremental_build_rewrites_only_the_trailing_days(full, tmp_path):
    stepped = make_config(tmp_path, "trailing")
    ingest(stepped, end=CUT, on_progress=lambda _: None)
    build_features(stepped, on_progress=lambda _: None)
    ingest(stepped, end=date(2022, 11, 22), on_progress=lambda _: None)
    again = build_features(stepped, on_progress=lambda _: None)
    assert again.mode == "incremental"
    # 5 new sessions plus the 20 (the longest horizon) whose targets gained data; a few more after halts.
    assert date(2022, 10, 1) < again.since <= date(2022, 10, 18)
    assert again.rows_written < 45 * 40


def test_lagged_targets_enter_later_and_build_incrementally_exactly(full, tmp_path):
    # Lag 2: the incremental rebuild already redoes one session more than it must, which would hide a lag of 1.
    config, built = full
    lagged = make_config(tmp_path, "lagged", execution_lag=2)
    shutil.copy(config.warehouse.path, lagged.warehouse.path)  # the same raw data, without a second ingest
    whole = build_features(lagged, on_progress=lambda _: None)
    assert whole.mode == "full" and whole.table != built.table
    # Day t's lag-2 target is day t+2's close-to-close one, for a stock trading on both days.
    for h in (1, 5, 20):
        lag0 = table(config, built.table).pivot(index="Date", columns="Code", values=f"target_{h}d")
        lag2 = table(lagged, whole.table).pivot(index="Date", columns="Code", values=f"target_{h}d")
        later = lag0.shift(-2)
        both = lag2.notna() & later.notna()
        assert both.to_numpy().sum() > 5_000
        assert np.array_equal(lag2[both].to_numpy(), later[both].to_numpy(), equal_nan=True)
    # The incremental rebuild reaches back lag + 20 sessions: short of it, some 20-day labels would stay NaN.
    stepped = make_config(tmp_path, "lagged_stepped", execution_lag=2)
    modes = []
    for end in (CUT, END):
        ingest(stepped, end=end, on_progress=lambda _: None)
        modes.append(build_features(stepped, on_progress=lambda _: None).mode)
    assert modes == ["full", "incremental"]
    with Warehouse(stepped.warehouse.path, read_only=True) as a, Warehouse(lagged.warehouse.path, read_only=True) as b:
        assert a.fingerprint(whole.table) == b.fingerprint(whole.table)


def test_nothing_new_means_up_to_date(full):
    config, built = full
    again = build_features(config, on_progress=lambda _: None)
    assert again.mode == "up_to_date" and again.rows_written == 0
    assert again.manifest_sha256 == built.manifest_sha256


def test_a_lost_manifest_file_is_rewritten_from_the_warehouse_record(full):
    config, built = full
    path = Path(built.manifest_path)
    original = path.read_bytes()
    path.unlink()
    again = build_features(config, on_progress=lambda _: None)
    assert again.mode == "up_to_date" and again.manifest_path == str(path)
    assert path.read_bytes() == original
    assert FeatureManifest.read(path).sha256 == built.manifest_sha256


def test_a_manifest_file_that_disagrees_with_the_record_is_refused_with_the_way_out(full):
    config, built = full
    path = Path(built.manifest_path)
    original = path.read_text()
    try:
        path.write_text(original.replace('"lookback": 20', '"lookback": 21', 1))
        with pytest.raises(ManifestError, match=rf"delete {re.escape(str(path))} and run build-features again"):
            build_features(config, on_progress=lambda _: None)
        assert "21" in path.read_text()  # never overwritten: something edited it
    finally:
        path.write_text(original)


def test_a_corrected_old_raw_row_forces_a_full_rebuild(tmp_path):
    config = make_config(tmp_path, "corrected")
    ingest(config, end=CUT, on_progress=lambda _: None)
    first = build_features(config, on_progress=lambda _: None)
    with Warehouse(config.warehouse.path) as wh:
        wh.con.execute("UPDATE raw_quotes SET Close = Close * 1.01 WHERE Date = DATE '2022-03-01'")
    ingest(config, end=date(2022, 12, 1), on_progress=lambda _: None)
    again = build_features(config, on_progress=lambda _: None)
    assert again.mode == "full" and again.since == first.since


def test_the_feature_builder_never_reads_the_oracle(tmp_path):
    config = make_config(tmp_path, "no-oracle")
    ingest(config, end=CUT, on_progress=lambda _: None)
    with Warehouse(config.warehouse.path) as wh:
        wh.con.execute("DROP TABLE synthetic_oracle")
        wh.con.execute("CREATE VIEW synthetic_oracle AS SELECT error('the feature builder read the oracle') AS Code")
        with pytest.raises(Exception, match="read the oracle"):
            wh.con.execute("SELECT * FROM synthetic_oracle").fetchall()
    built = build_features(config, on_progress=lambda _: None)
    assert built.rows_total > 0


def test_a_failed_build_leaves_the_previous_table_and_record(tmp_path, monkeypatch):
    config = make_config(tmp_path, "failing")
    ingest(config, end=CUT, on_progress=lambda _: None)
    built = build_features(config, on_progress=lambda _: None)
    with Warehouse(config.warehouse.path, read_only=True) as wh:
        before = (wh.fingerprint(built.table), wh.con.execute("SELECT * FROM feature_builds").fetchall())
    ingest(config, end=date(2022, 12, 20), on_progress=lambda _: None)

    def crash(*args, **kwargs):
        raise OSError("disk full while recording the build")

    monkeypatch.setattr(build_module, "record_build", crash)
    with pytest.raises(OSError, match="disk full"):
        build_features(config, on_progress=lambda _: None)
    with Warehouse(config.warehouse.path, read_only=True) as wh:
        after = (wh.fingerprint(built.table), wh.con.execute("SELECT * FROM feature_builds").fetchall())
        tables = {t for (t,) in wh.con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert after == before
    assert not any(t.endswith("__staging") for t in tables)


# -- contents ---------------------------------------------------------------------------------------------


def test_the_table_matches_its_manifest_exactly(full):
    config, built = full
    manifest = FeatureManifest.read(built.manifest_path)
    with Warehouse(config.warehouse.path, read_only=True) as wh:
        schema = wh.con.sql(f"SELECT * FROM {built.table} LIMIT 0").to_arrow_table().schema
        stored = wh.con.execute(
            "SELECT manifest_sha256, manifest FROM feature_builds WHERE table_name = ?", [built.table]
        ).fetchall()
    assert check_contract(schema, manifest).empty
    assert stored[0][0] == manifest.sha256 == built.manifest_sha256
    assert FeatureManifest.from_json(stored[0][1]).sha256 == manifest.sha256
    assert built.table == manifest.table_name and built.width == manifest.width
    groups = {c.group for c in manifest.features}
    assert groups == {"price", "volume", "volatility", "sector", "market", "cs_z"}
    assert 60 <= sum(c.group != "cs_z" for c in manifest.features) <= 120


def test_one_row_per_quote_and_no_infinities(full):
    config, built = full
    frame = table(config, built.table)
    with Warehouse(config.warehouse.path, read_only=True) as wh:
        assert len(frame) == wh.row_count("raw_quotes")
    assert not frame.duplicated(["Code", "Date"]).any()
    numeric = frame.select_dtypes("number")
    assert np.isfinite(numeric.to_numpy(dtype=float)[~numeric.isna().to_numpy()]).all()


def test_targets_are_forward_returns_on_adjusted_prices(full):
    config, built = full
    with Warehouse(config.warehouse.path, read_only=True) as wh:
        raw = wh.con.sql("SELECT Code, Date, Close, AdjustmentFactor FROM raw_quotes ORDER BY Code, Date").df()
        sessions = [d for (d,) in wh.con.execute("SELECT DISTINCT Date FROM raw_quotes ORDER BY Date").fetchall()]
    features = table(config, built.table).astype({"Date": "datetime64[ns]"}).set_index(["Code", "Date"])
    # An independent computation: forward-adjusted closes, pivoted onto all sessions, halts carried forward.
    raw["adjusted"] = raw["Close"] / raw.groupby("Code")["AdjustmentFactor"].cumprod()
    close = raw.pivot(index="Date", columns="Code", values="adjusted").reindex(pd.DatetimeIndex(sessions))
    last_row = raw.groupby("Code")["Date"].max()
    carried = close.ffill()
    for h in (1, 5, 20):
        expected = carried.shift(-h) / carried - 1
        alive_ahead = pd.DataFrame(
            {code: pd.Series(close.index, index=close.index).shift(-h) <= last_row[code] for code in close.columns}
        )
        expected = expected.where(alive_ahead & close.notna()).stack().rename("expected")
        expected.index = expected.index.set_names(["Date", "Code"]).reorder_levels(["Code", "Date"])
        got = features[f"target_{h}d"].astype(float)
        joined = pd.concat([got, expected], axis=1, join="inner")
        assert len(joined) > 10_000
        assert np.allclose(joined[f"target_{h}d"], joined["expected"], rtol=1e-5, atol=1e-6, equal_nan=True)
        assert (features[f"target_{h}d_valid"] == features[f"target_{h}d"].notna()).all()


def test_splits_do_not_show_up_as_returns(full):
    config, built = full
    with Warehouse(config.warehouse.path, read_only=True) as wh:
        splits = wh.con.sql("SELECT Code, Date FROM raw_quotes WHERE AdjustmentFactor <> 1").df()
    assert len(splits) >= 5
    frame = table(config, built.table).merge(splits, on=["Code", "Date"])
    assert frame["ret_1d"].abs().max() < 0.3  # a 1:2 split unadjusted would read as -50%


def test_cs_z_columns_are_standardised_per_day(full):
    config, built = full
    manifest = FeatureManifest.read(built.manifest_path)
    frame = table(config, built.table)
    csz = [c.name for c in manifest.features if c.group == "cs_z"]
    assert len(csz) >= 60
    by_day = frame.groupby("Date")[csz]
    counts, means, stds, largest = (
        by_day.count(),
        by_day.mean(),
        by_day.std(),
        frame[csz].abs().groupby(frame["Date"]).max(),
    )
    # Exact where nothing was clipped; with 45 stocks one fat-tailed outlier clipped at 5 visibly lowers the std.
    exact = (counts >= 10) & (largest < 5.0 - 1e-6)
    assert exact.to_numpy().mean() > 0.5
    assert ((means.abs() < 1e-5) | ~exact).all().all()
    assert (((stds - 1).abs() < 1e-5) | ~exact).all().all()
    assert frame[csz].abs().max().max() <= 5.0 + 1e-6
    # Market features are the same for every stock on a day: they have no CS-Z column.
    assert not any(name.startswith("mkt_") for name in csz)


def test_manifest_is_deterministic_and_tracks_the_feature_set(full, tmp_path):
    _, built = full
    settings = make_config(tmp_path).features
    assert feature_manifest(settings, sectors=True).sha256 == built.manifest_sha256
    assert feature_manifest(settings, sectors=True).to_json() == feature_manifest(settings, sectors=True).to_json()
    without_sectors = feature_manifest(settings, sectors=False)
    assert without_sectors.sha256 != built.manifest_sha256
    assert not any(c.group == "sector" for c in without_sectors.features)
    clipped = make_config(tmp_path, cs_z=CSZConfig(min_stocks=10, clip=3.0)).features
    assert feature_manifest(clipped, sectors=True).sha256 != built.manifest_sha256
    lagged = feature_manifest(make_config(tmp_path, execution_lag=1).features, sectors=True)
    assert lagged.execution_lag == 1 and lagged.sha256 != built.manifest_sha256 and lagged.table_name != built.table
    assert lagged.features == FeatureManifest.read(built.manifest_path).features


def test_real_sp500_prices_build_validate_and_produce_a_manifest(tmp_path):
    repo = Path(__file__).resolve().parents[2]
    config = load_config(
        repo / "deployments" / "sp500.yaml",
        {"warehouse.path": str(tmp_path / "sp500.duckdb"), "features.manifest_dir": str(tmp_path / "manifests")},
    )
    config = config.model_copy(update={"source": config.source.model_copy(update={"path": repo / config.source.path})})
    ingest(config, on_progress=lambda _: None)
    built = build_features(config, on_progress=lambda _: None)
    assert built.mode == "full" and built.rows_total == 619_018
    assert built.validation[0]["detail"].startswith("passed")
    manifest = FeatureManifest.read(built.manifest_path)
    # Sectors come from the listings file (448 of 505 stocks labelled): the sector group is built.
    assert "sector" in built.groups and manifest.width == built.width == 152
    assert manifest.sha256 == feature_manifest(config.features, sectors=True).sha256
    # Returns against the file itself, computed independently with pandas.
    raw = pd.read_parquet(repo / config.source.path, columns=["date", "close", "Name"])
    apple = raw[raw["Name"] == "AAPL"].assign(Date=lambda f: pd.to_datetime(f["date"])).set_index("Date")["close"]
    expected = (apple / apple.shift(5) - 1).dropna()
    frame = table(config, built.table)
    got = frame[frame["Code"] == "AAPL"].astype({"Date": "datetime64[ns]"}).set_index("Date")["ret_5d"]
    assert len(expected) > 1200
    assert np.allclose(got.loc[expected.index].astype(float), expected, rtol=1e-5)
