"""The ``train`` flow: contract first (nothing is built on drifted data), then a staged, safely loadable result."""

import json
from datetime import date
from pathlib import Path

import duckdb
import pytest
from safetensors.torch import load_file

import atft.training.session as session
import flows.features as features_flow
import flows.ingest as ingest_flow
import flows.train as train_flow
from atft.config import load_config
from atft.models import build_model
from schemas.contract import ContractViolation

WINDOWS = {
    "train_start": date(2022, 5, 2),
    "train_end": date(2022, 9, 30),
    "valid_start": date(2022, 10, 31),
    "valid_end": date(2022, 12, 28),
}


@pytest.fixture(scope="module")
def market(tmp_path_factory, small_market):
    path = small_market(tmp_path_factory.mktemp("train-flow"), "small", source={"seed": 9})
    ingest_flow.ingest(config=path)
    return path, features_flow.build_features(config=path)


def test_training_stages_safetensors_and_json_for_the_manifest(market):
    config, ref = market
    staged = train_flow.train(config=config, features=ref, **WINDOWS)
    directory = Path(staged.staging_dir)
    assert {p.name for p in directory.iterdir()} == {"weights.safetensors", "model.json", "history.json"}
    description = json.loads((directory / "model.json").read_text())
    assert description["manifest_sha256"] == ref.manifest_sha256 == staged.features.manifest_sha256
    assert description["windows"]["train_end"] == "2022-09-30"
    # The weights load into a model built from the manifest's width alone, with no pickle involved.
    settings = load_config(config)
    model = build_model(settings.model, description["width"], description["horizons"], ref.manifest_sha256)
    model.load_state_dict(load_file(directory / "weights.safetensors"))
    assert len(json.loads((directory / "history.json").read_text())) == staged.epochs_run == 1


def test_a_contract_violation_fails_the_run_before_any_model_is_built(market, tmp_path, monkeypatch):
    config, ref = market
    built = []
    monkeypatch.setattr(session, "build_model", lambda *a, **k: built.append(1))
    drifted = tmp_path / "drifted.duckdb"
    drifted.write_bytes(Path(load_config(config).warehouse.path).read_bytes())
    with duckdb.connect(str(drifted)) as con:
        con.execute(f'ALTER TABLE {ref.table} DROP COLUMN "ret_1d_cs_z"')
    state = train_flow.train(config=config, features=ref, warehouse=str(drifted), return_state=True, **WINDOWS)
    assert state.is_failed() and built == []
    with pytest.raises(ContractViolation, match=r"missing 1 column: ret_1d_cs_z"):
        state.result()


def test_a_checkpoint_manifest_that_differs_is_refused(market):
    config, ref = market
    other = dict(ref, manifest_sha256="0" * 64)
    state = train_flow.train(config=config, features=other, return_state=True, **WINDOWS)
    assert state.is_failed()
    with pytest.raises(ContractViolation, match="manifest hash"):
        state.result()


def test_windows_must_be_ordered(market):
    config, ref = market
    bad = dict(WINDOWS, valid_start=date(2022, 9, 1))
    state = train_flow.train(config=config, features=ref, return_state=True, **bad)
    assert state.is_failed()
    with pytest.raises(ValueError, match="train_end < valid_start"):
        state.result()


def test_a_run_that_will_not_fit_its_timeout_says_so_after_the_first_epoch(tmp_path, small_market, caplog):
    # Early stopping (patience 1) ends it long before the 1,000 epochs that the first epoch's speed projects.
    train = {"epochs": 1000, "patience": 1, "days_per_batch": 8, "timeout_s": 60, "staging_dir": str(tmp_path / "s")}
    config = small_market(tmp_path, "overrun", train=train)
    ingest_flow.ingest(config=config)
    ref = features_flow.build_features(config=config)
    with caplog.at_level("INFO"):
        staged = train_flow.train(config=config, features=ref, **WINDOWS)
    assert staged.epochs_run < 1000
    messages = [r.getMessage() for r in caplog.records]
    warnings = [m for m in messages if "past the 1-min timeout (train.timeout_s)" in m]
    assert len(warnings) == 1 and "1000 epochs need about" in warnings[0]
    assert any(m.startswith("epoch 1:") and ", ETA " in m for m in messages)
