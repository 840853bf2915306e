from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle

import pytest

from schemas.manifest import (
    CSZSettings,
    FeatureColumn,
    FeatureManifest,
    ManifestError,
    group_positions,
    input_positions,
)

CSZ = CSZSettings(clip=5.0, min_stocks=20, min_std=1e-8, ddof=1, fill="none")
FEATURES = (
    FeatureColumn("ret_1d", "float32", "price", 2),
    FeatureColumn("ret_5d", "float32", "price", 6),
    FeatureColumn("ret_1d_cs_z", "float32", "cs_z", 2),
)
TARGETS = (FeatureColumn("target_1d", "float32", "target", 0), FeatureColumn("target_1d_valid", "bool", "target", 0))


def build(**changes: object) -> FeatureManifest:
    fields = {"features": FEATURES, "targets": TARGETS, "cs_z": CSZ, "code_version": "2024.1", **changes}
    return FeatureManifest(**fields)


def test_same_contract_same_hash():
    first, second = build(), build(features=list(FEATURES), provenance={"built_at": "2024-06-01"})
    assert first.sha256 == second.sha256
    assert first == second
    assert len(first.sha256) == 64


def test_hash_is_pinned():
    # The hash names feature tables and checkpoints on every machine: changing the canonical form renames them all.
    canonical = (
        '{"code_version":"2024.1","cs_z":{"clip":5.0,"ddof":1,"fill":"none","min_std":1e-08,"min_stocks":20},'
        '"features":[{"dtype":"float32","group":"price","lookback":2,"name":"ret_1d"},'
        '{"dtype":"float32","group":"price","lookback":6,"name":"ret_5d"},'
        '{"dtype":"float32","group":"cs_z","lookback":2,"name":"ret_1d_cs_z"}],"keys":["Code","Date"],'
        '"targets":[{"dtype":"float32","group":"target","lookback":0,"name":"target_1d"},'
        '{"dtype":"bool","group":"target","lookback":0,"name":"target_1d_valid"}]}'
    )
    assert build().sha256 == hashlib.sha256(canonical.encode("ascii")).hexdigest()
    assert build().sha256 == "10cdddf6654c824ea664ffdec9ac36a0fb64e18b7ed88568461fbdc48c28e3ad"


def test_derived_names():
    m = build()
    assert m.width == 3
    assert m.feature_names == ("ret_1d", "ret_5d", "ret_1d_cs_z")
    assert m.target_names == ("target_1d", "target_1d_valid")
    assert m.columns == ("Code", "Date", "ret_1d", "ret_5d", "ret_1d_cs_z", "target_1d", "target_1d_valid")
    assert m.table_name == f"features_{m.sha256[:12]}"


def _replace_feature(index: int, **changes: object) -> tuple[FeatureColumn, ...]:
    features = list(FEATURES)
    features[index] = dataclasses.replace(features[index], **changes)
    return tuple(features)


@pytest.mark.parametrize(
    "changes",
    [
        {"features": _replace_feature(0, name="ret_1d_raw")},
        {"features": (FEATURES[1], FEATURES[0], FEATURES[2])},
        {"features": _replace_feature(0, dtype="float64")},
        {"features": _replace_feature(0, group="volatility")},
        {"features": _replace_feature(1, lookback=5)},
        {"features": FEATURES[:2]},
        {"targets": TARGETS[:1]},
        {"targets": (dataclasses.replace(TARGETS[0], dtype="float64"), TARGETS[1])},
        {"cs_z": dataclasses.replace(CSZ, clip=3.0)},
        {"cs_z": dataclasses.replace(CSZ, min_stocks=30)},
        {"cs_z": dataclasses.replace(CSZ, min_std=1e-6)},
        {"cs_z": dataclasses.replace(CSZ, ddof=0)},
        {"cs_z": dataclasses.replace(CSZ, fill="zero")},
        {"code_version": "2024.2"},
        {"keys": ("code", "Date")},
        {"execution_lag": 1},
    ],
    ids=lambda c: next(iter(c)),
)
def test_any_contract_change_changes_the_hash(changes):
    assert build(**changes).sha256 != build().sha256


def test_provenance_is_recorded_not_hashed():
    m = build(provenance={"raw_fingerprint": "abc", "rows": 2_400_000})
    assert m.sha256 == build().sha256
    assert m.provenance["rows"] == "2400000"


def test_integer_clip_hashes_like_its_float():
    assert build(cs_z=dataclasses.replace(CSZ, clip=5)).sha256 == build().sha256


def test_json_round_trip_preserves_hash_and_provenance():
    m = build(provenance={"date_range": "2019-01-04..2024-05-31"})
    document = json.loads(m.to_json())
    assert document["sha256"] == m.sha256
    assert document["width"] == 3
    assert document["provenance"] == {"date_range": "2019-01-04..2024-05-31"}
    again = FeatureManifest.from_json(m.to_json())
    assert again == m
    assert again.sha256 == m.sha256
    assert dict(again.provenance) == dict(m.provenance)


def test_the_execution_lag_is_hashed_round_trips_and_lengthens_every_label():
    lagged = build(execution_lag=1)
    # Lag 0 adds nothing to the canonical form (test_hash_is_pinned): tables built before lags keep their names.
    assert "execution_lag" not in json.loads(build().to_json())
    assert json.loads(lagged.to_json())["execution_lag"] == 1
    assert lagged.sha256 != build(execution_lag=2).sha256 and lagged.table_name != build().table_name
    again = FeatureManifest.from_json(lagged.to_json())
    assert again == lagged and again.execution_lag == 1 and again.sha256 == lagged.sha256
    assert [build().label_span(h) for h in (1, 20)] == [1, 20]
    assert [lagged.label_span(h) for h in (1, 20)] == [2, 21]


def test_an_edited_execution_lag_is_refused():
    document = json.loads(build(execution_lag=1).to_json())
    document["execution_lag"] = 0
    with pytest.raises(ManifestError, match="does not match its content"):
        FeatureManifest.from_json(json.dumps(document))


def test_hand_edited_manifest_is_refused():
    document = json.loads(build().to_json())
    document["features"][0]["dtype"] = "float64"
    with pytest.raises(ManifestError, match=r"manifest sha256 [0-9a-f]{64} does not match its content"):
        FeatureManifest.from_json(json.dumps(document))


def test_edited_width_is_refused():
    document = json.loads(build().to_json())
    document["width"] = 437
    with pytest.raises(ManifestError, match="width 437 does not match its 3 features"):
        FeatureManifest.from_json(json.dumps(document))


@pytest.mark.parametrize("text", ["{not json", "[]", '{"features": []}'])
def test_malformed_json_is_refused(text):
    with pytest.raises(ManifestError):
        FeatureManifest.from_json(text)


def test_write_is_atomic_and_readable(tmp_path):
    path = tmp_path / "run" / "manifest.json"
    build(code_version="old").write(path)
    m = build()
    assert m.write(path) == path
    assert FeatureManifest.read(path) == m
    assert os.listdir(path.parent) == ["manifest.json"]  # no temporary file left behind
    assert path.stat().st_mode & 0o777 == 0o644


def test_failed_write_keeps_the_old_manifest(tmp_path, monkeypatch):
    path = tmp_path / "manifest.json"
    old = build(code_version="old")
    old.write(path)

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        build().write(path)
    assert FeatureManifest.read(path) == old
    assert os.listdir(tmp_path) == ["manifest.json"]


def test_read_names_the_path(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(ManifestError, match=f"cannot read feature manifest {missing}"):
        FeatureManifest.read(missing)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ManifestError, match=f"invalid feature manifest {broken}: manifest is not valid JSON"):
        FeatureManifest.read(broken)


@pytest.mark.parametrize(
    "feature",
    [FeatureColumn("target_5d", "float32", "price", 1), FeatureColumn("target_1d", "float32", "price", 1)],
    ids=["target-prefix", "target-name"],
)
def test_no_target_among_the_inputs(feature):
    with pytest.raises(ManifestError, match=rf"target columns among the inputs: \['{feature.name}'\]"):
        build(features=(*FEATURES, feature))


def test_duplicate_names_are_refused():
    with pytest.raises(ManifestError, match=r"duplicate column names: \['Date', 'ret_1d'\]"):
        build(features=(*FEATURES, FEATURES[0], FeatureColumn("Date", "date", "market", 1)))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"features": _replace_feature(0, dtype="float16")}, "feature 'ret_1d' has dtype 'float16'"),
        ({"features": _replace_feature(0, group="target")}, "feature 'ret_1d' has group 'target'"),
        ({"features": _replace_feature(0, lookback=0)}, "feature 'ret_1d' has lookback 0"),
        ({"targets": (dataclasses.replace(TARGETS[0], group="price"),)}, "target 'target_1d' has group 'price'"),
        ({"targets": (dataclasses.replace(TARGETS[0], lookback=1),)}, "target 'target_1d' has lookback 1"),
        ({"features": ()}, "at least one input feature"),
        ({"keys": ("Code",)}, "keys must be"),
        ({"code_version": ""}, "code_version"),
        ({"execution_lag": -1}, "execution_lag must be an integer >= 0, got -1"),
        ({"execution_lag": 1.0}, "execution_lag must be an integer >= 0, got 1.0"),
    ],
)
def test_invalid_manifest_is_refused(changes, message):
    with pytest.raises(ManifestError, match=message):
        build(**changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"clip": 0}, "clip"), ({"ddof": 2}, "ddof"), ({"min_stocks": 1}, "min_stocks"), ({"fill": "ffill"}, "fill")],
)
def test_invalid_csz_settings_are_refused(changes, message):
    with pytest.raises(ManifestError, match=message):
        dataclasses.replace(CSZ, **changes)


def test_manifest_survives_pickling():
    # Prefect persists task results and passes them between processes by pickling.
    m = build(provenance={"rows": "10"})
    again = pickle.loads(pickle.dumps(m))
    assert again == m
    assert (again.sha256, dict(again.provenance)) == (m.sha256, {"rows": "10"})


def test_inputs_are_found_by_name_and_by_group():
    manifest = build()
    assert input_positions(["ret_5d", "ret_1d"], manifest.feature_names, "model.neutral_to", "m") == [1, 0]
    assert group_positions(["cs_z"], manifest.feature_groups, "the ridge baseline", "m") == [2]
    assert group_positions(["cs_z", "price"], manifest.feature_groups, "model.input_groups", "m") == [0, 1, 2]
    with pytest.raises(ValueError, match=r"model.neutral_to names \['rv_60'\], which are not inputs of m; its inputs"):
        input_positions(["rv_60"], manifest.feature_names, "model.neutral_to", "m")
    with pytest.raises(ValueError, match=r"the ridge baseline names \['cs_z'\].* its groups are: price$"):
        group_positions(["cs_z"], ("price", "price"), "the ridge baseline", "manifest abc")
