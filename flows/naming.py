"""Flow-run names from the pipeline config, so that runs of different pipelines tell apart in the Prefect UI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from prefect.runtime import flow_run


def config_stem() -> str:
    """The running flow's config file name without its suffix: ``demo`` for ``deployments/demo.yaml``, or for the
    :class:`~flows.references.RunConfig` resolved from it."""
    config = flow_run.parameters.get("config", "config")
    path = getattr(config, "path", None) or (config.get("path") if isinstance(config, dict) else config)
    return Path(str(path)).stem


def named_by_config(prefix: str) -> Callable[[], str]:
    """A ``flow_run_name`` callable giving ``<prefix>-<config stem>``."""
    return lambda: f"{prefix}-{config_stem()}"
