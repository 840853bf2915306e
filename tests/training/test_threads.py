"""The thread policy: the cores a process may use (affinity, cgroup quota), the load other processes put on them,
and a governor that follows that load on a real host."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from atft.threads import CoreBudget, HostLoad, ThreadGovernor, cgroup_quota, core_budget, threads_for

CPUS = frozenset(range(4))


def test_a_cgroup_v2_quota_is_the_tightest_on_the_path(tmp_path):
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "cpu.max").write_text("300000 100000\n")
    (tmp_path / "jobs" / "train").mkdir()
    (tmp_path / "jobs" / "train" / "cpu.max").write_text("150000 100000\n")
    assert cgroup_quota(tmp_path, "0::/jobs/train\n") == 1.5
    assert cgroup_quota(tmp_path, "0::/\n") is None
    assert CoreBudget(CPUS, 1.5).usable == 1
    assert CoreBudget(CPUS, 0.5).usable == 1  # a fraction of one core still runs one thread
    assert CoreBudget(CPUS, None).usable == 4


def test_a_cgroup_v1_quota_and_an_unlimited_one(tmp_path):
    group = tmp_path / "cpu,cpuacct" / "job"
    group.mkdir(parents=True)
    (group / "cpu.cfs_quota_us").write_text("200000\n")
    (group / "cpu.cfs_period_us").write_text("100000\n")
    membership = "4:memory:/job\n3:cpu,cpuacct:/job\n"
    assert cgroup_quota(tmp_path, membership) == 2.0
    (group / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_quota(tmp_path, membership) is None


def test_this_process_budget_is_its_affinity_here():
    budget = core_budget()
    assert budget.cpus == frozenset(os.sched_getaffinity(0))
    assert 1 <= budget.usable <= len(budget.cpus)
    assert "usable cores" in budget.describe()


def _stat(user: dict[int, int]) -> str:
    lines = ["cpu  0 0 0 0 0 0 0 0 0 0"]
    lines += [f"cpu{c} {ticks} 0 0 1000 0 0 0 0 0 0" for c, ticks in user.items()]
    return "\n".join(lines) + "\n"


def test_host_load_is_busy_time_of_our_cpus_minus_our_own(tmp_path):
    stat = tmp_path / "stat"
    own = iter([10.0, 10.5])
    load = HostLoad(frozenset({0, 1}), stat, own=lambda: next(own))
    tick = os.sysconf("SC_CLK_TCK")
    stat.write_text(_stat({0: 0, 1: 0, 2: 0}))
    assert load.sample() is None  # nothing to compare with yet
    time.sleep(0.5)
    # cpu0 and cpu1 busy 1.5 s between the samples (cpu2 is not ours); we used 0.5 s of it ourselves.
    stat.write_text(_stat({0: tick, 1: tick // 2, 2: 100 * tick}))
    others = load.sample()
    assert others == pytest.approx(1.0 / 0.5, rel=0.1)


@pytest.mark.parametrize(("usable", "others", "threads"), [(2, 0.05, 2), (2, 1.0, 1), (2, 2.0, 1), (4, 1.4, 3)])
def test_threads_run_on_the_cores_others_leave_free(usable, others, threads):
    assert threads_for(usable, others) == threads


def test_a_pinned_count_never_changes():
    before = torch.get_num_threads()
    try:
        governor = ThreadGovernor(1, CoreBudget(CPUS), interval_s=0.0)
        assert governor.tick() == 1
        assert "pinned" in governor.describe()
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to share one")
def test_auto_gives_a_core_to_a_busy_process_and_takes_it_back_when_it_ends():
    before = torch.get_num_threads()
    budget = CoreBudget(frozenset(sorted(os.sched_getaffinity(0))[:2]))
    torch.set_num_threads(2)  # an earlier test may have left one thread, and then no change would be recorded
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        os.sched_setaffinity(busy.pid, {min(budget.cpus)})
        governor = ThreadGovernor("auto", budget, interval_s=1.0)
        time.sleep(1.2)
        assert governor.tick() == 1, governor.changes
        busy.kill()
        busy.wait()
        time.sleep(1.2)
        assert governor.tick() == 2, governor.changes
        assert any("2 -> 1 threads" in change for change in governor.changes), governor.changes
        assert governor.changes[-1].startswith("1 -> 2 threads"), governor.changes
    finally:
        busy.kill()
        torch.set_num_threads(before)


def _spin_report(*imports: str) -> str:
    code = "; ".join([*(f"import {name}" for name in imports), "from atft.threads import wait_policy"])
    code += "; print(wait_policy())"
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


def test_importing_the_library_before_torch_shortens_the_spin_and_torch_first_says_so():
    assert "10,000 iterations" in _spin_report("atft", "torch")
    assert "torch was loaded before atft" in _spin_report("torch", "atft")
