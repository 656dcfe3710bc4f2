"""cpu-throttle: a CFS quota on the node's cgroup (v1 cpu.cfs_quota_us/cfs_period_us, v2 cpu.max).

Verify: the cgroup's throttled-periods counter grows. Recover: write back the quota and period read in prepare.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from chaosbench.backends.base import Testbed
from chaosbench.errors import PreflightFailed
from chaosbench.faults import targets
from chaosbench.faults.base import Evidence, Handle, base_handle
from chaosbench.faults.mech import cgroups
from chaosbench.faults.spec import FaultSpec, ParamRange, Params, Sampling
from chaosbench.types import between

if TYPE_CHECKING:
    from chaosbench.backends.k8s.faults import ClusterKit, ClusterParts
    from chaosbench.scenario import FaultStep


class CpuThrottleParams(Params):
    cpu_percent: between(int, 1, 400, "CPU quota left to the node's processes, percent of one core") = 25
    period_us: between(int, 1000, 1000000, "CFS period, microseconds") = 100000


SPEC = FaultSpec(
    id="cpu-throttle",
    fault_class="CPU",
    description="The node's CPUs are clamped: everything on the node gets fewer cycles.",
    target="node",
    params=CpuThrottleParams,
    cluster_mechanism="cpupower frequency-set clamp (DVFS) on the node",
    local_mechanism="cgroup CPU quota on the node's processes (v1 cpu.cfs_quota_us or v2 cpu.max)",
    local_realism="real",
    verify_signal="the cgroup's throttled-periods counter grows",
    recovery="remove the quota",
    seen_in=("traces", "metrics"),
    sampling=Sampling({"cpu_percent": ParamRange(80, 15, 5)}),
    key_metrics=("throttl", "cpu"),
    needs_root='cgroup CPU quota',
)


class CpuThrottleHandle(Handle):
    cgroup: str
    apply: list[tuple[str, str]]  # (file, value) writes that set the quota
    restore: list[tuple[str, str]]  # (file, value) writes that put the old quota back
    throttled_before: int


def preflight(testbed: Testbed, step: FaultStep) -> None:
    targets.need_root(SPEC.id)
    d = cgroups.cgroup_dir(targets.node(testbed, step).cgroups, "cpu")
    if not cgroups.cpu_quota_file(d).exists():
        raise PreflightFailed(f"{SPEC.id}: {d} has no CPU quota file (cpu controller not enabled there)")


def prepare(testbed: Testbed, step: FaultStep, key: str) -> CpuThrottleHandle:
    d = cgroups.cgroup_dir(targets.node(testbed, step).cgroups, "cpu")
    p = step.params
    quota = max(1000, p.cpu_percent * p.period_us // 100)
    return CpuThrottleHandle(
        **base_handle(SPEC, step, key),
        cgroup=str(d),
        apply=cgroups.cpu_quota_value(d, quota, p.period_us),
        restore=cgroups.cpu_quota_previous(d),
        throttled_before=cgroups.throttling(d).throttled,
    )


def inject(handle: CpuThrottleHandle, testbed: Testbed) -> CpuThrottleHandle:
    for path, value in handle["apply"]:
        cgroups.write(Path(path), value)
    return handle


def verify(handle: CpuThrottleHandle, testbed: Testbed) -> Evidence | None:
    t = cgroups.throttling(Path(handle["cgroup"]))
    grown = t.throttled - handle["throttled_before"]
    if grown <= 0:
        return None
    return Evidence("cgroup throttled periods", grown, f"{grown} throttled periods since injection "
                    f"({t.throttled_s:.2f} s throttled in total)", {"throttled_s": t.throttled_s})


def recover(handle: CpuThrottleHandle) -> None:
    if not Path(handle["cgroup"]).is_dir():
        return  # the cgroup went with the testbed
    for path, value in handle["restore"]:
        cgroups.write(Path(path), value)


def cluster(step: FaultStep, kit: ClusterKit) -> ClusterParts:
    p = step.params
    return {**kit.agent("cpu-quota", "--cpu-percent", str(p.cpu_percent), "--period-us", str(p.period_us),
                        gpu="worker"),
            "evidence_query": f'sum(rate(container_cpu_cfs_throttled_periods_total{{{kit.pods}}}'
                              f'[{kit.rate_window(True)}]))',
            "notes": (("CFS quota on the Ray worker container's cgroup (as the local backend); a DVFS clamp "
                      "(cpupower) would need host cpufreq access and is not used"),)}
