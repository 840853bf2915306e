"""``python -m atft.registry``: what users see, and a non-zero exit with a message for every refusal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "atft.registry", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_list_marks_the_champion_and_shows_the_primary_metric_and_gates(registry, published):
    first, _ = published(seed=0)
    second, _ = published(seed=1)
    done = cli("--registry", registry.storage.location(), "list")
    assert done.returncode == 0, done.stderr
    header, *rows, _, footer = done.stdout.splitlines()
    assert header.split() == ["VERSION", "CREATED", "(UTC)", "MODEL", "rank_ic_5d", "GATES"]
    assert rows[0].split()[0] == first and rows[1].split()[:2] == ["*", second]
    assert all(row.split()[-3:] == ["atft_gat_fan", "0.0310", "pass"] for row in rows)
    assert footer == f"2 version(s); champion: {second} (*)"


def test_show_prints_metadata_windows_fingerprint_code_metrics_and_gates(registry, published, publish_kwargs):
    version, _ = published()
    done = cli("--registry", registry.storage.location(), "show", version)
    assert done.returncode == 0, done.stderr
    lines = [line.rstrip() for line in done.stdout.splitlines()]
    meta = registry.show(version).metadata
    expected = [
        f"version      {version}  (champion)",
        f"created      {meta['created_at'][:10]} {meta['created_at'][11:19]} UTC",
        "model        atft_gat_fan: 6 inputs; horizons 1d 5d; 1,510 parameters",
        f"manifest     {meta['manifest_sha256']} (feature table {meta['feature_table']})",
        "windows      train  2024-01-04 .. 2024-03-29",
        "             valid  2024-04-10 .. 2024-05-31",
        "             eval   2024-06-14 .. 2024-07-31",
        f"data         fingerprint {publish_kwargs()['data_fingerprint']}",
        f"code         {meta['code_version']}",
    ]
    assert lines[: len(expected)] == expected
    assert lines[len(expected)].startswith("libraries    torch 2.")
    for line in [
        "training     best epoch 1, validation RankIC 0.0500",
        "metrics      rank_ic_1d               0.0210",
        "             rank_ic_5d               0.0310",
        "gates        passed",
        "             PASS  rank_ic_5d >= 0.01  (value 0.0310)",
        "checksums    every file matches its recorded sha256",
    ]:
        assert line in lines, f"{line!r} not in:\n{done.stdout}"
    champion = cli("--registry", registry.storage.location(), "show")
    assert champion.stdout == done.stdout


def test_rollback_from_the_command_line(registry, published):
    first, _ = published(seed=0)
    second, _ = published(seed=1)
    root = registry.storage.location()
    done = cli("--registry", root, "rollback")
    assert (done.returncode, done.stdout) == (0, f"champion is now {first} (was {second})\n")
    assert registry.champion().champion == first
    again = cli("--registry", root, "rollback")
    assert again.returncode == 1 and again.stderr.startswith(f"error: no previous champion to roll back to: {first}")
    forward = cli("--registry", root, "rollback", "--to", second)
    assert forward.returncode == 0 and registry.champion().champion == second


def test_refusals_exit_non_zero_with_a_message(registry, published, tmp_path):
    empty = cli("--registry", str(tmp_path / "nothing"), "list")
    assert (empty.returncode, empty.stdout) == (1, "")
    assert empty.stderr == f"error: the registry at {tmp_path / 'nothing'} is empty: nothing has been published yet\n"
    assert not (tmp_path / "nothing").exists()
    version, _ = published()
    unknown = cli("--registry", registry.storage.location(), "show", "v1999")
    assert unknown.returncode == 1 and "error: unknown version 'v1999' in " in unknown.stderr
    assert version in unknown.stderr
    usage = cli("list")
    assert usage.returncode == 2 and "one of the arguments --registry --config is required" in usage.stderr


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every path under ``root`` with its content and modification time: what a read-only command must not touch."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"", p.stat().st_mtime_ns)
        for p in [root, *root.rglob("*")]
    }


def test_verify_passes_a_clean_registry_and_writes_nothing(registry, published):
    first, _ = published(seed=0)
    second, _ = published(seed=1)
    third, _ = published(seed=2)
    registry.rollback()
    root = Path(registry.storage.location())
    before = snapshot(root)
    done = cli("--registry", str(root), "verify")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"{first}  ok\n{second}  ok\n{third}  ok\nchampion.json  ok\n"
    assert snapshot(root) == before


def test_verify_names_a_tampered_file(registry, published):
    version, _ = published()
    weights = Path(registry.storage.location(version)) / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    done = cli("--registry", registry.storage.location(), "verify")
    assert done.returncode == 1
    tampered = "weights.safetensors was modified after publication: sha256 "
    assert done.stdout.startswith(f"{version}  FAILED\n  - {tampered}")
    *_, header, problem = done.stdout.splitlines()
    assert header == "champion.json  FAILED"
    champion = f"{registry.storage.location()}/champion.json"
    assert problem.startswith(
        f'  - {champion}: champion is "{version}", expected an intact version; it failed verification: {tampered}'
    )


def test_verify_fails_a_champion_json_naming_a_missing_version(registry, published):
    version, _ = published()
    path = Path(registry.storage.location()) / "champion.json"
    missing = "v20990101T000000000000Z-f0f0f0"
    path.write_text(json.dumps({**json.loads(path.read_text()), "champion": missing}))
    done = cli("--registry", registry.storage.location(), "verify")
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        f"{version}  ok",
        "champion.json  FAILED",
        f'  - {path}: champion is "{missing}", expected a published version or null',
        f'  - {path}: champion is "{missing}", expected "{version}", where the history leads (history[0].version)',
    ]


def test_verify_reports_an_unparseable_champion_json_and_still_checks_every_version(registry, published):
    version, _ = published()
    path = Path(registry.storage.location()) / "champion.json"
    path.write_text('{"champion": ')
    done = cli("--registry", registry.storage.location(), "verify")
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        f"{version}  ok",
        "champion.json  FAILED",
        f"  - {path} is not valid JSON: Expecting value: line 1 column 14 (char 13)",
    ]
    one = cli("--registry", registry.storage.location(), "verify", version)  # one version: champion.json not read
    assert (one.returncode, one.stdout) == (0, f"{version}  ok\n")


def test_verify_fails_an_inconsistent_history(registry, published):
    first, _ = published(seed=0)
    second, _ = published(seed=1)
    path = Path(registry.storage.location()) / "champion.json"
    document = json.loads(path.read_text())
    document["history"][1]["replaced"] = second
    path.write_text(json.dumps(document))
    done = cli("--registry", registry.storage.location(), "verify")
    assert done.returncode == 1
    assert done.stdout.splitlines()[2:] == [
        "champion.json  FAILED",
        f'  - {path}: history[1].replaced is "{second}", expected "{first}", the champion after history[0]',
    ]


def test_a_pipeline_config_names_the_registry_and_the_primary_metric(registry, published, tmp_path):
    version, _ = published()
    config = tmp_path / "pipeline.yaml"
    document = {
        "name": "test",
        "source": {"kind": "synthetic"},
        "registry": {"path": registry.storage.location()},
        "evaluation": {"champion_metric": "sharpe_5d"},
    }
    config.write_text(yaml.safe_dump(document))
    done = cli("--config", str(config), "list")
    assert done.returncode == 0, done.stderr
    assert "sharpe_5d" in done.stdout.splitlines()[0] and "1.1200" in done.stdout and version in done.stdout
    demo = cli("--config", str(REPO / "deployments" / "demo.yaml"), "list", cwd=tmp_path)
    assert demo.returncode == 1 and "error: the registry at data/registry/demo is empty" in demo.stderr
    config.write_text(yaml.safe_dump({**document, "registry": {"paht": "x"}}))
    typo = cli("--config", str(config), "list")
    assert typo.returncode == 1 and "unknown key 'registry.paht'" in typo.stderr
