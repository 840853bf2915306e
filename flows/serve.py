"""``atft serve``: the local stack in one command. It starts the Prefect server (API and UI), creates the process
work pool and the one-training-at-a-time ``gpu`` concurrency limit, deploys every deployment of ``prefect.yaml``,
and starts a worker. Ctrl-C stops the worker, then the server, and leaves no process behind.

It runs what deployments/README.md lists as five commands in several terminals. The server keeps its database under
``PREFECT_HOME`` (Prefect's own default, ``~/.prefect``, unless the environment sets it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
POOL = "atft-process"
PREFECT = [sys.executable, "-m", "prefect"]
HEALTHY_WITHIN_S = 120
STOP_WITHIN_S = 30


class ServeError(RuntimeError):
    """A step of bringing the stack up failed; the message names it and carries its output."""


def serve(host: str = "127.0.0.1", port: int = 4200, poll_s: float = 1.0) -> int:
    """Bring the stack up, then wait until Ctrl-C (SIGINT) or SIGTERM, or until the server or the worker exits;
    stop both either way. Returns 0 after a requested stop, 1 when a step failed or a child died on its own."""
    api = f"http://{host}:{port}/api"
    env = os.environ | {"PREFECT_API_URL": api, "PWD": str(REPO)}  # prefect.yaml resolves the checkout from PWD
    children: list[subprocess.Popen] = []
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"starting the Prefect server on {host}:{port} ...", flush=True)
        children.append(spawn([*PREFECT, "server", "start", "--host", host, "--port", str(port)], env))
        wait_healthy(api, children[0], lambda: stopping)
        _prefect(env, "work-pool", "create", POOL, "--type", "process", "--overwrite")
        _prefect(env, "concurrency-limit", "create", "gpu", "1")
        _prefect(env, "--no-prompt", "deploy", "--all")
        children.append(spawn([*PREFECT, "worker", "start", "--pool", POOL], env))
        print(f"UI at http://{host}:{port}  (API {api})", flush=True)
        print(f"work pool {POOL} with a worker, concurrency limit gpu=1, every deployment of prefect.yaml", flush=True)
        print(f"try: PREFECT_API_URL={api} prefect deployment run rolling-retrain/demo", flush=True)
        print("Ctrl-C stops the worker and the server", flush=True)
        while not stopping:
            died = next((c for c in children if c.poll() is not None), None)
            if died is not None:
                print(f"error: {' '.join(died.args[3:5])} exited with {died.returncode}", file=sys.stderr)
                return 1
            time.sleep(poll_s)
        return 0
    except ServeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_children(reversed(children))
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    # Its own process group: Ctrl-C reaches this process only, which then stops the children in order.
    return subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, start_new_session=True)


def wait_healthy(api: str, server: subprocess.Popen, stopping: Callable[[], bool]) -> None:
    deadline = time.monotonic() + HEALTHY_WITHIN_S
    while time.monotonic() < deadline and not stopping():
        if server.poll() is not None:
            raise ServeError(f"the Prefect server exited with {server.returncode} before it was healthy")
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise ServeError(f"the Prefect server at {api} was not healthy within {HEALTHY_WITHIN_S} s")


def _prefect(env: dict[str, str], *args: str) -> None:
    print(f"prefect {' '.join(args)}", flush=True)
    done = subprocess.run([*PREFECT, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise ServeError(f"prefect {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def stop_children(children: Iterable[subprocess.Popen]) -> None:
    """SIGTERM each child's process group (the worker's flow-run processes included), then SIGKILL what is left."""
    for child in children:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
            try:
                child.wait(timeout=STOP_WITHIN_S)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)  # anything its group left behind
