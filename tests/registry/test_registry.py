"""Publishing: what a version holds, what is refused, atomicity under a killed or a concurrent publisher, rollback."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from atft import charts
from atft.registry import WINDOW_KEYS, PublishRefused, Registry, RegistryError
from atft.registry.integrity import CHECKSUMS, PAYLOAD, sha256
from atft.registry.provenance import LIBRARIES

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("publish_child.py")


def test_a_published_version_holds_every_file_and_metadata_item(registry, staged, manifest, publish_kwargs):
    _, staged_dir = staged()
    version = registry.publish(staged_dir, manifest, **publish_kwargs())
    directory = Path(registry.storage.location(version))
    assert sorted(p.name for p in directory.iterdir()) == sorted([*PAYLOAD, CHECKSUMS])
    recorded = json.loads((directory / CHECKSUMS).read_text())
    assert recorded == {"algorithm": "sha256", "files": {n: sha256((directory / n).read_bytes()) for n in PAYLOAD}}
    for name in ("weights.safetensors", "model.json", "history.json"):
        assert (directory / name).read_bytes() == (staged_dir / name).read_bytes()
    assert (directory / "manifest.json").read_text() == manifest.to_json()

    record = registry.show(version)
    meta = record.metadata
    assert meta["version"] == version and record.champion and record.passed and record.problems == ()
    created = datetime.fromisoformat(meta["created_at"])
    assert created.tzinfo is not None and abs(datetime.now(UTC) - created).total_seconds() < 60
    assert meta["model"] == "atft_gat_fan" and record.model["width"] == manifest.width
    assert record.model["manifest_sha256"] == meta["manifest_sha256"] == manifest.sha256
    assert meta["feature_table"] == manifest.table_name
    expected_windows = {k: str(v) for k, v in publish_kwargs()["windows"].items()}
    assert meta["windows"] == expected_windows and list(meta["windows"]) == list(WINDOW_KEYS)
    assert meta["data_fingerprint"] == publish_kwargs()["data_fingerprint"]
    # A commit of this checkout (HEAD itself may move on meanwhile: others commit while tests run).
    exists = subprocess.run(["git", "cat-file", "-e", f"{meta['code_version']}^{{commit}}"], cwd=REPO)
    assert re.fullmatch(r"[0-9a-f]{40}", meta["code_version"]) and exists.returncode == 0
    assert set(meta["libraries"]) == set(LIBRARIES) and meta["libraries"]["torch"].startswith("2.")
    assert meta["staged_from"] == str(staged_dir.resolve()) and meta["promote_on_publish"] is True
    assert record.metrics == publish_kwargs()["metrics"] and record.gates == publish_kwargs()["gates"]
    assert json.loads((directory / "history.json").read_text())[0]["epoch"] == 1

    predictions = registry.predictions(version).to_pandas()
    pd.testing.assert_frame_equal(predictions, publish_kwargs()["predictions"], check_dtype=False)


def test_charts_are_kept_with_the_version_covered_by_the_checksums(registry, staged, manifest, publish_kwargs):
    _, staged_dir = staged()
    image = charts.training_curves([{"epoch": 1, "train_loss": 1.0, "valid_rank_ic": {"5": 0.1}}])
    version = registry.publish(staged_dir, manifest, **publish_kwargs(), charts={"training": image})
    directory = Path(registry.storage.location(version))
    assert (directory / "chart-training.png").read_bytes() == image and registry.verify(version) == []
    (directory / "chart-training.png").write_bytes(image[:-10])  # a chart is checked like any other file
    assert any("chart-training.png" in problem for problem in registry.verify(version))
    for name, data in (("Training", image), ("evil", b"MZ not a png")):
        with pytest.raises(PublishRefused, match="must be a PNG named with lowercase letters"):
            registry.publish(staged_dir, manifest, **publish_kwargs(), charts={name: data})


def test_versions_are_listed_oldest_first_and_publishing_without_promotion_keeps_the_champion(registry, published):
    first, _ = published(seed=0)
    second, _ = published(seed=1, promote=False)
    assert [(r.version, r.champion) for r in registry.versions()] == [(first, True), (second, False)]
    assert registry.show().version == first
    registry.promote(second)
    assert registry.champion().champion == second and registry.champion().previous == (first,)


def test_a_gate_rejected_result_is_never_published(registry, staged, manifest, publish_kwargs, tmp_path):
    _, staged_dir = staged()
    rejected = {"passed": False, "results": [{"gate": "rank_ic_5d >= 0.01", "value": -0.02, "passed": False}]}
    with pytest.raises(PublishRefused, match=r"gates rejected .* \(failed: rank_ic_5d >= 0.01\); a rejected model"):
        registry.publish(staged_dir, manifest, **publish_kwargs(gates=rejected))
    with pytest.raises(PublishRefused, match=r"gates\['passed'\] is None, not True"):
        registry.publish(staged_dir, manifest, **publish_kwargs(gates={}))
    assert not (tmp_path / "registry").exists()


def test_weights_trained_against_another_manifest_are_refused(registry, staged, make_manifest, publish_kwargs):
    _, staged_dir = staged(manifest=make_manifest(code_version="other"))
    manifest = make_manifest()
    with pytest.raises(PublishRefused, match=rf"trained against manifest \w+, but the manifest is {manifest.sha256}"):
        registry.publish(staged_dir, manifest, **publish_kwargs())
    assert registry.versions() == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"windows": {"eval_end": None}}, r"windows need exactly .*; missing \['eval_end'\]"),
        ({"windows": {"eval_start": "2024-05-31", "eval_end": "2024-07-31"}}, r"ordered train < valid < eval"),
        ({"windows": {"train_end": "2024-03-28"}}, r"differ from the staged result's .*'train_end'"),
        ({"data_fingerprint": ""}, r"a data fingerprint"),
        ({"predictions": pd.DataFrame({"Date": [1], "code": ["1301"]})}, r"key columns \['Code', 'Date'\]"),
        ({"predictions": pa.table({"Date": pa.array([], pa.date32()), "Code": pa.array([], pa.string())})}, "0 rows"),
        ({"metrics": {"rank_ic_5d": object()}}, r"metrics.json cannot be stored as JSON"),
    ],
    ids=["window-missing", "eval-overlaps-valid", "window-not-staged", "fingerprint", "code-case", "empty", "metrics"],
)
def test_incomplete_or_inconsistent_metadata_is_refused(registry, staged, manifest, publish_kwargs, overrides, message):
    _, staged_dir = staged()
    kwargs = publish_kwargs() | overrides
    # Window overrides change single dates; None drops one.
    windows = publish_kwargs()["windows"] | overrides.get("windows", {})
    kwargs["windows"] = {k: v for k, v in windows.items() if v is not None}
    with pytest.raises(PublishRefused, match=message):
        registry.publish(staged_dir, manifest, **kwargs)
    assert registry.versions() == []


def test_an_incomplete_staged_directory_is_refused(registry, staged, manifest, publish_kwargs):
    _, staged_dir = staged()
    (staged_dir / "weights.safetensors").unlink()
    with pytest.raises(PublishRefused, match=r"is incomplete: cannot read weights.safetensors"):
        registry.publish(staged_dir, manifest, **publish_kwargs())


def test_rollback_is_one_call_back_through_every_former_champion(registry, published):
    first, _ = published(seed=0)
    second, _ = published(seed=1)
    third, _ = published(seed=2)
    assert registry.champion().previous == (first, second)
    assert registry.rollback() == second and registry.show().version == second
    assert registry.rollback() == first and registry.champion().previous == ()
    with pytest.raises(RegistryError, match=rf"no previous champion to roll back to: {first} is the only champion"):
        registry.rollback()
    assert registry.rollback(to=third) == third and registry.champion().previous == ()
    history = registry.champion().history
    assert [(e["action"], e["version"], e["replaced"]) for e in history] == [
        ("promote", first, None),
        ("promote", second, first),
        ("promote", third, second),
        ("rollback", second, third),
        ("rollback", first, second),
        ("rollback", third, first),
    ]


def test_rollback_to_a_former_champion_cuts_the_stack_back_to_it(registry, published):
    versions = [published(seed=i)[0] for i in range(4)]
    assert registry.rollback(to=versions[1]) == versions[1]
    assert registry.champion().previous == (versions[0],)
    with pytest.raises(RegistryError, match="is already the champion"):
        registry.rollback(to=versions[1])
    with pytest.raises(RegistryError, match=r"unknown version 'v2020' in .*; newest versions: v"):
        registry.rollback(to="v2020")


def test_discarding_a_version_removes_it_but_never_the_champion(registry, published):
    first, _ = published(seed=0)
    second, _ = published(seed=1)
    with pytest.raises(RegistryError, match="is the champion; roll back first"):
        registry.discard(second)
    registry.discard(first)
    assert [r.version for r in registry.versions()] == [second]
    assert not [p for p in registry.storage.root.iterdir() if p.name.startswith(".staging-")]


def test_withdrawing_a_promotion_restores_the_champion_it_replaced_or_none(registry, published):
    first, _ = published(seed=0)
    second, _ = published(seed=1)
    registry.withdraw(second)
    assert registry.champion().champion == first and registry.champion().previous == ()
    registry.withdraw(first)
    assert registry.champion().champion is None
    assert [e["action"] for e in registry.champion().history] == ["promote", "promote", "withdraw", "withdraw"]


def test_rollback_without_a_champion_says_why(registry, published):
    with pytest.raises(RegistryError, match=r"there is no champion \(nothing has been published yet\)"):
        registry.rollback()
    assert not Path(registry.storage.location()).exists()
    published(promote=False)
    with pytest.raises(RegistryError, match=r"nothing to roll back in .*: there is no champion"):
        registry.rollback()
    with pytest.raises(RegistryError, match=r"has no champion; name a version"):
        registry.load()


def test_unfinished_and_hand_made_directories_are_never_listed(registry, published):
    version, _ = published()
    root = Path(registry.storage.location())
    (root / ".staging-0123").mkdir()
    (root / ".staging-0123" / "weights.safetensors").write_bytes(b"half")
    (root / "v20240101T000000000000Z-abcdef").mkdir()  # a version id, but no checksum file
    assert [r.version for r in registry.versions()] == [version]
    with pytest.raises(RegistryError, match="unknown version 'v20240101T000000000000Z-abcdef'"):
        registry.show("v20240101T000000000000Z-abcdef")


def test_stale_staging_leftovers_are_removed_by_the_next_publish_and_young_ones_kept(registry, published):
    root = Path(registry.storage.location())
    root.mkdir()
    stale, young = root / ".staging-dead", root / ".staging-live"
    for directory in (stale, young):
        directory.mkdir()
        (directory / "weights.safetensors").write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    published()
    assert not stale.exists() and young.is_dir()


def _child_spec(tmp_path: Path, name: str, staged_dir: Path, manifest, publish_kwargs, **extra: object) -> Path:
    kwargs = publish_kwargs()
    predictions = tmp_path / f"{name}-predictions.parquet"
    kwargs.pop("predictions").to_parquet(predictions)
    spec = {
        "registry": str(tmp_path / "registry"),
        "staged": str(staged_dir),
        "manifest": str(manifest.write(tmp_path / f"{name}-manifest.json")),
        "predictions": str(predictions),
        "publish": kwargs,
        **extra,
    }
    path = tmp_path / f"{name}-spec.json"
    path.write_text(json.dumps(spec, default=str))
    return path


def _start(spec: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(CHILD), str(spec)]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, child: subprocess.Popen[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if child.poll() is not None:
            pytest.fail(f"publisher exited early ({child.returncode}): {child.communicate()[1]}")
        assert time.monotonic() < deadline, f"the publisher never wrote {path}"
        time.sleep(0.02)


@pytest.mark.parametrize("hold_after", [1, len(PAYLOAD) + 1], ids=["after-the-first-file", "before-the-rename"])
def test_a_publisher_killed_mid_publish_leaves_the_registry_as_it_was(
    registry, published, staged, manifest, publish_kwargs, tmp_path, scores, hold_after
):
    champion, champion_model = published(seed=0)
    _, staged_dir = staged(seed=1)
    held = tmp_path / "held.json"
    child = _start(_child_spec(tmp_path, "killed", staged_dir, manifest, publish_kwargs, hold_after=hold_after,
                               held=str(held)))  # fmt: skip
    try:
        _wait_for(held, child)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.communicate()
    state = json.loads(held.read_text())
    leftover = Path(state["staging"])
    assert leftover.name.startswith(".staging-") and len(state["written"]) == hold_after
    assert sorted(p.name for p in leftover.iterdir()) == sorted(state["written"])

    assert [r.version for r in registry.versions()] == [champion]
    loaded = registry.load()
    assert loaded.version == champion
    assert scores(loaded.model).equal(scores(champion_model))

    newer, _ = published(seed=2)
    assert [r.version for r in registry.versions()] == [champion, newer] and registry.verify(newer) == []
    assert registry.champion().champion == newer and registry.champion().previous == (champion,)
    assert leftover.is_dir()  # young: it might have been a live publisher's
    assert registry.discard_stale(max_age_s=0) == [leftover.name] and not leftover.exists()


def test_stale_cleanup_skips_a_live_staging_directory_renamed_into_place_after_the_listing(tmp_path, monkeypatch):
    """The race the concurrent publishers hit: one lists the root, another commits its staging meanwhile."""
    root = tmp_path / "registry"
    live, old = root / ".staging-live", root / ".staging-old"
    live.mkdir(parents=True)
    old.mkdir()
    os.utime(old, (0, 0))
    listing = list(root.iterdir())
    live.rename(root / "v1")
    monkeypatch.setattr(Path, "iterdir", lambda self: iter(listing))
    assert Registry(root).discard_stale(max_age_s=60) == [old.name]
    assert (root / "v1").is_dir() and not old.exists()


def test_concurrent_publishers_all_complete_and_no_promotion_is_lost(staged, manifest, publish_kwargs, tmp_path):
    """Threads, each with its own Registry, like separate workers: flock excludes other open files of the same
    process as it does other processes, and file I/O releases the GIL, so the publishes really interleave."""
    root = tmp_path / "registry"
    first = Registry(root).publish(staged(seed=0)[1], manifest, **publish_kwargs())
    staged_dirs = [staged(seed=i)[1] for i in range(1, 5)]
    barrier = threading.Barrier(len(staged_dirs))

    def publish(directory: Path) -> str:
        barrier.wait()
        return Registry(root).publish(directory, manifest, **publish_kwargs())

    with ThreadPoolExecutor(len(staged_dirs)) as pool:
        versions = list(pool.map(publish, staged_dirs))
    assert len(set(versions)) == len(versions)

    registry = Registry(root)
    assert [r.version for r in registry.versions()] == sorted([first, *versions])
    assert all(registry.verify(v) == [] for v in [first, *versions])
    state = json.loads((root / "champion.json").read_text())
    promoted = [e["version"] for e in state["history"]]
    assert sorted(promoted) == sorted([first, *versions])
    # Serialised by the lock: each promotion replaced the one before it, and the last one is the champion.
    assert [e["replaced"] for e in state["history"]] == [None, *promoted[:-1]]
    assert state["champion"] == promoted[-1] and state["previous"] == promoted[:-1]
    assert not list(root.glob(".staging-*")) and not list(root.glob(".*.tmp"))
    assert registry.verify_all()["champion.json"] == []  # events timestamped in the order the lock admitted them


# Each corrupts a real champion.json (a, b and c promoted, then rolled back to b) and returns the problems expected.
def _earlier(doc: dict, a: str, b: str, c: str) -> list[str]:
    doc["history"][1]["at"] = "2000-01-01T00:00:00.000000Z"
    first = doc["history"][0]["at"]
    return [f'history[1].at is "2000-01-01T00:00:00.000000Z", expected no earlier than history[0].at {first}']


def _not_the_last_event(doc: dict, a: str, b: str, c: str) -> list[str]:
    doc["champion"] = a
    return [f'champion is "{a}", expected "{b}", where the history leads (history[3].version)']


def _broken_chain(doc: dict, a: str, b: str, c: str) -> list[str]:
    doc["history"][2]["replaced"] = a
    return [f'history[2].replaced is "{a}", expected "{b}", the champion after history[1]']


def _stack(doc: dict, a: str, b: str, c: str) -> list[str]:
    doc["previous"] = [b, a]
    return [f'previous is ["{b}", "{a}"], expected ["{a}"], the former champions the history leaves']


def _missing_version(doc: dict, a: str, b: str, c: str) -> list[str]:
    gone = "v20990101T000000000000Z-f0f0f0"
    document = json.loads(json.dumps(doc).replace(a, gone))
    doc |= document
    return [
        f'previous[0] is "{gone}", expected a published version: a rollback returns to it',
        f'history[0].version is "{gone}", expected a published version (only a withdrawn one may be gone)',
    ]


def _missing_field(doc: dict, a: str, b: str, c: str) -> list[str]:
    del doc["history"][1]["replaced"]
    shown = json.dumps(doc["history"][1])
    return [f"history[1] is {shown}, expected an object with exactly the fields at, action, version, replaced"]


def _unknown_action(doc: dict, a: str, b: str, c: str) -> list[str]:
    doc["history"][3]["action"] = "demote"
    return ['history[3].action is "demote", expected one of promote, rollback, withdraw']


def _zoneless_time(doc: dict, a: str, b: str, c: str) -> list[str]:
    doc["history"][0]["at"] = "2024-06-14T09:30:00"
    return [
        'history[0].at is "2024-06-14T09:30:00", expected an ISO 8601 time with its zone, such as 2024-06-14T09:30:00Z'
    ]


def _promoting_nothing(doc: dict, a: str, b: str, c: str) -> list[str]:
    doc["history"][0]["version"] = None
    return ["history[0].version is null, expected a version id (null only in a withdraw)"]


def _not_a_list(doc: dict, a: str, b: str, c: str) -> list[str]:
    doc["history"] = {"0": doc["history"][0]}
    expected = "a list of promote, rollback and withdraw events, oldest first"
    return [f"history is {json.dumps(doc['history'])}, expected {expected}"]


def _unknown_field(doc: dict, a: str, b: str, c: str) -> list[str]:
    doc["owner"] = "ops"
    return ['owner is "ops", expected no such field: the fields are champion, previous, history']


def _no_previous(doc: dict, a: str, b: str, c: str) -> list[str]:
    del doc["previous"]
    return ["no field previous, expected the fields champion, previous, history"]


@pytest.mark.parametrize(
    "corrupt",
    [
        _earlier,
        _not_the_last_event,
        _broken_chain,
        _stack,
        _missing_version,
        _missing_field,
        _unknown_action,
        _zoneless_time,
        _promoting_nothing,
        _not_a_list,
        _unknown_field,
        _no_previous,
    ],
)
def test_verify_names_champion_json_the_field_the_value_and_what_was_expected(registry, published, corrupt):
    a, b, c = (published(seed=i)[0] for i in range(3))
    assert registry.rollback() == b  # history: promote a, b, c; roll back to b
    path = registry.storage.root / "champion.json"
    assert registry.verify_all() == {a: [], b: [], c: [], "champion.json": []}
    document = json.loads(path.read_text())
    expected = corrupt(document, a, b, c)
    path.write_text(json.dumps(document))
    assert registry.verify_all() == {a: [], b: [], c: [], "champion.json": [f"{path}: {e}" for e in expected]}


def test_a_withdrawn_and_discarded_promotion_still_verifies(registry, published):
    first, _ = published(seed=0)
    second, _ = published(seed=1)
    registry.withdraw(second)  # what the publish flow does when the new champion fails to load...
    registry.discard(second)  # ...before it removes the version
    registry.withdraw(first)  # and again, down to no champion at all
    assert registry.verify_all() == {first: [], "champion.json": []}


def test_a_discarded_former_champion_fails_verification(registry, published):
    first, _ = published(seed=0)
    second, _ = published(seed=1)
    registry.discard(first)  # allowed, but a rollback can no longer return to it
    path = registry.storage.root / "champion.json"
    assert registry.verify_all() == {
        second: [],
        "champion.json": [
            f'{path}: previous[0] is "{first}", expected a published version: a rollback returns to it',
            f'{path}: history[0].version is "{first}", expected a published version (only a withdrawn one may be gone)',
        ],
    }
