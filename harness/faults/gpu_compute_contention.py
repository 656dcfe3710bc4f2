"""gpu-compute-contention: real GEMM hog processes pinned to the rank's core(s), inside the rank's node cgroups.

The local stand-in for another workload sharing the rank's GPU (cluster: dcgmproftester / a GEMM hog pod): the
rank's compute (its "kernels") competes for the same cores and stretches. A rank free to run on several cores
is pinned (all its threads) to one of them for the fault's duration, so the contention stays on that rank as
it would on one GPU; its previous affinity is recorded and restored. Verify: the hogs are alive and burn CPU.
Recover: kill every process carrying the fault's marker, restore the rank's affinity.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from chaosbench.backends.base import Testbed
from chaosbench.faults import targets
from chaosbench.faults.base import Evidence, Handle, base_handle
from chaosbench.faults.cpu_contention import MIN_BUSY_SHARE, busy_rate
from chaosbench.faults.mech import procs
from chaosbench.faults.spec import FaultSpec, ParamRange, Params, Sampling
from chaosbench.types import between

if TYPE_CHECKING:
    from chaosbench.backends.k8s.faults import ClusterKit, ClusterParts
    from chaosbench.scenario import FaultStep


class GpuComputeContentionParams(Params):
    workers: between(int, 1, 16, "hog processes (GEMM loops) on the target") = 1
    matrix_size: between(int, 64, 8192, "square GEMM size of the hog") = 256


SPEC = FaultSpec(
    id="gpu-compute-contention",
    fault_class="GPU",
    description="Another workload shares the GPU's compute: the rank's kernels wait and stretch.",
    target="rank",
    targets=("rank", "stage", "replica"),  # a stage or replica: each of its ranks
    params=GpuComputeContentionParams,
    cluster_mechanism="dcgmproftester -t 1004 or a GEMM hog pod on the target GPU",
    local_mechanism="a real GEMM hog process pinned to the rank's CPU core(s)",
    local_realism="real",
    verify_signal="hog process running; the rank's kernel durations and gaps grow",
    recovery="kill the hog",
    seen_in=("traces", "metrics"),
    # hog processes sharing the rank's core(s): the rank keeps 1/2 .. 1/5 of its CPU
    sampling=Sampling({"workers": ParamRange(1, 4, 1)}),
    key_metrics=("util", "step", "kernel"),
)


class GpuComputeContentionHandle(Handle):
    argv: list[str]
    workers: int
    cgroup_dirs: list[str]
    cpus: list[int]  # the core(s) shared by the rank and the hogs
    rank_pid: int
    rank_started: int | None
    rank_affinity: list[int]  # the rank's affinity before the fault
    pids: list[int]


def preflight(testbed: Testbed, step: FaultStep) -> None:
    targets.rank_pid(testbed, step)
    if targets.node(testbed, step).cgroups:
        targets.need_root(SPEC.id)


def prepare(testbed: Testbed, step: FaultStep, key: str) -> GpuComputeContentionHandle:
    pid = targets.rank_pid(testbed, step)
    node = targets.node(testbed, step)
    before = sorted(os.sched_getaffinity(pid))
    rank = targets.rank(testbed, step)
    cpus = before if len(before) == 1 else [before[rank.index % len(before)]]
    argv = [sys.executable, "-m", "chaosbench.faults.mech.gemm_hog", "--size", str(step.params.matrix_size)]
    return GpuComputeContentionHandle(**base_handle(SPEC, step, key), argv=argv, workers=step.params.workers,
                                      cgroup_dirs=list(dict.fromkeys(node.cgroups.values())), cpus=cpus,
                                      rank_pid=pid, rank_started=procs.start_time(pid), rank_affinity=before,
                                      pids=[])


def inject(handle: GpuComputeContentionHandle, testbed: Testbed) -> GpuComputeContentionHandle:
    if handle["cpus"] != handle["rank_affinity"] and procs.same_process(handle["rank_pid"], handle["rank_started"]):
        procs.set_affinity_all_threads(handle["rank_pid"], handle["cpus"])
    pids = [procs.spawn(handle["argv"], handle["key"], cgroup_dirs=handle["cgroup_dirs"], cpus=handle["cpus"]).pid
            for _ in range(handle["workers"])]
    return {**handle, "pids": pids}


def verify(handle: GpuComputeContentionHandle, testbed: Testbed) -> Evidence | None:
    n, rate = busy_rate(handle["key"], handle["pids"])
    if n < handle["workers"] or rate < MIN_BUSY_SHARE * min(handle["workers"], len(handle["cpus"])):
        return None
    return Evidence("GEMM hog CPU", rate, f"{n} GEMM hogs using {rate:.2f} cores on {handle['component']}'s "
                    f"cores {handle['cpus']}", {"hogs": n})


def recover(handle: GpuComputeContentionHandle) -> None:
    procs.kill_marked(handle["key"], handle.get("pids", []))
    if procs.same_process(handle["rank_pid"], handle["rank_started"]):
        procs.set_affinity_all_threads(handle["rank_pid"], handle["rank_affinity"])


def cluster(step: FaultStep, kit: ClusterKit) -> ClusterParts:
    p = step.params
    extra = ("--workers", str(p.workers), "--size", str(p.matrix_size), "--duration", str(step.duration))
    return {**kit.agent("gemm-hog", *extra), "evidence_query": kit.dcgm("DCGM_FI_PROF_GR_ENGINE_ACTIVE")}
