"""Flow-run names carry the pipeline's config stem, so runs of different pipelines tell apart in the UI."""

from __future__ import annotations

from prefect import flow
from prefect.context import get_run_context

from flows.naming import named_by_config


@flow(flow_run_name=named_by_config("probe"))
def _probe(config: str) -> str:
    return get_run_context().flow_run.name


def test_a_flow_run_is_named_by_its_prefix_and_config_stem() -> None:
    assert _probe("deployments/sp500.yaml") == "probe-sp500"
    assert _probe(config="/tmp/pipelines/jp_daily.yml") == "probe-jp_daily"
