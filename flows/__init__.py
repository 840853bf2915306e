"""Thin Prefect flows over ``atft``. Tasks pass references (paths, table names, hashes), never frames."""

import os

# Without a server, Prefect starts a throwaway one whose telemetry write races its own SQLite setup and
# prints a "database is locked" traceback. An explicit setting in the environment still wins.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
