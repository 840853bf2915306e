"""What every benchmark here shares: each phase runs in its own process, so its peak RSS is its own."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_phase(script: str, phase: str, options: list[str]) -> dict:
    """Run ``script --phase PHASE *options`` in a fresh interpreter; the last line of its output is JSON."""
    done = subprocess.run([sys.executable, script, "--phase", phase, *options], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"benchmark phase {phase} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def finish(passed: bool, json_path: Path | None, results: object) -> None:
    """Write the results as JSON when asked, then exit 1 if a target was missed, so that ``make bench`` fails."""
    if json_path:
        json_path.write_text(json.dumps(results, indent=2, default=str))
    if not passed:
        sys.exit(1)
