"""The code and library versions a checkpoint was published with, so that a result can be reproduced later."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

# Distributions whose versions change what a checkpoint computes or how it was validated. Read from package
# metadata: importing them (prefect above all) would cost seconds and is not the library's business.
LIBRARIES: tuple[str, ...] = (
    "torch",
    "torch_geometric",
    "safetensors",
    "duckdb",
    "numpy",
    "pyarrow",
    "polars",
    "pandera",
    "prefect",
)
_SOURCE = Path(__file__).resolve().parents[2]


def code_version() -> str | None:
    """The git commit of the platform's source tree, or None outside a git checkout (an installed wheel)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_SOURCE, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def library_versions() -> dict[str, str | None]:
    """Installed version of each of ``LIBRARIES``; None for one that is not installed."""
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions
