"""host-memory-pressure: ``stress-ng --vm`` keeping memory resident inside the node's cgroups, plus an optional
memory limit on the node's cgroup (v1 memory.limit_in_bytes, v2 memory.max).

The limit is never set below the node's usage before injection + a margin, so the engine itself is not the one
pushed over it by default (stress-ng's workers are the OOM killer's first choice). Verify: the stressor's resident
memory reached half the asked amount, or the cgroup's limit-hit counter grows. Recover: kill the stressor, then
put the old limit back.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from chaosbench.backends.base import Testbed
from chaosbench.errors import PreflightFailed
from chaosbench.faults import targets
from chaosbench.faults.base import Evidence, Handle, base_handle
from chaosbench.faults.mech import cgroups, procs
from chaosbench.faults.spec import FaultSpec, ParamRange, Params, Sampling
from chaosbench.types import between

if TYPE_CHECKING:
    from chaosbench.backends.k8s.faults import ClusterKit, ClusterParts
    from chaosbench.scenario import FaultStep


class HostMemoryPressureParams(Params):
    memory_mb: between(int, 64, 1048576, "memory the stressor keeps resident, MiB") = 2048
    limit_mb: between(int, 64, 1048576, "cgroup memory limit on the node's processes, MiB (0 = none)") | None = None
    workers: between(int, 1, 16, "stress-ng --vm workers") = 1


SPEC = FaultSpec(
    id="host-memory-pressure",
    fault_class="memory",
    description="The node runs short of host memory: reclaim, swap/OOM risk, slower allocations.",
    target="node",
    params=HostMemoryPressureParams,
    cluster_mechanism="Chaos Mesh StressChaos memory (8 GB) or swap thrash on the node",
    local_mechanism="stress-ng --vm plus an optional cgroup memory limit on the node's processes",
    local_realism="real",
    verify_signal="memory PSI, stressor RSS, memory-limit fail counter",
    recovery="kill the stressor, lift the limit",
    seen_in=("traces", "metrics"),
    sampling=Sampling(
        {"memory_mb": ParamRange(512, 6144, 256), "workers": ParamRange(1, 2, 1, weight=0.5)}
    ),
    key_metrics=("mem", "oom", "pressure"),
    needs_root='cgroup memory limit',
)

MIB = 1 << 20
MARGIN = 256 * MIB  # head-room above the node's own usage when a limit is set


class HostMemoryPressureHandle(Handle):
    argv: list[str]
    cgroup_dirs: list[str]
    cpus: list[int]
    memory_cgroup: str | None
    limit_file: str | None
    limit_bytes: int | None  # the limit set (None: no limit)
    limit_restore: str | None  # the value the limit file held before
    limit_hits_before: int
    memory_mb: int
    pids: list[int]


def preflight(testbed: Testbed, step: FaultStep) -> None:
    targets.need_binaries(SPEC.id, "stress-ng")
    node = targets.node(testbed, step)
    if step.params.limit_mb is not None:
        targets.need_root(SPEC.id)
        d = cgroups.cgroup_dir(node.cgroups, "memory")
        if not cgroups.memory_limit_file(d).exists():
            raise PreflightFailed(f"{SPEC.id}: {d} has no memory limit file (memory controller not enabled there)")


def _memory_dir(cgroup_map: dict[str, str]) -> Path | None:
    try:
        return cgroups.cgroup_dir(cgroup_map, "memory")
    except PreflightFailed:
        return None


def prepare(testbed: Testbed, step: FaultStep, key: str) -> HostMemoryPressureHandle:
    node, p = targets.node(testbed, step), step.params
    d = _memory_dir(node.cgroups)
    per_worker = max(1, p.memory_mb // p.workers)
    argv = ["stress-ng", "--vm", str(p.workers), "--vm-bytes", f"{per_worker}M", "--vm-keep", "--timeout", "0",
            "--quiet"]
    limit = None
    if p.limit_mb is not None and d is not None:
        limit = max(p.limit_mb * MIB, cgroups.memory_usage(d) + MARGIN)
    return HostMemoryPressureHandle(
        **base_handle(SPEC, step, key),
        argv=argv,
        cgroup_dirs=list(dict.fromkeys(node.cgroups.values())),
        cpus=list(node.cpus),
        memory_cgroup=str(d) if d else None,
        limit_file=str(cgroups.memory_limit_file(d)) if d and limit else None,
        limit_bytes=limit,
        limit_restore=cgroups.read(cgroups.memory_limit_file(d)) if d and limit else None,
        limit_hits_before=cgroups.memory_pressure_events(d) if d else 0,
        memory_mb=p.memory_mb,
        pids=[],
    )


def inject(handle: HostMemoryPressureHandle, testbed: Testbed) -> HostMemoryPressureHandle:
    if handle["limit_file"] and handle["limit_bytes"]:
        cgroups.write(Path(handle["limit_file"]), str(handle["limit_bytes"]))
    proc = procs.spawn(handle["argv"], handle["key"], cgroup_dirs=handle["cgroup_dirs"], cpus=handle["cpus"])
    return {**handle, "pids": [proc.pid]}


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def verify(handle: HostMemoryPressureHandle, testbed: Testbed) -> Evidence | None:
    rss = sum(_rss_bytes(p) for p in procs.find_marked(handle["key"], handle["pids"]))
    d = handle["memory_cgroup"]
    hits = cgroups.memory_pressure_events(Path(d)) - handle["limit_hits_before"] if d and Path(d).is_dir() else 0
    if rss < 0.5 * handle["memory_mb"] * MIB and hits <= 0:
        return None
    detail = f"stressor resident {rss / MIB:.0f} MiB of {handle['memory_mb']} MiB asked"
    if handle["limit_bytes"]:
        detail += f"; node memory limit {handle['limit_bytes'] / MIB:.0f} MiB hit {hits} times"
    return Evidence("stressor RSS", rss / MIB, detail, {"limit_hits": hits})


def recover(handle: HostMemoryPressureHandle) -> None:
    procs.kill_marked(handle["key"], handle.get("pids", []))
    f = handle["limit_file"]
    if f and handle["limit_restore"] is not None and Path(f).exists():
        restore = handle["limit_restore"]
        cgroups.write(Path(f), "-1" if restore.isdigit() and int(restore) >= cgroups.UNLIMITED_V1 else restore)


def cluster(step: FaultStep, kit: ClusterKit) -> ClusterParts:
    p = step.params
    mem = {"workers": p.workers, "size": f"{p.memory_mb}MB"}
    obj = kit.chaos("StressChaos", {**kit.on_node(step.duration), "stressors": {"memory": mem}})
    notes = () if p.limit_mb is None else ("params.limit_mb is not applied on k8s: the pod's memory limit holds",)
    return {"chaos_objects": (obj,), "notes": notes,
            "evidence_query": f'sum(container_memory_working_set_bytes{{{kit.pods}}})'}
