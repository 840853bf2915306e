"""Torch's CPU threads on a shared host: as many as the cores this process may use and others leave free.

Torch's intra-op threads meet at a barrier after every operation. With more busy threads than cores, every
operation waits for a thread that has no core, and a waiting thread that spins takes a core from the one it waits
for: beside a single busy process, training ran at 0.11x of its speed alone. So:

- the cores a process may use are its CPU affinity, capped by a cgroup CPU quota where there is one;
- ``train.threads: auto`` (the default) measures, every few seconds, how much of those cores other processes use
  (``/proc/stat`` minus this process's own CPU time) and runs on the rest, at least one thread. Two trainings side by
  side settle on one thread each; when the other ends, the survivor takes both cores back;
- a waiting OpenMP thread spins for ``GOMP_SPINCOUNT`` = 10,000 iterations, then sleeps (libgomp's default is
  300,000). libgomp reads it once, when torch is loaded, so ``atft`` sets it on import (see ``atft/__init__``)
  unless the environment already has it; a process that imported torch first keeps libgomp's default, and says so.

A pinned ``train.threads: N`` never changes. Results are bit-for-bit reproducible only at a pinned count: the
thread count changes the order of floating-point sums.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

INTERVAL_S = 5.0  # how often ``auto`` looks at the host again
_PRIME_S = 0.2  # the first look, before any work


@dataclass(frozen=True)
class CoreBudget:
    """The cores this process may use: its CPU affinity, capped by a cgroup CPU quota (in cores) if any."""

    cpus: frozenset[int]
    quota: float | None = None

    @property
    def usable(self) -> int:
        cores = len(self.cpus)
        return cores if self.quota is None else max(1, min(cores, math.floor(self.quota)))

    def describe(self) -> str:
        quota = "no cgroup CPU quota" if self.quota is None else f"cgroup quota {self.quota:g} cores"
        return f"{self.usable} usable cores (affinity {len(self.cpus)}, {quota})"


def core_budget(cgroup_root: Path = Path("/sys/fs/cgroup"), proc_self: Path = Path("/proc/self")) -> CoreBudget:
    """This process's :class:`CoreBudget`; the quota comes from its own cgroup (v2 or v1), the tightest on the path."""
    try:
        membership = (proc_self / "cgroup").read_text()
    except OSError:
        membership = ""
    return CoreBudget(frozenset(os.sched_getaffinity(0)), cgroup_quota(cgroup_root, membership))


def cgroup_quota(root: Path, membership: str) -> float | None:
    """The CPU quota in cores of the cgroup named by ``membership`` (the text of /proc/self/cgroup), or None.

    A limit set on any ancestor applies too, so the tightest along the path wins."""
    quotas = []
    for line in membership.splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: "0::/path", cpu.max holds "<quota> <period>" or "max <period>"
            quotas += [_v2_quota(d / "cpu.max") for d in _ancestors(root, path)]
        elif "cpu" in controllers.split(","):  # v1: cpu.cfs_quota_us is -1 when unlimited
            base = root / controllers
            quotas += [_v1_quota(d) for d in _ancestors(base if base.exists() else root / "cpu", path)]
    found = [q for q in quotas if q is not None]
    return min(found) if found else None


def _ancestors(base: Path, path: str) -> list[Path]:
    parts = [p for p in path.strip("/").split("/") if p]
    return [base.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _v2_quota(path: Path) -> float | None:
    try:
        quota, period = path.read_text().split()
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _v1_quota(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 else quota / period


class HostLoad:
    """Cores of ``cpus`` that other processes kept busy since the previous :meth:`sample`.

    Busy time of those CPUs from ``/proc/stat`` minus this process's own CPU time, per second of wall time. None where
    ``/proc/stat`` cannot be read (not Linux), and on the first call."""

    def __init__(
        self, cpus: frozenset[int], stat: Path = Path("/proc/stat"), own: Callable[[], float] | None = None
    ) -> None:
        self.cpus, self.stat, self.own = cpus, stat, own or _own_cpu_seconds
        self._last: tuple[float, float, float] | None = None
        self._tick = os.sysconf("SC_CLK_TCK")

    def sample(self) -> float | None:
        now = (time.monotonic(), self._busy_seconds(), self.own())
        last, self._last = self._last, now
        if last is None or math.isnan(now[1]) or now[0] - last[0] <= 0:
            return None
        others = (now[1] - last[1]) - (now[2] - last[2])
        return max(0.0, others / (now[0] - last[0]))

    def _busy_seconds(self) -> float:
        try:
            lines = self.stat.read_text().splitlines()
        except OSError:
            return math.nan
        busy = 0
        for line in lines:
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in self.cpus:
                user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
                busy += user + nice + system + irq + softirq + steal
        return busy / self._tick


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def threads_for(usable: int, others: float) -> int:
    """Threads on the cores that others leave free, rounded to the nearest core; at least one, at most ``usable``."""
    return max(1, min(usable, math.floor(usable - others + 0.5)))


ThreadSetting = int | Literal["auto"]


class ThreadGovernor:
    """Sets ``torch.set_num_threads`` for this process: pinned, or ``auto`` from the host's load every few seconds.

    :meth:`tick` is called once per batch; it only looks at the host when ``interval_s`` has passed. Changes are kept
    in :attr:`changes` ("2 -> 1 threads: other processes use 1.0 of 2 cores")."""

    def __init__(
        self, setting: ThreadSetting, budget: CoreBudget, load: HostLoad | None = None, interval_s: float = INTERVAL_S
    ) -> None:
        self.setting, self.budget, self.interval_s = setting, budget, interval_s
        self.load = load if load is not None else HostLoad(budget.cpus)
        self.changes: list[str] = []
        self._due = 0.0
        if setting == "auto":
            self.load.sample()
            time.sleep(_PRIME_S)
            self._apply(self.load.sample())
        else:
            torch.set_num_threads(setting)

    @property
    def threads(self) -> int:
        return torch.get_num_threads()

    def tick(self) -> int:
        if self.setting == "auto" and time.monotonic() >= self._due:
            self._apply(self.load.sample())
        return self.threads

    def _apply(self, others: float | None) -> None:
        self._due = time.monotonic() + self.interval_s
        threads = self.budget.usable if others is None else threads_for(self.budget.usable, others)
        before = torch.get_num_threads()
        if threads != before:
            torch.set_num_threads(threads)
            load = "unknown" if others is None else f"{others:.1f}"
            self.changes.append(f"{before} -> {threads} threads: other processes use {load} of {self.budget.usable}")

    def describe(self) -> str:
        mode = "auto (follows the host's load)" if self.setting == "auto" else "pinned"
        return f"{self.threads} torch threads, {mode}; {self.budget.describe()}; {wait_policy()}"


def wait_policy() -> str:
    """How waiting OpenMP threads behave in this process, as libgomp read it when torch was loaded."""
    import atft

    spins = atft.GOMP_SPINCOUNT_AT_TORCH_LOAD
    if spins is None:
        return "waiting threads spin libgomp's default 300,000 iterations (torch was loaded before atft)"
    return f"waiting threads spin {int(spins):,} iterations, then sleep"


_governor: ThreadGovernor | None = None


def govern(setting: ThreadSetting) -> ThreadGovernor:
    """The process's governor for ``setting``: one per process, since torch's thread count is process-wide."""
    global _governor
    if _governor is None or _governor.setting != setting:
        _governor = ThreadGovernor(setting, core_budget())
    return _governor


def tick() -> int:
    """Let the process's governor look at the host if it is due; the thread count to use now."""
    return _governor.tick() if _governor is not None else torch.get_num_threads()
