"""The layers are a checked contract: `lint-imports` keeps them on this tree, and breaks on a library that imports
Prefect, or a stage that imports one above it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on ``tree``'s packages, found there first (ahead of the editable install of this checkout)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True)


@pytest.fixture
def copy_of_the_tree(tmp_path: Path) -> Path:
    for package in ("atft", "schemas", "flows"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def test_the_layers_hold_on_this_tree():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("atft/gates.py", "import prefect", "The library never imports Prefect or the flows"),
        ("schemas/manifest.py", "import atft.config", "Stages are layered"),
        ("atft/models/fan.py", "import atft.training.trainer", "Stages are layered"),
    ],
)
def test_a_forbidden_import_breaks_the_contract_and_is_named(
    copy_of_the_tree: Path, module: str, line: str, broken: str
):
    path = copy_of_the_tree / module
    path.write_text(path.read_text() + f"\n{line}  # deliberately against the contract\n")
    result = lint_imports(copy_of_the_tree)
    assert result.returncode != 0
    assert broken in result.stdout and "BROKEN" in result.stdout
    assert module.removesuffix(".py").replace("/", ".") in result.stdout  # the offending module is named
