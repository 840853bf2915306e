"""The scheduled path for real: ``prefect server start`` on a free loopback port, the work pool, ``prefect deploy``
from prefect.yaml, a process worker, ``prefect deployment run rolling-retrain/demo``, and the artifacts read back
through the server's API."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
PREFECT = [sys.executable, "-m", "prefect"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_server_deploy_worker_and_a_published_rolling_retrain(tmp_path, small_market):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PWD": str(REPO),
    }
    server = subprocess.Popen([*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "prefect server did not become healthy in 120 s"
            time.sleep(1)

        def prefect(*args: str, cwd: Path = REPO) -> str:
            done = subprocess.run([*PREFECT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            return done.stdout

        prefect("work-pool", "create", "atft-process", "--type", "process")
        prefect("--no-prompt", "deploy", "--all")
        config = small_market(tmp_path, "deployed", source={"seed": 8}, retrain={"train_days": 60, "valid_days": 20},
                              evaluation={"eval_days": 20, "gates": ["rank_ic_5d >= -1"]})  # fmt: skip
        prefect("deployment", "run", "rolling-retrain/demo", "--param", f"config={config}",
                "--param", "as_of=2022-12-23")  # fmt: skip
        prefect("worker", "start", "--pool", "atft-process", "--run-once", cwd=tmp_path)

        client = httpx.Client(base_url=api, timeout=30)
        deployment = client.get("/deployments/name/rolling-retrain/demo").json()
        runs = client.post("/flow_runs/filter", json={"flow_runs": {"deployment_id": {"any_": [deployment["id"]]}}})
        (run,) = runs.json()
        assert run["state"]["type"] == "COMPLETED" and run["state"]["name"] == "Published", run["state"]
        found = client.post("/artifacts/latest/filter", json={"artifacts": {"key": {"like_": "deployed"}}}).json()
        keys = {artifact["key"] for artifact in found}
        expected = {
            "ingest-deployed", "features-deployed-manifest", "train-deployed-progress", "evaluate-deployed-gates",
            "evaluate-deployed-metrics-5d", "publish-deployed-report", "retrain-deployed-report",
        }  # fmt: skip
        assert expected <= keys, keys
        report = next(a for a in found if a["key"] == "retrain-deployed-report")
        assert "Published" in report["data"] and str(tmp_path / "registry") in report["data"]
    finally:
        server.terminate()
        server.wait(timeout=60)
