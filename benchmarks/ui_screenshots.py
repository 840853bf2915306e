"""The pictures in a real browser: a Prefect server, one rolling retrain and one monitor run of a small synthetic
market against it, then headless Chromium on the UI's pages of their image artifacts and of the retrain's run.

    .venv/bin/pip install -e '.[ui]'    # playwright, driving the system's Chromium (Debian: apt install chromium)
    .venv/bin/python benchmarks/ui_screenshots.py --out data/screenshots [--json data/screenshots/ui.json]

Each page is saved as a PNG. The check is the browser's own: every image on an artifact's page has finished loading
with a width (``img.complete && img.naturalWidth > 0``). The script exits 1 when an image did not load, or when a
run or the server failed. Nothing outside a temporary directory and ``--out`` is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import httpx
import yaml
from harness import finish

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from atft.calendar import TradingCalendar  # noqa: E402
from flows.serve import PREFECT, spawn, stop_children, wait_healthy  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
AS_OF, LATER = "2022-10-31", "2022-12-28"  # the retrain, and the monitor after a month of daily scores
IMAGES_LOADED = "() => [...document.images].map(i => ({src: i.src.slice(0, 30), ok: i.complete && i.naturalWidth > 0}))"


def small_market(tmp: Path) -> Path:
    """A 30-stock synthetic year, a two-epoch model, gates any trained model passes (no baselines: a challenger
    behind ridge would be rejected, and the monitor would have no champion): pictures, not skill."""
    config = {
        "name": "pictures",
        "source": {"kind": "synthetic", "seed": 6, "n_stocks": 30, "start": "2022-01-04", "end": "2022-12-28"},
        "universe": {"code_pattern": r"^\d{4}$"},
        "warehouse": {"path": str(tmp / "market.duckdb")},
        "features": {"cs_z": {"min_stocks": 10}, "manifest_dir": str(tmp / "manifests")},
        "model": {"lookback": 8, "hidden": 16, "var_hidden": 2, "fan_window": 4},
        "train": {"epochs": 2, "days_per_batch": 8, "staging_dir": str(tmp / "staging")},
        "retrain": {"train_days": 60, "valid_days": 20},
        "evaluation": {"eval_days": 20, "gates": ["rank_ic_5d >= -1"]},
        "monitor": {"window": 10},
        "registry": {"path": str(tmp / "registry")},
    }
    path = tmp / "pictures.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(env: dict[str, str], *argv: str) -> None:
    print("$ atft " + " ".join(argv), flush=True)
    done = subprocess.run([sys.executable, "-m", "flows.command", *argv], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=900)  # fmt: skip
    print(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "", flush=True)
    if done.returncode:
        raise SystemExit(f"atft {' '.join(argv)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def image_artifacts(api: str) -> list[dict]:
    response = httpx.post(f"{api}/artifacts/filter", json={"artifacts": {"type": {"any_": ["image"]}}}, timeout=30)
    response.raise_for_status()
    return response.json()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "data" / "screenshots")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="atft-ui-") as tmp:
        port = free_port()
        ui, api = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/api"
        env = os.environ | {"PREFECT_HOME": tmp, "PREFECT_API_URL": api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        server = spawn([*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env)
        try:
            wait_healthy(api, server, lambda: False)
            config = str(small_market(Path(tmp)))
            run(env, "retrain", "--config", config, "--as-of", AS_OF)
            run(env, "ingest", "--config", config)
            # A month of daily scores after the retrain, then the monitor once their 5-day labels are in.
            for day in TradingCalendar("XTKS").sessions(date(2022, 11, 1), date(2022, 12, 1)):
                run(env, "score", "--config", config, "--as-of", str(day.date()))
            run(env, "monitor", "--config", config, "--as-of", LATER)
            artifacts = image_artifacts(api)
            pages = {f"artifact-{a['key']}": f"{ui}/artifacts/artifact/{a['id']}" for a in artifacts}
            retrain_run = next(a["flow_run_id"] for a in artifacts if a["key"].startswith("evaluate-"))
            pages["run-evaluate"] = f"{ui}/runs/flow-run/{retrain_run}"
            results = {}
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                for name, url in pages.items():
                    page.goto(url, wait_until="networkidle", timeout=60_000)
                    page.wait_for_timeout(1500)  # the UI renders after its API calls return
                    images = [i for i in page.evaluate(IMAGES_LOADED) if i["src"].startswith("data:image/png")]
                    page.screenshot(path=str(args.out / f"{name}.png"), full_page=True)
                    results[name] = {"url": url, "charts": len(images), "loaded": sum(i["ok"] for i in images)}
                    print(f"{name}: {results[name]['loaded']} of {len(images)} charts loaded", flush=True)
                browser.close()
        finally:
            stop_children([server])
    artifact_pages = {k: v for k, v in results.items() if k.startswith("artifact-")}
    passed = bool(artifact_pages) and all(r["charts"] >= 1 and r["loaded"] == r["charts"] for r in
                                          artifact_pages.values())  # fmt: skip
    summary = {"pages": results, "image_artifacts": len(artifact_pages), "passed": passed,
               "seconds": round(time.perf_counter() - began, 1), "screenshots": str(args.out)}  # fmt: skip
    print(json.dumps(summary, indent=2))
    finish(passed, args.json, summary)


if __name__ == "__main__":
    main()
