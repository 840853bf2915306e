from __future__ import annotations

import dataclasses
from collections.abc import Callable

import duckdb
import numpy as np
import pandera.polars as pa
import polars as pl
import pytest
from pandera.errors import SchemaErrors

from schemas.feature_table import (
    FeatureValidationError,
    FeatureValidationReport,
    feature_table_schema,
    validate_feature_table,
)
from schemas.manifest import CSZSettings, FeatureColumn, FeatureManifest

DATES, STOCKS = 40, 60
MANIFEST = FeatureManifest(
    features=(
        FeatureColumn("ret_1d", "float32", "price", 2),
        FeatureColumn("vol_20d", "float32", "volatility", 20),
        FeatureColumn("ret_1d_cs_z", "float32", "cs_z", 2),
        FeatureColumn("vol_20d_cs_z", "float32", "cs_z", 20),
    ),
    targets=(FeatureColumn("target_1d", "float32", "target", 0), FeatureColumn("target_1d_valid", "bool", "target", 0)),
    cs_z=CSZSettings(clip=5.0, min_stocks=20, min_std=1e-8, ddof=1, fill="none"),
    code_version="test",
)
Raw = Callable[[np.random.Generator, tuple[int, int]], np.ndarray]


def cs_z(raw: np.ndarray, settings: CSZSettings) -> np.ndarray:
    """The manifest's CS-Z per date (row): z-score over the stocks with a value, then clip."""
    mean = np.nanmean(raw, axis=1, keepdims=True)
    std = np.nanstd(raw, axis=1, ddof=settings.ddof, keepdims=True)
    return np.clip((raw - mean) / std, -settings.clip, settings.clip)


def table(
    manifest: FeatureManifest = MANIFEST,
    *,
    dates: int = DATES,
    stocks: int = STOCKS,
    raw: Raw = lambda rng, shape: rng.standard_normal(shape),
    missing: float = 0.05,
    seed: int = 0,
) -> pl.DataFrame:
    """A valid feature table for ``manifest``: ``missing`` of each input missing, the last target day missing."""
    rng = np.random.default_rng(seed)
    shape = (dates, stocks)
    columns = {
        "Code": np.tile([str(1301 + i) for i in range(stocks)], dates),
        "Date": np.repeat(np.datetime64("2024-01-04") + np.arange(dates), stocks),
    }
    for c in manifest.features:
        values = raw(rng, shape)
        values[rng.random(shape) < missing] = np.nan
        columns[c.name] = cs_z(values, manifest.cs_z) if c.group == "cs_z" else values
    target = rng.standard_normal(shape)
    target[-1] = np.nan
    columns["target_1d"], columns["target_1d_valid"] = target, ~np.isnan(target)
    frame = pl.DataFrame({k: np.asarray(v).ravel() for k, v in columns.items()}, nan_to_null=True)
    return frame.with_columns(pl.col(c.name).cast(pl.Float32) for c in manifest.features + manifest.targets[:1])


def failures(data: object, manifest: FeatureManifest = MANIFEST, **tolerances: float) -> dict[tuple[str, str], str]:
    with pytest.raises(FeatureValidationError) as info:
        validate_feature_table(data, manifest, **tolerances)
    report = info.value.report
    assert not report.ok
    assert str(info.value) == report.describe()
    return {(p.check, p.column): p.detail for p in report.problems}


def where(column: str, condition: pl.Expr, value: object) -> pl.Expr:
    """``column`` with ``value`` where ``condition`` holds."""
    return pl.when(condition).then(value).otherwise(pl.col(column)).cast(pl.Float32).alias(column)


ROW = pl.int_range(pl.len())


def test_valid_table_passes():
    report = validate_feature_table(table(), MANIFEST)
    assert report.ok
    assert (report.checked_rows, report.checked_columns) == (DATES * STOCKS, 8)
    assert report.seconds >= 0
    assert report.rows() == [{"check": "all", "column": "", "detail": report.rows()[0]["detail"]}]
    assert report.rows()[0]["detail"].startswith("passed (2400 rows x 8 columns")


def test_pandas_and_duckdb_inputs():
    frame = table()
    assert validate_feature_table(frame.to_pandas(), MANIFEST).ok
    connection = duckdb.connect()
    connection.register("staged", frame.to_arrow())
    connection.execute("CREATE TABLE features_test AS SELECT * FROM staged")
    assert validate_feature_table((connection, "features_test"), MANIFEST).checked_rows == DATES * STOCKS


def test_infinite_value():
    found = failures(table().with_columns(where("vol_20d", ROW == 65, float("-inf"))))
    assert found == {("finite", "vol_20d"): "1 ±inf value(s), first at 1306 2024-01-05 = -inf"}


def test_infinite_target_fails_too():
    assert ("finite", "target_1d") in failures(table().with_columns(where("target_1d", ROW == 3, float("inf"))))


def test_too_many_missing_values():
    frame = table().with_columns(where("ret_1d", ROW % 5 < 2, None))
    found = failures(frame)
    assert list(found) == [("nan_fraction", "ret_1d")]
    assert found["nan_fraction", "ret_1d"] == "NaN fraction 0.42 > 0.25"  # 40% dropped on top of 5% missing
    assert validate_feature_table(frame, MANIFEST, max_nan_fraction=0.5).ok


def test_missing_values_during_an_inputs_warm_up_are_not_counted_with_a_history():
    # vol_20d is missing for each stock's first 19 rows (half of this 40-day table), as a 20-day window is.
    history = table().select("Code", "Date").with_columns(history=pl.col("Date").rank("dense").cast(pl.Int32))
    frame = table(missing=0.0).with_columns(where("vol_20d", pl.col("Date") < pl.date(2024, 1, 23), None))
    found = failures(frame)
    assert found[("nan_fraction", "vol_20d")] == "NaN fraction 0.47 > 0.25"
    assert validate_feature_table(frame, MANIFEST, history=history).ok
    # Past its warm-up a missing value counts again, and the report says so.
    late = frame.with_columns(where("vol_20d", pl.col("Date") > pl.date(2024, 1, 30), None))
    found = failures(late, history=history)
    assert found[("nan_fraction", "vol_20d")] == "NaN fraction 0.62 > 0.25 past the 20-row warm-up"  # 13 of 21 days


def test_nan_and_null_both_count_as_missing():
    frame = table().with_columns(where("ret_1d", ROW % 2 == 0, float("nan")))
    assert ("nan_fraction", "ret_1d") in failures(frame)


def test_targets_may_be_missing():
    frame = table().with_columns(where("target_1d", pl.col("Date") > pl.date(2024, 1, 20), None))
    assert validate_feature_table(frame, MANIFEST).ok


def test_duplicate_keys():
    frame = table()
    found = failures(pl.concat([frame, frame.slice(61, 2)]))
    assert found == {("multiple_fields_uniqueness", ""): "4 rows share 2 (Code, Date) key(s), first 1302 2024-01-05"}


def test_csz_mean_off_on_one_date():
    frame = table().with_columns(
        where("ret_1d_cs_z", pl.col("Date") == pl.date(2024, 1, 9), pl.col("ret_1d_cs_z") + 0.3)
    )
    found = failures(frame)
    assert list(found) == [("cs_z_moments", "ret_1d_cs_z")]
    assert found["cs_z_moments", "ret_1d_cs_z"].startswith("1 date(s) with |mean| > 0.05, worst 2024-01-09 mean 0.300")


def test_csz_std_off():
    found = failures(table().with_columns(pl.col("vol_20d_cs_z") * 0.5))
    assert found["cs_z_moments", "vol_20d_cs_z"].startswith(
        f"{DATES} date(s) with std outside [0.9, 1.1], worst 2024-01-"
    )
    assert " std 0.500 " in found["cs_z_moments", "vol_20d_cs_z"]


def test_raw_values_where_z_scores_belong():
    frame = table().with_columns(pl.col("vol_20d").alias("vol_20d_cs_z") * 0.02)
    assert "std outside" in failures(frame)["cs_z_moments", "vol_20d_cs_z"]


def test_null_key():
    found = failures(table().with_columns(pl.when(ROW == 7).then(None).otherwise(pl.col("Code")).alias("Code")))
    assert found == {("not_nullable", "Code"): "1 failure case(s), e.g. [None]"}


def test_value_beyond_clip():
    found = failures(table().with_columns(where("ret_1d_cs_z", ROW == 10, 7.5)))
    detail = "1 value(s) beyond the manifest's clip ±5, largest 1311 2024-01-04 = 7.5"
    assert found["cs_z_range", "ret_1d_cs_z"] == detail


def test_days_with_too_few_stocks_are_not_judged():
    # 12 stocks < min_stocks = 20: no per-date moment is meaningful, whatever the values.
    frame = table(stocks=12).with_columns(pl.col("ret_1d_cs_z") * 0.3)
    assert validate_feature_table(frame, MANIFEST).ok


def t_dist(df: int) -> Raw:
    return lambda rng, shape: rng.standard_t(df, size=shape)


@pytest.mark.parametrize(("df", "clip"), [(3, 3.0), (4, 5.0)])
def test_correctly_clipped_fat_tailed_z_scores_pass(df, clip):
    manifest = dataclasses.replace(MANIFEST, cs_z=dataclasses.replace(MANIFEST.cs_z, clip=clip))
    frame = table(manifest, dates=250, stocks=100, raw=t_dist(df), seed=df)
    # The naive rule (|mean| <= 0.05 and |std - 1| <= 0.1 everywhere) would reject this correct table.
    z = pl.col("ret_1d_cs_z")
    moments = frame.group_by("Date").agg(m=z.mean(), s=z.std())
    assert moments.filter((pl.col("m").abs() > 0.05) | ((pl.col("s") - 1).abs() > 0.1)).height > 0
    assert validate_feature_table(frame, manifest).ok


def test_fill_zero_values_are_not_z_scores():
    zero_fill = dataclasses.replace(MANIFEST, cs_z=dataclasses.replace(MANIFEST.cs_z, fill="zero"))
    # 22% missing, filled with 0 after z-scoring: the std would be about sqrt(0.78) if the zeros were counted.
    frame = table(zero_fill, missing=0.22).with_columns(pl.col("ret_1d_cs_z", "vol_20d_cs_z").fill_null(0.0))
    assert validate_feature_table(frame, zero_fill).ok
    assert ("cs_z_moments", "ret_1d_cs_z") in failures(frame)


def test_filled_zeros_count_as_missing():
    zero_fill = dataclasses.replace(MANIFEST, cs_z=dataclasses.replace(MANIFEST.cs_z, fill="zero"))
    frame = table(zero_fill, missing=0.3).with_columns(pl.col("ret_1d_cs_z").fill_null(0.0))
    assert frame["ret_1d_cs_z"].null_count() == 0
    assert failures(frame, zero_fill)["nan_fraction", "ret_1d_cs_z"].startswith("NaN fraction 0.2")


def test_wrong_column_order():
    order = ["Code", "Date", "vol_20d", "ret_1d", "ret_1d_cs_z", "vol_20d_cs_z", "target_1d", "target_1d_valid"]
    frame = table().select(order)
    found = failures(frame)
    assert found == {("contract", ""): "order: 'vol_20d' at position 2, expected 3 (positions count from 0)"}


def test_wrong_column_case():
    found = failures(table().rename({"Code": "code"}))
    assert found == {("contract", ""): "case-only: 'code' found where 'Code' was expected (names are case-sensitive)"}


def test_wrong_dtype():
    found = failures(table().with_columns(pl.col("ret_1d").cast(pl.Float64)))
    assert found == {("contract", ""): "dtype: 'ret_1d' is float64, expected float32"}


def test_target_in_input_position():
    order = ["Code", "Date", "ret_1d", "target_1d", "ret_1d_cs_z", "vol_20d_cs_z", "vol_20d", "target_1d_valid"]
    frame = table().select(order)
    found = failures(frame)
    assert found["no_target_among_inputs", ""] == "target column(s) in input positions: target_1d"


def test_schema_alone_refuses_a_target_among_inputs():
    schema = feature_table_schema(MANIFEST)
    assert isinstance(schema, pa.DataFrameSchema)
    schema.validate(table())
    with pytest.raises(SchemaErrors) as info:
        schema.validate(table().rename({"vol_20d": "target_5d"}), lazy=True)
    assert "no_target_among_inputs" in info.value.failure_cases["check"].to_list()


def test_schema_alone_checks_data():
    with pytest.raises(SchemaErrors) as info:
        feature_table_schema(MANIFEST, csz_std_tolerance=0.2).validate(
            table().with_columns(pl.col("ret_1d_cs_z") * 1.3), lazy=True
        )
    assert "cs_z_moments" in str(info.value)


def test_report_rows_for_an_artifact():
    with pytest.raises(FeatureValidationError) as info:
        frame = table().with_columns(where("vol_20d", ROW == 0, float("inf")), pl.col("vol_20d_cs_z") * 2)
        validate_feature_table(frame, MANIFEST)
    rows = info.value.report.rows()
    assert [(r["check"], r["column"]) for r in rows] == [
        ("finite", "vol_20d"),
        ("cs_z_range", "vol_20d_cs_z"),
        ("cs_z_moments", "vol_20d_cs_z"),
    ]
    assert all(set(r) == {"check", "column", "detail"} for r in rows)
    assert "  - finite vol_20d: 1 ±inf value(s)" in str(info.value)


def test_tolerances_are_checked():
    with pytest.raises(ValueError, match="max_nan_fraction"):
        validate_feature_table(table(), MANIFEST, max_nan_fraction=1.5)
    assert isinstance(validate_feature_table(table(), MANIFEST, csz_mean_tolerance=0.01), FeatureValidationReport)
