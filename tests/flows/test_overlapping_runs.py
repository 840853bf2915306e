"""Overlapping runs on one warehouse: an ingest, a score and a rolling retrain started at the same moment, in three
processes, all end in their normal states. Before the warehouse lock, whichever opened second failed at once with
DuckDB's ``Could not set lock on file``."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL

from atft.warehouse import Warehouse
from flows.retrain import rolling_retrain

REPO = Path(__file__).resolve().parents[2]
FIRST, NEXT = date(2022, 11, 25), date(2022, 12, 9)


@pytest.mark.slow
def test_an_ingest_a_score_and_a_retrain_started_together_all_finish_normally(tmp_path, small_market):
    config = small_market(
        tmp_path,
        "overlap",
        retrain={"train_days": 60, "valid_days": 20},
        evaluation={"eval_days": 20, "gates": ["rank_ic_5d >= -1"]},
    )
    # A champion to score with, and a warehouse that stops at its as-of date: the ingest below has days to add.
    assert rolling_retrain(config=config, as_of=FIRST, return_state=True).name == "Published"

    # The children report to this session's harness server rather than each starting a throwaway one.
    env = os.environ | {"PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(REPO)}
    commands = {
        "ingest": ["flows.ingest", config],
        "score": ["flows.score", config],
        "retrain": ["flows.retrain", config, "--as-of", NEXT.isoformat()],
    }
    children = {
        name: subprocess.Popen(
            [sys.executable, "-m", *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for name, args in commands.items()
    }
    outputs = {name: child.communicate(timeout=600) for name, child in children.items()}
    for name, child in children.items():
        out, err = outputs[name]
        assert child.returncode == 0, f"{name} exited {child.returncode}:\n{out[-2000:]}\n{err[-4000:]}"
        assert "Could not set lock" not in out + err
    assert outputs["ingest"][0].startswith("Completed")
    assert outputs["score"][0].startswith("Completed")
    assert outputs["retrain"][0].split(":")[0] in {"Published", "GateRejected"}

    with Warehouse(tmp_path / "market.duckdb", read_only=True) as wh:
        statuses = [e.status for e in wh.log_entries()]
        last_quote = wh.last_quote_date()
        scored = wh.con.execute("SELECT count(*) FROM predictions").fetchall()[0][0]
    assert "failed" not in statuses and "started" not in statuses
    assert last_quote == date(2022, 12, 28) and scored > 0
