from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest
import yaml

from atft.config import (
    ConfigError,
    FilesSourceConfig,
    JQuantsSourceConfig,
    SyntheticSourceConfig,
    freeze_config,
    load_config,
    parse_overrides,
)
from atft.features.catalogue import definitions

DEPLOYMENTS = Path(__file__).resolve().parents[2] / "deployments"


def demo_raw() -> dict:
    return yaml.safe_load((DEPLOYMENTS / "demo.yaml").read_text())


def sp500_raw() -> dict:
    return yaml.safe_load((DEPLOYMENTS / "sp500.yaml").read_text())


def write(tmp_path: Path, raw: object) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def load_raw(tmp_path: Path, raw: object, overrides: dict | None = None):
    return load_config(write(tmp_path, raw), overrides)


def error_of(tmp_path: Path, raw: object, overrides: dict | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_raw(tmp_path, raw, overrides)
    return str(info.value)


# -- the shipped configs ---------------------------------------------------------------------------------


def test_demo_config_parses_into_a_synthetic_source():
    config = load_config(DEPLOYMENTS / "demo.yaml")
    assert config.name == "demo"
    assert config.calendar == "XTKS"
    assert isinstance(config.source, SyntheticSourceConfig)
    assert (config.source.seed, config.source.n_stocks) == (7, 300)
    assert (config.source.start, config.source.end) == (date(2021, 1, 4), date(2024, 12, 30))
    assert config.universe.code_pattern == r"^\d{4}$"
    assert config.warehouse.path == Path("data/demo.duckdb")
    assert config.validation.row_anomalies == "quarantine"
    assert config.validation.max_rejected_fraction == 0.01


def test_sp500_config_parses_into_a_files_source_with_an_explicit_mapping():
    config = load_config(DEPLOYMENTS / "sp500.yaml")
    assert config.name == "sp500"
    assert config.calendar == "XNYS"
    assert isinstance(config.source, FilesSourceConfig)
    assert config.source.format == "parquet"
    assert config.source.columns == {
        "Name": "Code",
        "date": "Date",
        "open": "Open",
        "high": "High",
        "low": "Low",
        "close": "Close",
        "volume": "Volume",
    }
    assert config.source.fill == {"AdjustmentFactor": 1.0}
    assert config.validation.max_rejected_fraction == 0.001


def test_jp_daily_config_parses_into_a_jquants_source():
    config = load_config(DEPLOYMENTS / "jp_daily.yaml")
    assert config.name == "jp-daily"
    assert isinstance(config.source, JQuantsSourceConfig)
    assert config.source.backoff_seconds == 2.0
    assert config.source.credentials_block is None
    assert config.universe.code_pattern == "^[0-9][0-9A-Z]{3}0$"


# -- unknown keys ----------------------------------------------------------------------------------------


def test_unknown_top_level_key_is_named_with_a_suggestion(tmp_path):
    raw = demo_raw()
    raw["calender"] = "XNYS"
    message = error_of(tmp_path, raw)
    assert "invalid pipeline config" in message
    assert "unknown key 'calender' (did you mean 'calendar'?)" in message
    assert "allowed here: name, source, universe, calendar, warehouse, validation" in message


def test_unknown_source_key_is_named_with_its_dotted_path_and_suggests_seed(tmp_path):
    raw = demo_raw()
    raw["source"]["sede"] = 3
    message = error_of(tmp_path, raw)
    assert message.startswith(f"{tmp_path / 'pipeline.yaml'}: invalid pipeline config")
    # The union tag ("synthetic") never shows up in the path the user reads.
    assert "unknown key 'source.sede' (did you mean 'seed'?)" in message
    assert "source.synthetic" not in message
    assert "allowed here: kind, seed, n_stocks" in message


def test_unknown_warehouse_key_suggests_path(tmp_path):
    raw = demo_raw()
    raw["warehouse"]["pth"] = "x.duckdb"
    message = error_of(tmp_path, raw)
    assert "unknown key 'warehouse.pth' (did you mean 'path'?); allowed here: path" in message


def test_unknown_key_in_a_files_source_suggests_from_the_files_fields(tmp_path):
    raw = sp500_raw()
    raw["source"]["ignore_column"] = ["adj_close"]
    message = error_of(tmp_path, raw)
    assert "unknown key 'source.ignore_column' (did you mean 'ignore_columns'?)" in message


# -- values and required keys ----------------------------------------------------------------------------


def test_mistyped_value_names_the_key_and_the_value(tmp_path):
    raw = demo_raw()
    raw["source"]["n_stocks"] = "many"
    message = error_of(tmp_path, raw)
    assert "  - source.n_stocks: Input should be a valid integer" in message
    assert "(got 'many')" in message


def test_out_of_range_value_names_the_key(tmp_path):
    raw = demo_raw()
    raw["validation"]["max_rejected_fraction"] = 1.5
    message = error_of(tmp_path, raw)
    assert "validation.max_rejected_fraction: Input should be less than or equal to 1 (got 1.5)" in message


def test_missing_required_key_is_named(tmp_path):
    raw = demo_raw()
    del raw["name"]
    assert "missing required key 'name'" in error_of(tmp_path, raw)


def test_missing_required_key_of_a_files_source_is_named_without_the_union_tag(tmp_path):
    raw = sp500_raw()
    del raw["source"]["columns"]
    assert "missing required key 'source.columns'" in error_of(tmp_path, raw)


def test_several_problems_are_all_reported(tmp_path):
    raw = demo_raw()
    raw["source"]["sede"] = 1
    raw["warehouse"]["pth"] = "x"
    message = error_of(tmp_path, raw)
    assert "'source.sede'" in message
    assert "'warehouse.pth'" in message


# -- overrides -------------------------------------------------------------------------------------------


def test_dotted_overrides_are_applied(tmp_path):
    target = tmp_path / "elsewhere" / "w.duckdb"
    config = load_raw(
        tmp_path,
        demo_raw(),
        {"warehouse.path": str(target), "source.n_stocks": 12, "validation.row_anomalies": "abort"},
    )
    assert config.warehouse.path == target
    assert config.source.n_stocks == 12
    assert config.validation.row_anomalies == "abort"
    # Untouched keys keep the file's values.
    assert config.source.seed == 7


def test_override_can_create_a_section_the_file_leaves_out(tmp_path):
    raw = demo_raw()
    del raw["warehouse"]
    config = load_raw(tmp_path, raw, {"warehouse.path": "x.duckdb"})
    assert config.warehouse.path == Path("x.duckdb")


def test_override_of_an_unknown_key_is_rejected_with_its_name(tmp_path):
    message = error_of(tmp_path, demo_raw(), {"warehouse.pth": "x.duckdb"})
    assert "unknown key 'warehouse.pth' (did you mean 'path'?)" in message


def test_override_through_a_scalar_is_rejected(tmp_path):
    message = error_of(tmp_path, demo_raw(), {"name.first": "x"})
    assert message == f"{tmp_path / 'pipeline.yaml'}: override 'name.first': 'name' is not a section"


def test_overrides_do_not_change_the_file(tmp_path):
    path = write(tmp_path, demo_raw())
    before = path.read_text()
    load_config(path, {"warehouse.path": "x.duckdb"})
    assert path.read_text() == before
    assert load_config(path).warehouse.path == Path("data/demo.duckdb")


# -- unreadable files ------------------------------------------------------------------------------------


def test_missing_file_names_the_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=re.escape(f"{path}: cannot read pipeline config: No such file")):
        load_config(path)


def test_directory_instead_of_a_file_names_it(tmp_path):
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path}: cannot read pipeline config")):
        load_config(tmp_path)


def test_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: demo\nsource: [1, 2\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: not valid YAML")):
        load_config(path)


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "list"), ("just text\n", "str"), ("", "NoneType")])
def test_non_mapping_yaml_names_the_file_and_what_it_found(tmp_path, text, kind):
    path = tmp_path / "list.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: expected a mapping at the top level, found {kind}"


# -- files-source mapping --------------------------------------------------------------------------------


def test_mapping_to_a_non_canonical_column_is_rejected(tmp_path):
    raw = sp500_raw()
    raw["source"]["columns"]["Name"] = "Ticker"
    message = error_of(tmp_path, raw)
    assert "source.columns: Value error, maps to unknown canonical column(s) ['Ticker']" in message
    assert "canonical: ['Code', 'Date', 'Open'" in message


def test_mapping_is_case_sensitive_on_the_canonical_side(tmp_path):
    raw = sp500_raw()
    raw["source"]["columns"]["Name"] = "code"
    assert "maps to unknown canonical column(s) ['code']" in error_of(tmp_path, raw)


def test_two_source_columns_to_one_canonical_are_rejected(tmp_path):
    raw = sp500_raw()
    raw["source"]["columns"]["adj_close"] = "Close"
    assert "source.columns: Value error, several source columns map to ['Close']" in error_of(tmp_path, raw)


def test_code_from_filename_needs_a_code_group(tmp_path):
    raw = sp500_raw()
    raw["source"]["code_from_filename"] = r"^(\w+)_data\.csv$"
    message = error_of(tmp_path, raw)
    assert "source.code_from_filename: Value error, regex" in message
    assert "needs a named group (?P<code>...)" in message


def test_code_from_filename_with_a_code_group_is_accepted(tmp_path):
    raw = sp500_raw()
    raw["source"]["code_from_filename"] = r"^(?P<code>\w+)_data\.csv$"
    config = load_raw(tmp_path, raw)
    assert config.source.code_from_filename == r"^(?P<code>\w+)_data\.csv$"


@pytest.mark.parametrize("column", ["Volume", "Close", "Code"])
def test_fill_of_a_required_column_is_rejected(tmp_path, column):
    raw = sp500_raw()
    raw["source"]["fill"] = {column: 0.0}
    message = error_of(tmp_path, raw)
    assert f"source.fill: Value error, only TurnoverValue and AdjustmentFactor may be filled, not ['{column}']" in (
        message
    )


def test_synthetic_window_must_be_ordered(tmp_path):
    raw = demo_raw()
    raw["source"]["end"] = raw["source"]["start"]
    assert "end 2021-01-04 must be after start 2021-01-04" in error_of(tmp_path, raw)


def test_unknown_calendar_value_is_rejected(tmp_path):
    raw = demo_raw()
    raw["calendar"] = "XLON"
    message = error_of(tmp_path, raw)
    assert "calendar: Input should be 'XTKS' or 'XNYS' (got 'XLON')" in message


def test_overrides_are_read_as_yaml_values_and_a_bad_pair_is_named():
    pairs = ["train.epochs=1", "train.learning_rate=1e-3", "loss.horizon_weights={5: 1.0}", "model.input_clip=null"]
    expected = {"train.epochs": 1, "train.learning_rate": 1e-3, "loss.horizon_weights": {5: 1.0}}
    expected["model.input_clip"] = None
    assert parse_overrides(pairs) == expected
    with pytest.raises(ConfigError, match="--set takes key=value"):
        parse_overrides(["=1"])


def test_a_frozen_config_is_the_validated_settings_under_the_originals_name_and_found_again(tmp_path):
    original = DEPLOYMENTS / "sp500.yaml"
    frozen = freeze_config(original, {"train.epochs": 2}, tmp_path)
    assert frozen.name == "sp500.yaml" and frozen.parent.parent == tmp_path
    assert load_config(frozen) == load_config(original, {"train.epochs": 2})
    assert freeze_config(original, {"train.epochs": 2}, tmp_path) == frozen  # same settings, same file
    assert freeze_config(original, {"train.epochs": 3}, tmp_path) != frozen
    with pytest.raises(ConfigError, match=r"unknown key 'train\.epoch'"):
        freeze_config(original, {"train.epoch": 2}, tmp_path)
    assert len(list(tmp_path.iterdir())) == 2  # an invalid config is never written


@pytest.mark.parametrize("sectors", [False, True])
def test_the_inputs_sp500_scores_are_neutral_to_are_features_it_builds(sectors: bool) -> None:
    """A name the feature build never makes would surface only when a retrain begins; here it fails at once."""
    config = load_config(DEPLOYMENTS / "sp500.yaml")
    built = {d.name for d in definitions(sectors)}
    assert config.model.neutral_to and set(config.model.neutral_to) <= built
