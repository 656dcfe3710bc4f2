"""cpu-contention: ``stress-ng --cpu N --cpu-load L`` pinned to the node's cores, inside the node's cgroups.

Verify: the stressor processes are alive and burn CPU (their utime+stime rate over a short window).
Recover: kill every process carrying the fault's marker.
"""

from __future__ import annotations

import os
import time
from typing import Any

from harness.backends.base import Testbed
from harness.faults import targets
from harness.faults.base import Evidence, Handle, base_handle
from harness.faults.catalog import FAULTS
from harness.faults.mech import procs

SPEC = FAULTS["cpu-contention"]
MIN_BUSY_SHARE = 0.02  # verified once it burns this share of what it asked for (an overloaded machine gives little)


class CpuContentionHandle(Handle):
    argv: list[str]
    cgroup_dirs: list[str]
    cpus: list[int]
    expected_cores: float  # what the stressor should burn when unhindered
    pids: list[int]


def preflight(testbed: Testbed, step: Any) -> None:
    targets.need_binaries(SPEC.id, "stress-ng")
    node = targets.node(testbed, step)
    if node.cgroups:
        targets.need_root(SPEC.id)


def prepare(testbed: Testbed, step: Any, key: str) -> CpuContentionHandle:
    node = targets.node(testbed, step)
    cpus = list(node.cpus) or sorted(os.sched_getaffinity(0))
    p = step.params
    argv = ["stress-ng", "--cpu", str(p.workers), "--cpu-load", str(p.load), "--taskset",
            ",".join(map(str, cpus)), "--timeout", "0", "--quiet"]
    return CpuContentionHandle(**base_handle(SPEC, step, key), argv=argv,
                               cgroup_dirs=list(dict.fromkeys(node.cgroups.values())), cpus=cpus,
                               expected_cores=min(p.workers * p.load / 100, len(cpus)), pids=[])


def inject(handle: CpuContentionHandle, testbed: Testbed) -> CpuContentionHandle:
    proc = procs.spawn(handle["argv"], handle["key"], cgroup_dirs=handle["cgroup_dirs"], cpus=handle["cpus"])
    return {**handle, "pids": [proc.pid]}


def busy_rate(marker: str, sessions: list[int], window: float = 0.5) -> tuple[int, float]:
    """(process count, CPU seconds per second) of the fault's processes over ``window``."""
    pids = procs.find_marked(marker, sessions)
    before = sum(procs.cpu_seconds(p) for p in pids)
    time.sleep(window)
    return len(pids), (sum(procs.cpu_seconds(p) for p in pids) - before) / window


def verify(handle: CpuContentionHandle, testbed: Testbed) -> Evidence | None:
    n, rate = busy_rate(handle["key"], handle["pids"])
    # stress-ng parent + its workers alive and burning CPU; a loaded machine leaves them little, hence the low bar
    if n < 2 or rate < MIN_BUSY_SHARE * handle["expected_cores"]:
        return None
    return Evidence("stressor CPU", rate, f"{n} stress-ng processes using {rate:.2f} cores "
                    f"(expected {handle['expected_cores']:g} on cores {handle['cpus']})",
                    {"processes": n, "pressure_some_avg10": _psi()})


def _psi() -> float:
    try:
        line = open("/proc/pressure/cpu").readline()
    except OSError:
        return -1.0
    return float(line.split()[1].split("=")[1])


def recover(handle: CpuContentionHandle) -> None:
    procs.kill_marked(handle["key"], handle.get("pids", []))
