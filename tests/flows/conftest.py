"""Flow tests run against a real local Prefect API (the test harness), isolated from ~/.prefect."""

import os
import tempfile

# Before Prefect is imported anywhere: its settings and SQLite database go to a throwaway home.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="atft-prefect-home-")
os.environ.pop("PREFECT_API_URL", None)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"

import asyncio
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="session", autouse=True)
def prefect_api():
    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture
def read_artifacts():
    """``read_artifacts(key)``: every artifact with that key through the API, newest first."""

    def read(key: str) -> list:
        async def query() -> list:
            async with get_client() as client:
                return await client.read_artifacts(
                    artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC
                )

        return asyncio.run(query())

    return read


@pytest.fixture(scope="session")
def small_market():
    """``small_market(tmp, name, **sections)``: writes ``tmp/<name>.yaml`` for a 30-stock synthetic year and a tiny
    one-epoch model, all files under ``tmp``; each keyword updates that config section. Returns the path."""

    def write(tmp: Path, name: str, **sections: dict) -> str:
        config = {
            "name": name,
            "source": {"kind": "synthetic", "seed": 4, "n_stocks": 30, "start": "2022-01-04", "end": "2022-12-28"},
            "universe": {"code_pattern": r"^\d{4}$"},
            "warehouse": {"path": str(tmp / "market.duckdb")},
            "features": {"cs_z": {"min_stocks": 10}, "manifest_dir": str(tmp / "manifests")},
            "model": {"lookback": 8, "hidden": 16, "var_hidden": 2, "fan_window": 4},
            "train": {"epochs": 1, "days_per_batch": 8, "staging_dir": str(tmp / "staging")},
            "registry": {"path": str(tmp / "registry")},
        }
        for section, values in sections.items():
            config[section] = {**config.get(section, {}), **values}
        path = tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        return str(path)

    return write
