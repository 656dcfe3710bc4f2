"""cpu-throttle: a CFS quota on the node's cgroup (v1 cpu.cfs_quota_us/cfs_period_us, v2 cpu.max).

Verify: the cgroup's throttled-periods counter grows. Recover: write back the quota and period read in prepare.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.backends.base import Testbed
from harness.errors import PreflightFailed
from harness.faults import targets
from harness.faults.base import Evidence, Handle, base_handle
from harness.faults.catalog import FAULTS
from harness.faults.mech import cgroups

SPEC = FAULTS["cpu-throttle"]


class CpuThrottleHandle(Handle):
    cgroup: str
    apply: list[tuple[str, str]]  # (file, value) writes that set the quota
    restore: list[tuple[str, str]]  # (file, value) writes that put the old quota back
    throttled_before: int


def preflight(testbed: Testbed, step: Any) -> None:
    targets.need_root(SPEC.id)
    d = cgroups.cgroup_dir(targets.node(testbed, step).cgroups, "cpu")
    if not cgroups.cpu_quota_file(d).exists():
        raise PreflightFailed(f"{SPEC.id}: {d} has no CPU quota file (cpu controller not enabled there)")


def prepare(testbed: Testbed, step: Any, key: str) -> CpuThrottleHandle:
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
