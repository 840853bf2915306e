"""The scheduled path for real, in one command: ``atft serve`` on a free loopback port (the Prefect server, the work
pool, the ``gpu`` limit, every deployment of prefect.yaml and a worker), ``rolling-retrain/demo`` triggered through
the API until it is ``Published``, its artifacts read back, and Ctrl-C stopping everything with no process left."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ATFT = Path(sys.executable).with_name("atft")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``, from /proc (Linux)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(what: str, check, seconds: float, serve: subprocess.Popen, log: Path):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert serve.poll() is None, f"atft serve exited with {serve.returncode}:\n{log.read_text()[-3000:]}"
        try:
            found = check()
        except httpx.TransportError:
            found = None
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"{what} within {seconds} s:\n{log.read_text()[-3000:]}")


@pytest.mark.slow
def test_atft_serve_publishes_a_triggered_rolling_retrain_and_ctrl_c_stops_everything(tmp_path, small_market):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "2",  # the worker picks the run up within seconds
    }
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        serve = subprocess.Popen([str(ATFT), "serve", "--port", str(port)], cwd=tmp_path, env=env, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    family: set[int] = set()
    try:
        client = httpx.Client(base_url=api, timeout=30)

        def deployed():
            response = client.get("/deployments/name/rolling-retrain/demo")
            return response.json() if response.status_code == 200 and "Ctrl-C stops" in log.read_text() else None

        deployment = wait_for("rolling-retrain/demo deployed and a worker started", deployed, 300, serve, log)
        assert client.post("/concurrency_limits/filter", json={}).json()[0]["tag"] == "gpu"
        config = small_market(tmp_path, "deployed", source={"seed": 8}, retrain={"train_days": 60, "valid_days": 20},
                              evaluation={"eval_days": 20, "gates": ["rank_ic_5d >= -1"]})  # fmt: skip
        run = client.post(f"/deployments/{deployment['id']}/create_flow_run",
                          json={"parameters": {"config": config, "as_of": "2022-12-23"}}).json()  # fmt: skip

        def finished():
            family.update(descendants(serve.pid))  # the flow run's own processes too, while they live
            state = client.get(f"/flow_runs/{run['id']}").json()["state"]
            return state if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

        state = wait_for("the triggered run finished", finished, 600, serve, log)
        assert (state["type"], state["name"]) == ("COMPLETED", "Published"), state
        found = client.post("/artifacts/latest/filter", json={"artifacts": {"key": {"like_": "deployed"}}}).json()
        keys = {artifact["key"] for artifact in found}
        expected = {
            "ingest-deployed", "features-deployed-manifest", "train-deployed-progress", "evaluate-deployed-gates",
            "evaluate-deployed-metrics-5d", "publish-deployed-report", "retrain-deployed-report",
        }  # fmt: skip
        assert expected <= keys, keys
        report = next(a for a in found if a["key"] == "retrain-deployed-report")
        assert "Published" in report["data"] and str(tmp_path / "registry") in report["data"]

        family.update(descendants(serve.pid))
        assert len(family) >= 2  # at least the server and the worker
        serve.send_signal(signal.SIGINT)  # Ctrl-C
        assert serve.wait(timeout=120) == 0, log.read_text()[-3000:]
        left = sorted(pid for pid in family if alive(pid))
        assert not left, f"processes left behind: {left}"
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{api}/health", timeout=2)
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
        for pid in family | descendants(serve.pid):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
