"""Flow tests run against a real local Prefect API (the test harness), isolated from ~/.prefect."""

import os
import tempfile

# Before Prefect is imported anywhere: its settings and SQLite database go to a throwaway home.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="atft-prefect-home-")
os.environ.pop("PREFECT_API_URL", None)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"

import pytest
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="session", autouse=True)
def prefect_api():
    with prefect_test_harness(server_startup_timeout=60):
        yield
