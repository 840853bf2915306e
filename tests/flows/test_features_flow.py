"""The ``build-features`` flow: a reference back, artifacts in the UI, and a validation failure that fails the run."""

import json
from datetime import date
from pathlib import Path

import pytest
import yaml

import flows.features as features_flow
import flows.ingest as ingest_flow
from atft.warehouse import Warehouse
from flows.references import FeatureRef
from schemas.feature_table import FeatureValidationError
from schemas.manifest import FeatureManifest


def market_config(tmp_path: Path, name: str, **features: object) -> str:
    path = tmp_path / f"{name}.yaml"
    config = {
        "name": name,
        "source": {"kind": "synthetic", "seed": 5, "n_stocks": 40, "start": "2022-01-04", "end": "2022-12-28"},
        "universe": {"code_pattern": r"^\d{4}$"},
        "warehouse": {"path": str(tmp_path / f"{name}.duckdb")},
        "features": {"cs_z": {"min_stocks": 10}, "manifest_dir": str(tmp_path / "manifests")} | features,
    }
    path.write_text(yaml.safe_dump(config))
    ingest_flow.ingest(config=str(path))
    return str(path)


@pytest.fixture
def artifact(read_artifacts):
    def only(key: str):
        (found,) = read_artifacts(key)
        return found

    return only


def test_the_flow_returns_a_reference_and_publishes_groups_validation_and_manifest(tmp_path, artifact):
    config = market_config(tmp_path, "flowfeatures")
    ref = features_flow.build_features(config=config)
    assert isinstance(ref, FeatureRef) and not ref.contract_checked  # built, not yet checked against a model
    manifest = FeatureManifest.read(ref.manifest_path)
    assert ref.table == manifest.table_name and ref.manifest_sha256 == manifest.sha256
    with Warehouse(tmp_path / "flowfeatures.duckdb", read_only=True) as wh:
        assert wh.row_count(ref.table) == wh.row_count("raw_quotes")
    groups = {row["group"]: row["columns"] for row in json.loads(artifact("features-flowfeatures-groups").data)}
    assert groups["total inputs"] == manifest.width and groups["cs_z"] == 72
    validation = json.loads(artifact("features-flowfeatures-validation").data)
    assert validation[0]["detail"].startswith("passed")
    assert manifest.sha256 in artifact("features-flowfeatures-manifest").data
    # A second run on the same quotes is the same build: it comes back from the cache.
    assert features_flow.build_features(config=config) == ref


def test_a_rerun_on_the_same_raw_data_is_served_from_the_cache(tmp_path, monkeypatch):
    config = market_config(tmp_path, "cached")
    first = features_flow.build_features(config=config)

    def must_not_build(*args, **kwargs):
        raise AssertionError("the feature build ran although its inputs had not changed")

    with monkeypatch.context() as patched:
        patched.setattr(features_flow, "run_feature_build", must_not_build)
        assert features_flow.build_features(config=config) == first
    # A cached reference to a table dropped since is not trusted: the table is built again.
    with Warehouse(tmp_path / "cached.duckdb") as wh:
        wh.con.execute(f"DROP TABLE {first.table}")
    rebuilt = features_flow.build_features(config=config)
    assert rebuilt.table == first.table and rebuilt.mode == "full"


def test_a_listings_change_is_not_served_a_stale_cached_build(tmp_path, monkeypatch):
    config = market_config(tmp_path, "listings")
    first = features_flow.build_features(config=config)
    with Warehouse(tmp_path / "listings.duckdb") as wh:
        (code, sector) = wh.con.execute("SELECT Code, Sector17Code FROM listed_info ORDER BY Code LIMIT 1").fetchone()
        moved = next(
            s for (s,) in wh.con.execute("SELECT DISTINCT Sector17Code FROM listed_info").fetchall() if s != sector
        )
        wh.con.execute("UPDATE listed_info SET Sector17Code = ? WHERE Code = ?", [moved, code])
    builds = []
    real_build = features_flow.run_feature_build

    def counted(*args, **kwargs):
        builds.append(args)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(features_flow, "run_feature_build", counted)
    # The quotes did not change, the sectors did: the features read both, so the table is built again.
    rebuilt = features_flow.build_features(config=config)
    assert len(builds) == 1 and rebuilt.table == first.table and rebuilt.mode == "full"
    # And the rebuilt table is what a re-run is then served.
    assert features_flow.build_features(config=config) == rebuilt and len(builds) == 1


def test_a_validation_failure_fails_the_run_with_the_report_and_writes_nothing(tmp_path, artifact):
    # A NaN bound of 0 cannot hold for features whose windows reach across halts and listings.
    config = market_config(tmp_path, "strict", max_nan_fraction=0.0)
    state = features_flow.build_features(config=config, return_state=True)
    assert state.is_failed()
    with pytest.raises(FeatureValidationError, match=r"nan_fraction"):
        state.result()
    rows = json.loads(artifact("features-strict-validation").data)
    assert any(row["check"] == "nan_fraction" for row in rows)
    with Warehouse(tmp_path / "strict.duckdb", read_only=True) as wh:
        tables = {t for (t,) in wh.con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert not any(t.startswith("features_") for t in tables)


def test_a_cached_build_is_not_trusted_when_the_table_it_describes_is_shorter(tmp_path):
    config = market_config(tmp_path, "rebuilt")
    early, late = date(2022, 9, 30), date(2022, 12, 28)
    features_flow.build_features(config=config, as_of=early)
    features_flow.build_features(config=config, as_of=late)
    # A fresh warehouse with the same quotes: both builds are in the cache, but the table starts from nothing.
    (tmp_path / "rebuilt.duckdb").unlink()
    ingest_flow.ingest(config=config)
    features_flow.build_features(config=config, as_of=early)
    ref = features_flow.build_features(config=config, as_of=late)
    with Warehouse(tmp_path / "rebuilt.duckdb", read_only=True) as wh:
        (last,) = wh.con.execute(f"SELECT max(Date) FROM {ref.table}").fetchall()[0]
    assert ref.through == last == late


def test_a_cached_build_restores_a_lost_manifest_file(tmp_path):
    config = market_config(tmp_path, "lostmanifest")
    ref = features_flow.build_features(config=config)
    Path(ref.manifest_path).unlink()
    # Served from the cache (the raw data did not change), and still hands over a manifest that exists.
    assert features_flow.build_features(config=config) == ref
    assert FeatureManifest.read(ref.manifest_path).sha256 == ref.manifest_sha256
