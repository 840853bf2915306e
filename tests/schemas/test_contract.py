from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from schemas.contract import ContractDiff, ContractViolation, check_contract, diff_contract
from schemas.manifest import CSZSettings, FeatureColumn, FeatureManifest

CSZ = CSZSettings(clip=5.0, min_stocks=20, min_std=1e-8, ddof=1, fill="none")
PRICE = ("ret_1d", "ret_5d", "ret_20d")
TARGETS = (FeatureColumn("target_1d", "float32", "target", 0), FeatureColumn("target_1d_valid", "bool", "target", 0))


def manifest(price: tuple[str, ...] = PRICE, cs_z: int = 3) -> FeatureManifest:
    features = [FeatureColumn(n, "float32", "price", 1) for n in price]
    features += [FeatureColumn(f"{n}_cs_z", "float32", "cs_z", 1) for n in price[:cs_z]]
    return FeatureManifest(tuple(features), TARGETS, CSZ, "v1")


def pairs(m: FeatureManifest, scope: str = "table") -> list[tuple[str, str]]:
    """The (name, dtype) pairs of data that matches ``m`` exactly."""
    columns = m.features + (m.targets if scope == "table" else ())
    return [("Code", "string"), ("Date", "date")] + [(c.name, c.dtype) for c in columns]


def arrow_schema(columns: list[tuple[str, str]]) -> pa.Schema:
    types = {"string": pa.string(), "date": pa.date32(), "float32": pa.float32(), "float64": pa.float64()}
    types["bool"] = pa.bool_()
    return pa.schema([(name, types[dtype]) for name, dtype in columns])


def pandas_frame(columns: list[tuple[str, str]]) -> pd.DataFrame:
    types = {"string": object, "date": "datetime64[ns]", "float32": "float32", "float64": "float64", "bool": bool}
    return pd.DataFrame({name: pd.Series(dtype=types[dtype]) for name, dtype in columns})


def rename(columns: list[tuple[str, str]], old: str, new: str) -> list[tuple[str, str]]:
    return [(new if name == old else name, dtype) for name, dtype in columns]


def violation(actual: object, m: FeatureManifest, **kwargs: object) -> ContractViolation:
    with pytest.raises(ContractViolation) as info:
        check_contract(actual, m, **kwargs)
    assert str(info.value) == info.value.diff.describe()
    return info.value


@pytest.mark.parametrize("convert", [list, arrow_schema, pandas_frame, lambda c: arrow_schema(c).empty_table()])
def test_exact_match_is_an_empty_diff(convert):
    m = manifest()
    diff = check_contract(convert(pairs(m)), m)
    assert diff.empty
    assert (diff.missing, diff.extra, diff.case_only, diff.moved, diff.dtype_changed) == ((), (), (), (), ())
    assert (diff.expected_width, diff.found_width) == (6, 6)
    assert diff.describe().startswith("feature contract satisfied")


@pytest.mark.parametrize("convert", [list, arrow_schema, pandas_frame])
def test_case_only_drift_is_named_as_such(convert):
    m = manifest()
    error = violation(convert(rename(pairs(m), "Code", "code")), m)
    assert error.diff.case_only == (("Code", "code"),)
    assert (error.diff.missing, error.diff.extra) == ((), ())
    assert "  - case-only: 'code' found where 'Code' was expected (names are case-sensitive)" in str(error)
    assert "spell the columns exactly as the manifest does" in str(error)


def test_dropped_cs_z_block_names_the_group_and_count():
    m = manifest(price=tuple(f"f_{i:03d}" for i in range(80)), cs_z=72)
    columns = [(n, d) for n, d in pairs(m) if not n.endswith("_cs_z")]
    error = violation(columns, m)
    assert len(error.diff.missing) == 72
    assert (
        "  - missing 72 columns: f_000_cs_z, f_001_cs_z, f_002_cs_z, f_003_cs_z, f_004_cs_z, f_005_cs_z, "
        "f_006_cs_z, f_007_cs_z, f_008_cs_z, f_009_cs_z, … (62 more) (the whole cs_z group)" in str(error)
    )
    assert "  - width: manifest says 152 inputs, data has 80" in str(error)
    assert "rebuild the features with feature code 'v1'" in str(error)


def test_partly_missing_group_is_not_called_whole():
    m = manifest()
    error = violation([(n, d) for n, d in pairs(m) if n not in ("ret_1d_cs_z", "ret_20d")], m)
    assert "  - missing 2 columns: ret_20d, ret_1d_cs_z\n" in str(error)


def test_extra_column():
    m = manifest()
    columns = pairs(m)
    error = violation([*columns[:5], ("f_083", "float32"), *columns[5:]], m)
    assert error.diff.extra == ("f_083",)
    assert "  - extra 1 column: f_083" in str(error)
    assert "  - width: manifest says 6 inputs, data has 7" in str(error)
    # The extra column shifts the ones after it, but nothing is out of order.
    assert error.diff.moved == ()


def test_reordered_columns_are_reported_once_each():
    m = manifest()
    columns = pairs(m)
    columns[2], columns[3] = columns[3], columns[2]  # ret_5d before ret_1d
    error = violation(columns, m)
    assert error.diff.moved == (("ret_5d", 3, 2),)
    assert (error.diff.missing, error.diff.extra, error.diff.found_width) == ((), (), 6)
    assert "  - order: 'ret_5d' at position 2, expected 3 (positions count from 0)" in str(error)
    assert "select the columns in manifest order" in str(error)


def test_one_column_moved_to_the_end_is_one_move():
    m = manifest()
    columns = pairs(m)
    columns.append(columns.pop(2))
    assert diff_contract(columns, m).moved == (("ret_1d", 2, 9),)


def test_dtype_change():
    m = manifest()
    error = violation(pandas_frame(pairs(m)).astype({"ret_1d": "float64"}), m)
    assert error.diff.dtype_changed == (("ret_1d", "float32", "float64"),)
    assert "  - dtype: 'ret_1d' is float64, expected float32" in str(error)


def test_82_inputs_against_437():
    m = manifest(price=tuple(f"f_{i:03d}" for i in range(82)), cs_z=0)
    columns = pairs(m, scope="inputs") + [(f"f_{i:03d}", "float32") for i in range(82, 437)]
    error = violation(columns, m, scope="inputs")
    assert (error.diff.expected_width, error.diff.found_width) == (82, 437)
    assert len(error.diff.extra) == 355
    assert "  - extra 355 columns: f_082, f_083," in str(error)
    assert "  - width: manifest says 82 inputs, data has 437" in str(error)
    assert "never resize a model's inputs to fit" in str(error)


def test_hash_mismatch():
    m = manifest()
    data_hash = "3f2a" + "0" * 60
    error = violation(pairs(m), m, actual_hash=data_hash)
    assert error.diff.hash_mismatch == (m.sha256, data_hash)
    assert f"  - manifest hash: expected {m.sha256[:12]}…, the data's manifest is 3f2a00000000…" in str(error)
    assert check_contract(pairs(m), m, actual_hash=m.sha256).empty


def test_duplicated_column():
    m = manifest()
    error = violation([*pairs(m), ("ret_1d", "float32")], m)
    assert error.diff.duplicated == ("ret_1d",)
    assert "  - duplicated: ret_1d found more than once" in str(error)


def test_inputs_scope_ignores_targets():
    m = manifest()
    assert check_contract(pairs(m, scope="inputs"), m, scope="inputs").empty
    assert check_contract(pairs(m), m, scope="inputs").empty
    # The stored table must have its targets.
    error = violation(pairs(m, scope="inputs"), m)
    assert error.diff.missing == ("target_1d", "target_1d_valid")
    assert "(the whole target group)" in str(error)


def test_pandas_dtypes_are_normalised():
    m = manifest(price=("ret_1d",), cs_z=0)
    frame = pd.DataFrame(
        {
            "Code": pd.Series(["1301"], dtype="string"),
            "Date": pd.to_datetime(["2024-01-04"]).as_unit("us"),
            "ret_1d": pd.Series([0.1], dtype="Float32"),
            "target_1d": np.array([0.2], dtype=np.float32),
            "target_1d_valid": pd.Series([True], dtype="boolean"),
        }
    )
    assert check_contract(frame, m).empty
    tz_aware = frame.assign(target_1d_valid=pd.to_datetime(["2024-01-04"]).tz_localize("UTC").as_unit("ns"))
    assert diff_contract(tz_aware, m).dtype_changed == (("target_1d_valid", "bool", "datetime64[ns, UTC]"),)


def test_arrow_dtypes_are_normalised():
    m = manifest(price=("ret_1d",), cs_z=0)
    schema = pa.schema(
        [
            ("Code", pa.large_string()),
            ("Date", pa.timestamp("us")),
            ("ret_1d", pa.float32()),
            ("target_1d", pa.float32()),
            ("target_1d_valid", pa.bool_()),
        ]
    )
    assert check_contract(schema, m).empty
    assert diff_contract(schema.set(2, pa.field("ret_1d", pa.float16())), m).dtype_changed == (
        ("ret_1d", "float32", "halffloat"),
    )


def test_unknown_scope_is_refused():
    with pytest.raises(ValueError, match="scope"):
        diff_contract([], manifest(), scope="model")  # type: ignore[arg-type]


def test_same_diff_whatever_the_container():
    m = manifest()
    columns = rename(pairs(m), "Code", "code")
    diffs = [diff_contract(convert(columns), m) for convert in (list, arrow_schema, pandas_frame)]
    assert diffs[0] == diffs[1] == diffs[2]
    assert isinstance(diffs[0], ContractDiff)
