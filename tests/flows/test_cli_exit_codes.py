"""Every ``python -m flows.<name>``, and ``atft``, exits non-zero when its run fails, 0 when it ends completed, and
says which.

Cron and CI read only the exit code. The failing cases are cheap: a files source whose file is missing, a warehouse
with no data, references to files that do not exist. Only the published retrain trains, one tiny epoch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
import yaml
from prefect.settings import PREFECT_API_URL
from prefect.states import Cancelled, Completed, Crashed, Failed, Pending, State

from atft.training.session import Windows
from flows import (
    backtest,
    command,
    demo,
    evaluate,
    features,
    ingest,
    monitor,
    publish,
    replay,
    retrain,
    score,
    train,
)  # fmt: skip
from flows.cli import exit_code
from flows.references import FeatureRef, GateVerdict, StagedModel, WarmStartRecord

REPO = Path(__file__).resolve().parents[2]
AS_OF = "2022-12-23"
HOLIDAY = "2022-11-03"  # Culture Day: the Tokyo exchange is closed
TRAIN = ["--train-start", "2022-05-02", "--train-end", "2022-08-31", "--valid-start", "2022-09-30", "--valid-end",
         "2022-10-31"]  # fmt: skip
EVAL = ["--eval-start", "2022-11-30", "--eval-end", "2022-12-28"]


@pytest.fixture
def broken(tmp_path: Path, small_market: Callable[..., str]) -> str:
    """The small market's config with a files source whose file does not exist; its warehouse was never written."""
    path = Path(small_market(tmp_path, "broken"))
    config = yaml.safe_load(path.read_text())
    config["source"] = {
        "kind": "files",
        "path": str(tmp_path / "missing.parquet"),
        "columns": {name: name for name in ("Code", "Date", "Open", "High", "Low", "Close", "Volume")},
    }
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _features(tmp_path: Path) -> FeatureRef:
    """A features reference whose manifest does not exist: train, evaluate and publish read it before anything else."""
    missing = str(tmp_path / "missing-manifest.json")
    return FeatureRef(table="features_x", manifest_sha256="0" * 64, manifest_path=missing, through=None, mode="full")


def _staged(tmp_path: Path) -> str:
    """A train result (JSON) trained on :func:`_features`."""
    return StagedModel(
        staging_dir=str(tmp_path / "staged"), model="atft_gat_fan", features=_features(tmp_path),
        windows=Windows(date(2022, 5, 2), date(2022, 8, 31), date(2022, 9, 30), date(2022, 10, 31)), best_epoch=1,
        member_best_epochs=[1], best_valid_rank_ic=0.0, collapsed=False, device="cpu", epochs_run=1,
        warm_start=WarmStartRecord(from_version=None, reason="train.warm_start is none"),
    ).model_dump_json()  # fmt: skip


def _gates(tmp_path: Path, passed: bool) -> str:
    """An evaluate result; a passed one needs no files: publishing fails on the manifest before reading them."""
    return GateVerdict(
        passed=passed, reasons=[] if passed else ["rank_ic_5d 0.01 below the bound 0.9"], champion=None,
        eval_start=date(2022, 11, 30), eval_end=date(2022, 12, 28), metrics_path=str(tmp_path / "metrics.json"),
        baselines_path=str(tmp_path / "baselines.json"), gates_path=str(tmp_path / "gates.json"),
        predictions_path=str(tmp_path / "predictions.parquet"),
    ).model_dump_json()  # fmt: skip


# Each entry point, its arguments for a run that must fail, and what the printed state names.
FAILING: dict[str, tuple[Callable[[list[str] | None], int], Callable[[str, Path], list[str]], str]] = {
    "ingest": (ingest.main, lambda config, tmp: [config], "missing.parquet"),
    "features": (features.main, lambda config, tmp: [config], "no raw quotes"),
    "train": (
        train.main,
        lambda config, tmp: [config, _features(tmp).model_dump_json(), *TRAIN],
        "missing-manifest.json",
    ),
    "evaluate": (evaluate.main, lambda config, tmp: [config, _staged(tmp), *EVAL], "missing-manifest.json"),
    "publish": (publish.main, lambda config, tmp: [config, _staged(tmp), _gates(tmp, True)], "missing-manifest.json"),
    "score": (score.main, lambda config, tmp: [config], "no raw quotes"),
    "monitor": (monitor.main, lambda config, tmp: [config], "no raw quotes"),
    "replay": (replay.main, lambda config, tmp: [config, "--start", "2022-10-03", "--end", AS_OF], "no raw quotes"),
    "retrain": (retrain.main, lambda config, tmp: [config, "--as-of", AS_OF], "missing.parquet"),
    "backtest": (backtest.main, lambda config, tmp: [config, "--start", "2022-10-03", "--end", AS_OF], "no raw quotes"),
    "demo": (demo.main, lambda config, tmp: ["--config", config], "missing.parquet"),
    "command": (command.main, lambda config, tmp: ["retrain", "--config", config, "--as-of", AS_OF], "missing.parquet"),
}


def test_every_entry_point_under_flows_is_covered() -> None:
    assert {path.stem for path in (REPO / "flows").glob("*.py") if "\ndef main(" in path.read_text()} == set(FAILING)


@pytest.mark.parametrize(
    ("state", "code"),
    [
        (Completed(), 0),
        (Completed(name="Published"), 0),
        (Completed(name="GateRejected"), 0),
        (Completed(name="Skipped"), 0),
        (Failed(), 1),
        (Crashed(), 1),
        (Cancelled(), 1),
        (Pending(), 1),
    ],
    ids=lambda value: value.name if isinstance(value, State) else str(value),
)
def test_only_completed_states_exit_zero(state: State, code: int) -> None:
    assert exit_code(state) == code


@pytest.mark.parametrize("entry", list(FAILING))
def test_a_failed_run_exits_non_zero_and_prints_its_state(
    entry: str, broken: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main, argv, named = FAILING[entry]
    assert main(argv(broken, tmp_path)) == 1
    out = capsys.readouterr().out
    assert "Failed: " in out and named in out.split("Failed: ", 1)[1]


def test_ingest_exits_zero_and_prints_its_summary(
    tmp_path: Path, small_market: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    config = small_market(tmp_path, "ingest_ok")
    assert ingest.main([config, "--start", "2022-12-01"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Completed\n") and "ingest ingest_ok (synthetic)" in out and "succeeded" in out


def test_retrain_on_a_holiday_exits_zero_as_skipped(broken: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert retrain.main([broken, "--as-of", HOLIDAY]) == 0  # nothing is read on a holiday, not even the source
    assert capsys.readouterr().out == f"Skipped: {HOLIDAY} is not a XTKS trading day: nothing to retrain\n"


def test_publish_exits_zero_when_the_gates_rejected_the_challenger(
    broken: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert publish.main([broken, _staged(tmp_path), _gates(tmp_path, False)]) == 0
    out = capsys.readouterr().out
    assert out == "GateRejected: gates rejected the challenger: rank_ic_5d 0.01 below the bound 0.9\n"


def test_a_malformed_reference_is_a_usage_error_naming_what_is_missing(
    broken: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        evaluate.main([broken, json.dumps({"staging_dir": str(tmp_path)}), *EVAL])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument staged: not a StagedModel (JSON)" in err and "features\n  Field required" in err


def test_python_m_flows_retrain_returns_non_zero_to_the_shell(broken: str) -> None:
    # The child talks to this session's harness server instead of starting a throwaway one of its own.
    env = os.environ | {"PREFECT_API_URL": PREFECT_API_URL.value()}
    done = subprocess.run(
        [sys.executable, "-m", "flows.retrain", broken, "--as-of", AS_OF],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Failed: " in done.stdout and "missing.parquet" in done.stdout
    assert "Starting temporary server" not in done.stderr


def test_retrain_exits_zero_when_it_publishes(
    tmp_path: Path, small_market: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The one test here that trains: the small market's one-epoch model, judged by lenient gates."""
    config = small_market(
        tmp_path,
        "publishes",
        retrain={"train_days": 60, "valid_days": 20},
        evaluation={"eval_days": 20, "gates": ["rank_ic_5d >= -1"]},
    )
    assert retrain.main([config, "--as-of", AS_OF]) == 0
    assert capsys.readouterr().out.startswith("Published: published ")
