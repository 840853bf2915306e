"""Thin Prefect flows over ``atft``. Tasks pass references (paths, table names, hashes), never frames."""

import os

# Without a server, Prefect starts a throwaway one whose telemetry write races its own SQLite setup and
# prints a "database is locked" traceback. An explicit setting in the environment still wins.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from prefect.runtime import flow_run  # after the environment default above

from atft.warehouse_lock import set_holder_label


def _flow_run_label() -> str | None:
    """A warehouse holder named as the Prefect UI shows it, so that a waiting run says which run it waits for."""
    return f"flow run {flow_run.name} ({flow_run.id})" if flow_run.id else None


set_holder_label(_flow_run_label)
