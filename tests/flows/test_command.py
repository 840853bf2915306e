"""``atft``: one command whose subcommands run the flows with the same options, resolving the config once."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
import yaml

from atft.config import load_config
from flows import command

ATFT = Path(sys.executable).with_name("atft")  # the console script `make install` puts beside the interpreter


@pytest.mark.parametrize("sub", [*command.COMMANDS, "registry", None])
def test_every_command_explains_itself_with_an_example(sub: str | None) -> None:
    argv = [str(ATFT), "--help"] if sub is None else [str(ATFT), sub, "--help"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    usage = "usage: atft" if sub is None else f"usage: atft {sub}"
    assert done.stdout.startswith(usage)
    if sub not in (None, "registry"):
        assert f"example: atft {sub} " in done.stdout.replace("\n", " ")
        assert all(option in done.stdout for option in ("--config", "--set KEY=VALUE", "--warehouse"))


def test_overrides_are_resolved_once_into_a_frozen_config_that_the_run_reads(
    tmp_path: Path, small_market: Callable[..., str], capsys: pytest.CaptureFixture
) -> None:
    config = small_market(tmp_path, "cmd")
    elsewhere = tmp_path / "elsewhere.duckdb"
    argv = ["ingest", "--config", config, "--warehouse", str(elsewhere), "--set", "source.n_stocks=12"]
    assert command.main(argv) == 0
    (frozen,) = (tmp_path / "staging" / "configs").glob("*/cmd.yaml")  # the original's name: artifact keys keep it
    assert f"resolved into {frozen}" in capsys.readouterr().out
    settings = load_config(frozen)
    assert settings.warehouse.path == elsewhere and settings.source.n_stocks == 12
    assert settings.model_copy(update={"warehouse": load_config(config).warehouse}) != load_config(config)
    with duckdb.connect(str(elsewhere), read_only=True) as con:
        assert con.execute("SELECT count(DISTINCT Code) FROM raw_quotes").fetchone()[0] == 12
    assert not (tmp_path / "market.duckdb").exists()  # the config's own warehouse was never touched
    # Editing the original afterwards changes nothing the frozen file says, and the same overrides find it again.
    original = yaml.safe_load(Path(config).read_text())
    Path(config).write_text(yaml.safe_dump(original | {"source": original["source"] | {"n_stocks": 99}}))
    assert load_config(frozen) == settings


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs", "--set takes key=value (e.g. train.epochs=1), got 'train.epochs'"),
        ("train.epoch=1", "unknown key 'train.epoch'"),
        ("train.epochs=[1", "is not a YAML value"),
    ],
)
def test_a_bad_override_exits_2_naming_it_before_anything_runs(
    override: str, message: str, tmp_path: Path, small_market: Callable[..., str], capsys: pytest.CaptureFixture
) -> None:
    config = small_market(tmp_path, "bad")
    assert command.main(["ingest", "--config", config, "--set", override]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "market.duckdb").exists()
