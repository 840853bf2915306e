"""``python -m atft.registry``: what users see, and a non-zero exit with a message for every refusal."""

from __future__ import annotations

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


def test_verify_names_a_tampered_file(registry, published):
    version, _ = published()
    weights = Path(registry.storage.location(version)) / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    done = cli("--registry", registry.storage.location(), "verify")
    assert done.returncode == 1
    assert done.stdout.startswith(f"{version}  FAILED\n  - weights.safetensors was modified after publication: sha256 ")


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
