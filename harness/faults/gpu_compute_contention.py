"""gpu-compute-contention: real GEMM hog processes pinned to the rank's core(s), inside the rank's node cgroups.

The local stand-in for another workload sharing the rank's GPU (cluster: dcgmproftester / a GEMM hog pod): the
rank's compute (its "kernels") competes for the same cores and stretches. Verify: the hogs are alive and burn
CPU. Recover: kill every process carrying the fault's marker.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from harness.backends.base import Testbed
from harness.faults import targets
from harness.faults.base import Evidence, Handle, base_handle
from harness.faults.catalog import FAULTS
from harness.faults.cpu_contention import MIN_BUSY_SHARE, busy_rate
from harness.faults.mech import procs

SPEC = FAULTS["gpu-compute-contention"]


class GpuComputeContentionHandle(Handle):
    argv: list[str]
    workers: int
    cgroup_dirs: list[str]
    cpus: list[int]
    rank_pid: int
    pids: list[int]


def preflight(testbed: Testbed, step: Any) -> None:
    targets.rank_pid(testbed, step)
    if targets.node(testbed, step).cgroups:
        targets.need_root(SPEC.id)


def prepare(testbed: Testbed, step: Any, key: str) -> GpuComputeContentionHandle:
    pid = targets.rank_pid(testbed, step)
    node = targets.node(testbed, step)
    cpus = sorted(os.sched_getaffinity(pid))  # the rank's cores, as its process is pinned
    argv = [sys.executable, "-m", "harness.faults.mech.gemm_hog", "--size", str(step.params.matrix_size)]
    return GpuComputeContentionHandle(**base_handle(SPEC, step, key), argv=argv, workers=step.params.workers,
                                      cgroup_dirs=list(dict.fromkeys(node.cgroups.values())), cpus=cpus,
                                      rank_pid=pid, pids=[])


def inject(handle: GpuComputeContentionHandle, testbed: Testbed) -> GpuComputeContentionHandle:
    pids = [procs.spawn(handle["argv"], handle["key"], cgroup_dirs=handle["cgroup_dirs"], cpus=handle["cpus"],
                        extra_env=procs.package_env()).pid for _ in range(handle["workers"])]
    return {**handle, "pids": pids}


def verify(handle: GpuComputeContentionHandle, testbed: Testbed) -> Evidence | None:
    n, rate = busy_rate(handle["key"], handle["pids"])
    if n < handle["workers"] or rate < MIN_BUSY_SHARE * min(handle["workers"], len(handle["cpus"])):
        return None
    return Evidence("GEMM hog CPU", rate, f"{n} GEMM hogs using {rate:.2f} cores on {handle['component']}'s "
                    f"cores {handle['cpus']}", {"hogs": n})


def recover(handle: GpuComputeContentionHandle) -> None:
    procs.kill_marked(handle["key"], handle.get("pids", []))
