"""Flow tests run against a real local Prefect API (the test harness), isolated from ~/.prefect."""

import os
import tempfile

# Before Prefect is imported anywhere: its settings and SQLite database go to a throwaway home.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="atft-prefect-home-")
os.environ.pop("PREFECT_API_URL", None)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"

import asyncio

import pytest
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
