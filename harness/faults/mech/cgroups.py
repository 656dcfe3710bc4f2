"""cgroup v1 and v2 knobs and counters of a node's cgroup (CPU quota, memory limit, throttling, usage).

A node's cgroups come from ``NodeInfo.cgroups`` ({controller: dir}). v1 mounts one hierarchy per controller
(``/sys/fs/cgroup/cpu/...``, ``/sys/fs/cgroup/memory/...``); v2 has one directory for all, recognised by
``cpu.max`` / ``memory.max`` files in it. Both are handled per directory, not per machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from chaosbench.errors import PreflightFailed

UNLIMITED_V1 = 9223372036854771712  # v1 memory.limit_in_bytes "no limit" on 64-bit page-aligned kernels


def cgroup_dir(cgroups: dict[str, str], controller: str) -> Path:
    """The node's directory for ``controller`` (v2: any entry, the tree is unified)."""
    for key in (controller, "unified", "v2"):
        if key in cgroups:
            return Path(cgroups[key])
    if cgroups and all(Path(d, "cgroup.controllers").exists() for d in cgroups.values()):
        return Path(next(iter(cgroups.values())))
    raise PreflightFailed(f"the node has no {controller} cgroup (cgroups: {sorted(cgroups) or 'none'})")


def is_v2(d: Path) -> bool:
    return (d / "cgroup.controllers").exists()


def read(path: Path) -> str:
    return path.read_text().strip()


def write(path: Path, value: str) -> None:
    path.write_text(value)


def _kv(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in path.read_text().splitlines():
        key, _, val = line.partition(" ")
        if val.strip().lstrip("-").isdigit():
            out[key] = int(val)
    return out


# --------------------------------------------------------------------------- CPU


def cpu_quota_file(d: Path) -> Path:
    return d / ("cpu.max" if is_v2(d) else "cpu.cfs_quota_us")


def cpu_quota_value(d: Path, quota_us: int, period_us: int) -> list[tuple[str, str]]:
    """(file, value) writes that set the quota, in order (v1: period before quota)."""
    if is_v2(d):
        return [(str(d / "cpu.max"), f"{quota_us} {period_us}")]
    return [(str(d / "cpu.cfs_period_us"), str(period_us)), (str(d / "cpu.cfs_quota_us"), str(quota_us))]


def cpu_quota_previous(d: Path) -> list[tuple[str, str]]:
    """(file, value) writes that restore the current quota, in order (v1: quota off before the period)."""
    if is_v2(d):
        return [(str(d / "cpu.max"), read(d / "cpu.max"))]
    return [(str(d / "cpu.cfs_quota_us"), "-1"), (str(d / "cpu.cfs_period_us"), read(d / "cpu.cfs_period_us")),
            (str(d / "cpu.cfs_quota_us"), read(d / "cpu.cfs_quota_us"))]


@dataclass(frozen=True)
class Throttling:
    periods: int
    throttled: int
    throttled_s: float


def throttling(d: Path) -> Throttling:
    stat = _kv(d / "cpu.stat")
    if is_v2(d):
        return Throttling(stat.get("nr_periods", 0), stat.get("nr_throttled", 0), stat.get("throttled_usec", 0) / 1e6)
    return Throttling(stat.get("nr_periods", 0), stat.get("nr_throttled", 0), stat.get("throttled_time", 0) / 1e9)


# --------------------------------------------------------------------------- memory


def memory_usage(d: Path) -> int:
    return int(read(d / ("memory.current" if is_v2(d) else "memory.usage_in_bytes")))


def memory_limit_file(d: Path) -> Path:
    return d / ("memory.max" if is_v2(d) else "memory.limit_in_bytes")


def memory_limit(d: Path) -> int | None:
    raw = read(memory_limit_file(d))
    if raw == "max" or int(raw) >= UNLIMITED_V1:
        return None
    return int(raw)


def memory_pressure_events(d: Path) -> int:
    """Times the cgroup hit its limit (v1 memory.failcnt; v2 memory.events max + oom)."""
    if is_v2(d):
        ev = _kv(d / "memory.events")
        return ev.get("max", 0) + ev.get("oom", 0)
    return int(read(d / "memory.failcnt"))
