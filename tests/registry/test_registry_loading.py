"""Loading: the same model back, every file verified, the feature contract checked, nothing ever unpickled."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import duckdb
import pytest
import torch
from safetensors.torch import save as save_safetensors

from atft.registry import CheckpointRefused, Registry
from atft.registry.__main__ import main as cli
from atft.registry.integrity import CHECKSUMS, checksum_document, sha256

FORGED = "v20990101T000000000000Z-f0f0f0"  # a version id no publisher will produce in these tests


class _Planted:
    """Unpickling this creates ``marker``: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.marker), "w")


def planted_pickle(marker: Path) -> bytes:
    return pickle.dumps(_Planted(marker))


def version_dir(registry: Registry, version: str) -> Path:
    return Path(registry.storage.location(version))


def forge(directory: Path, remove: tuple[str, ...] = (), add: dict[str, bytes] | None = None) -> None:
    """Change a version's files and rewrite its checksum file to match, as someone covering their tracks would."""
    for name in remove:
        (directory / name).unlink()
    for name, data in (add or {}).items():
        (directory / name).write_bytes(data)
    files = {p.name: p.read_bytes() for p in directory.iterdir() if p.name != CHECKSUMS}
    (directory / CHECKSUMS).write_bytes(checksum_document(files))


@pytest.fixture
def feature_table():
    """Factory: a DuckDB connection holding an empty table ``features_live`` with these (name, SQL type) columns."""
    connections = []

    def make(columns: list[tuple[str, str]]) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect()
        connections.append(con)
        definitions = ", ".join(f'"{name}" {sql_type}' for name, sql_type in columns)
        con.sql(f"CREATE TABLE features_live ({definitions})")
        return con

    yield make
    for con in connections:
        con.close()


def table_columns(manifest) -> list[tuple[str, str]]:
    """The columns of a feature table that matches ``manifest`` exactly."""
    return [("Code", "VARCHAR"), ("Date", "DATE")] + [(c.name, "FLOAT") for c in manifest.features + manifest.targets]


def test_the_loaded_model_scores_exactly_like_the_original_and_nothing_is_unpickled(
    registry, published, manifest, scores, feature_table, monkeypatch
):
    version, model = published(seed=3)
    published(seed=4, promote=False)

    def refuse(*args, **kwargs):
        raise AssertionError("the registry must never unpickle")

    for module, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")):
        monkeypatch.setattr(module, name, refuse)
    con = feature_table(table_columns(manifest))
    loaded = registry.load(con=con, table="features_live")
    assert loaded.version == version and not loaded.model.training
    assert loaded.manifest == manifest and loaded.manifest.sha256 == manifest.sha256
    assert loaded.metadata["data_fingerprint"] and loaded.metrics["rank_ic_5d"] == 0.031 and loaded.gates["passed"]
    assert torch.equal(loaded.model.input_std, model.input_std)
    assert scores(loaded.model).equal(scores(model))
    assert registry.load(version).version == version


def test_a_tampered_weights_file_is_named_with_both_hashes(registry, published):
    version, _ = published()
    published(seed=1)
    weights = version_dir(registry, version) / "weights.safetensors"
    recorded = sha256(weights.read_bytes())
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # a changed parameter: still valid safetensors, only the hash can tell
    weights.write_bytes(bytes(data))
    problem = f"weights.safetensors was modified after publication: sha256 {sha256(bytes(data))}, recorded {recorded}"
    assert registry.verify(version) == [problem]
    with pytest.raises(CheckpointRefused, match=f"version {version} at .* failed verification") as refused:
        registry.load(version)
    assert problem in str(refused.value)
    with pytest.raises(CheckpointRefused, match=r"weights\.safetensors was modified"):
        registry.rollback()


def test_a_swapped_manifest_is_refused_even_with_forged_checksums(registry, published, make_manifest):
    version, _ = published()
    other = make_manifest(width=7)
    forge(version_dir(registry, version), add={"manifest.json": other.to_json().encode()})
    assert registry.verify(version) == []
    with pytest.raises(CheckpointRefused, match=rf"manifest.json hashes to {other.sha256}, but the version records"):
        registry.load()


def test_width_drift_between_checkpoint_and_feature_table_is_refused_naming_the_columns(
    registry, staged, make_manifest, publish_kwargs, feature_table
):
    trained = make_manifest(width=82)
    registry.publish(staged(manifest=trained)[1], trained, **publish_kwargs())
    con = feature_table(table_columns(make_manifest(width=437)))
    with pytest.raises(CheckpointRefused) as refused:
        registry.load(con=con, table="features_live")
    message = str(refused.value)
    assert "cannot be used with feature table 'features_live'" in message
    assert "width: manifest says 82 inputs, data has 437" in message
    assert "extra 355 columns: f082, f083, f084" in message
    assert refused.value.diff.extra[:2] == ("f082", "f083") and len(refused.value.diff.extra) == 355


def test_a_column_differing_only_in_case_is_refused_naming_it(registry, published, manifest, feature_table):
    published()
    columns = [("code" if name == "Code" else name, sql_type) for name, sql_type in table_columns(manifest)]
    with pytest.raises(CheckpointRefused) as refused:
        registry.load(con=feature_table(columns), table="features_live")
    assert "'code' found where 'Code' was expected (names are case-sensitive)" in str(refused.value)
    assert refused.value.diff.case_only == (("Code", "code"),)


def test_a_missing_feature_table_is_refused(registry, published, feature_table, manifest):
    published()
    with pytest.raises(CheckpointRefused, match=rf"cannot read the columns of feature table '{manifest.table_name}'"):
        registry.load(con=feature_table([("Code", "VARCHAR")]))


def test_a_pickle_planted_next_to_the_weights_is_never_executed(registry, published, tmp_path, capsys):
    version, _ = published()
    marker = tmp_path / "executed"
    live = tmp_path / "live"
    pickle.loads(planted_pickle(live))  # the payload works: unpickling it would leave a marker
    assert live.exists()
    for name in ("weights.pt", "model.pkl"):
        (version_dir(registry, version) / name).write_bytes(planted_pickle(marker))

    (record,) = registry.versions()
    assert any("unexpected file weights.pt (a pickled checkpoint is never read)" in p for p in record.problems)
    assert registry.show(version).problems == record.problems
    assert "unexpected file model.pkl" in "\n".join(registry.verify(version))
    with pytest.raises(CheckpointRefused, match=r"unexpected file weights.pt .*remove it"):
        registry.load()
    root = str(registry.storage.location())
    assert cli(["--registry", root, "list"]) == 0 and "DAMAGED: unexpected file" in capsys.readouterr().out
    assert cli(["--registry", root, "show"]) == 1 and "unexpected file weights.pt" in capsys.readouterr().out
    assert not marker.exists()


def test_a_version_whose_only_weights_are_a_pickle_is_refused(registry, published, tmp_path):
    version, _ = published()
    marker = tmp_path / "executed"
    forged = version_dir(registry, FORGED)
    shutil.copytree(version_dir(registry, version), forged)
    forge(forged, remove=("weights.safetensors",), add={"weights.pt": planted_pickle(marker)})
    with pytest.raises(CheckpointRefused) as refused:
        registry.load(FORGED)
    assert "no weights.safetensors (found weights.pt: pickled checkpoints are never loaded, they can run code)" in str(
        refused.value
    )
    with pytest.raises(CheckpointRefused, match=r"no weights\.safetensors"):
        registry.rollback(to=FORGED)
    assert registry.champion().champion == version
    assert not marker.exists()


def test_weights_that_do_not_fit_their_model_description_are_refused(registry, published):
    version, model = published()
    state = {k: v for k, v in model.state_dict().items() if k != "input_std"}
    forge(version_dir(registry, version), add={"weights.safetensors": save_safetensors(state)})
    with pytest.raises(CheckpointRefused, match=rf"{version} cannot be loaded: weights.safetensors does not fit"):
        registry.load()
