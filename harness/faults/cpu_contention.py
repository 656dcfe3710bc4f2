"""cpu-contention: ``stress-ng --cpu N --cpu-load L`` pinned to the node's cores, inside the node's cgroups.

Verify: the stressor processes are alive and burn CPU (their utime+stime rate over a short window).
Recover: kill every process carrying the fault's marker.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from chaosbench.backends.base import Testbed
from chaosbench.faults import targets
from chaosbench.faults.base import Evidence, Handle, base_handle
from chaosbench.faults.mech import procs
from chaosbench.faults.spec import FaultSpec, ParamRange, Params, Sampling
from chaosbench.types import between

if TYPE_CHECKING:
    from chaosbench.backends.k8s.faults import ClusterKit, ClusterParts
    from chaosbench.scenario import FaultStep


class CpuContentionParams(Params):
    workers: between(int, 1, 64, "stressor workers (one busy thread each)") = 2
    load: between(int, 1, 100, "percent load of each worker") = 100


SPEC = FaultSpec(
    id="cpu-contention",
    fault_class="CPU",
    description="CPU hogs on the node compete with the inference processes for cores.",
    target="node",
    params=CpuContentionParams,
    cluster_mechanism="Chaos Mesh StressChaos cpu (or stress-ng) on the node",
    local_mechanism="stress-ng --cpu pinned to the node's cores, in the node's cgroup",
    local_realism="real",
    verify_signal="node CPU saturation; CPU pressure (PSI) rises",
    recovery="kill the stressor",
    seen_in=("traces", "metrics"),
    sampling=Sampling({"workers": ParamRange(1, 4, 1), "load": ParamRange(40, 100, 5, weight=0.5)}),
    key_metrics=("cpu", "pressure"),
    needs_root="stressor placed in the node's cgroup",
)

MIN_BUSY_SHARE = 0.02  # verified once it burns this share of what it asked for (an overloaded machine gives little)


class CpuContentionHandle(Handle):
    argv: list[str]
    cgroup_dirs: list[str]
    cpus: list[int]
    expected_cores: float  # what the stressor should burn when unhindered
    pids: list[int]


def preflight(testbed: Testbed, step: FaultStep) -> None:
    targets.need_binaries(SPEC.id, "stress-ng")
    node = targets.node(testbed, step)
    if node.cgroups:
        targets.need_root(SPEC.id)


def prepare(testbed: Testbed, step: FaultStep, key: str) -> CpuContentionHandle:
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


def cluster(step: FaultStep, kit: ClusterKit) -> ClusterParts:
    stress = {"cpu": {"workers": step.params.workers, "load": step.params.load}}
    obj = kit.chaos("StressChaos", {**kit.on_node(step.duration), "stressors": stress})
    return {"chaos_objects": (obj,),
            "evidence_query": f'sum(rate(container_cpu_usage_seconds_total{{{kit.pods}}}[{kit.rate_window(True)}]))'}
