"""prefect.yaml is real: deploy it to a local Prefect API, trigger a run, and let a process worker execute it."""

import asyncio
import inspect
import os
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL

from atft.config import load_config
from atft.warehouse import Warehouse

REPO = Path(__file__).resolve().parents[2]
PREFECT = [sys.executable, "-m", "prefect"]


def deployments() -> list[dict]:
    return yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]


@pytest.mark.parametrize("deployment", deployments(), ids=lambda d: d["name"])
def test_each_deployment_points_at_a_flow_and_a_loadable_config(deployment):
    module_path, flow_name = deployment["entrypoint"].split(":")
    module = __import__(module_path.removesuffix(".py").replace("/", "."), fromlist=[flow_name])
    flow = getattr(module, flow_name)
    accepted = inspect.signature(flow.fn).parameters
    assert set(deployment["parameters"]) <= set(accepted)
    load_config(REPO / deployment["parameters"]["config"])
    assert deployment["work_pool"]["name"] == "atft-process"


def _listed(value: str | list[str]) -> list[str]:
    return value if isinstance(value, list) else [value]


def test_deploy_run_and_execute_with_a_process_worker(tmp_path):
    env = os.environ | {"PREFECT_API_URL": PREFECT_API_URL.value(), "PWD": str(REPO)}

    def prefect(*args: str, cwd: Path = REPO) -> str:
        done = subprocess.run([*PREFECT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        return done.stdout

    prefect("work-pool", "create", "atft-process", "--type", "process", "--overwrite")
    prefect("--no-prompt", "deploy", "--all")
    assert "ingest/demo" in prefect("deployment", "ls")
    warehouse = tmp_path / "deployed.duckdb"
    prefect("deployment", "run", "ingest/demo", "--param", f"warehouse={warehouse}")
    # Started elsewhere on purpose: the deployment's pull step must bring the worker's run into the repo.
    prefect("worker", "start", "--pool", "atft-process", "--run-once", cwd=tmp_path)

    async def demo_runs():
        async with get_client() as client:
            deployment = await client.read_deployment_by_name("ingest/demo")
            return await client.read_flow_runs(), deployment.id

    async def automations():
        async with get_client() as client:
            retrains = {
                (await client.read_deployment_by_name(f"rolling-retrain/{name}")).id for name in ("demo", "weekly-jp")
            }
            return retrains, await client.read_automations()

    # The monitor's Degraded event starts an early retrain of the same pipeline: an automation per trigger.
    retrains, automations = asyncio.run(automations())
    degraded = [a for a in automations if "atft.champion.degraded" in a.trigger.expect]
    assert {a.actions[0].deployment_id for a in degraded} == retrains
    # A match value is a string or a list of them, as Prefect stores it.
    matched = {str(v) for a in degraded for v in _listed(a.trigger.match.get("prefect.resource.id"))}
    assert matched == {"atft.pipeline.demo", "atft.pipeline.jp-daily"}, matched

    # The server's scheduler turns a cron deployment into scheduled runs (its insert broke with SQLAlchemy 2.1).
    async def scheduled_runs():
        async with get_client() as client:
            deployment = await client.read_deployment_by_name("monitor/daily-jp")
            response = await client._client.post(f"/deployments/{deployment.id}/schedule", json={"max_runs": 3})
            response.raise_for_status()
            runs = await client.read_flow_runs()
            return [r for r in runs if r.deployment_id == deployment.id and r.state.is_scheduled()]

    scheduled = asyncio.run(scheduled_runs())
    tokyo = [r.expected_start_time.astimezone(ZoneInfo("Asia/Tokyo")) for r in scheduled]
    assert len(tokyo) == 3 and all(t.weekday() < 5 and (t.hour, t.minute) == (18, 45) for t in tokyo)

    runs, deployment_id = asyncio.run(demo_runs())
    (run,) = [r for r in runs if r.deployment_id == deployment_id]
    assert run.state.is_completed(), run.state
    with Warehouse(warehouse, read_only=True) as wh:
        assert wh.row_count("raw_quotes") > 200_000
        (entry,) = wh.log_entries()
    assert entry.run_id == str(run.id)
