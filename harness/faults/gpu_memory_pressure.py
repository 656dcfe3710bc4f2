"""gpu-memory-pressure (emulated): the device layer takes a share of the rank's memory pool (fewer KV blocks,
preemptions, device memory used up).

Inject: ``mem_pool_fraction`` in the rank's device control file, at once (``fixed``) or growing from a quarter
of it to all of it over the fault's duration (``growing``: a small ramp process, marked like every helper).
Verify: DCGM_FI_DEV_FB_USED of the rank above its value before the fault. Recover: kill the ramp, restore.
"""

from __future__ import annotations

import sys
from typing import Any

from harness.backends.base import Testbed
from harness.faults import targets
from harness.faults.base import Evidence, Handle, base_handle
from harness.faults.catalog import FAULTS
from harness.faults.mech import device, procs

SPEC = FAULTS["gpu-memory-pressure"]
GROWING_START = 0.25  # growing mode starts at this share of the final fraction


class GpuMemoryPressureHandle(Handle):
    control_file: str
    fraction: float
    mode: str
    duration: float
    previous: dict[str, Any]
    fb_used_before: float | None
    pids: list[int]


def preflight(testbed: Testbed, step: Any) -> None:
    device.check_control_dir(SPEC.id, testbed, targets.rank(testbed, step).name)


def prepare(testbed: Testbed, step: Any, key: str) -> GpuMemoryPressureHandle:
    rank = targets.rank(testbed, step).name
    path = device.control_path(testbed, rank)
    return GpuMemoryPressureHandle(
        **base_handle(SPEC, step, key), control_file=path, fraction=step.params.fraction, mode=step.params.mode,
        duration=step.duration, previous=device.previous(path, ["mem_pool_fraction"]),
        fb_used_before=device.fresh_query(testbed.prometheus_url, device.series("DCGM_FI_DEV_FB_USED", rank)), pids=[],
    )


def inject(handle: GpuMemoryPressureHandle, testbed: Testbed) -> GpuMemoryPressureHandle:
    h = handle
    first = h["fraction"] * (GROWING_START if h["mode"] == "growing" else 1.0)
    device.apply(h["control_file"], {"mem_pool_fraction": round(first, 4)})
    if h["mode"] != "growing":
        return h
    argv = [sys.executable, "-m", "harness.faults.mech.device_ramp", "--control", h["control_file"],
            "--field", "mem_pool_fraction", "--start", str(first), "--end", str(h["fraction"]),
            "--duration", str(h["duration"])]
    return {**h, "pids": [procs.spawn(argv, h["key"], extra_env=procs.package_env()).pid]}


def verify(handle: GpuMemoryPressureHandle, testbed: Testbed) -> Evidence | None:
    rank = handle["component"]
    used = device.query(testbed.prometheus_url, device.series("DCGM_FI_DEV_FB_USED", rank))
    free = device.query(testbed.prometheus_url, device.series("DCGM_FI_DEV_FB_FREE", rank))
    before = handle["fb_used_before"]
    if used is None or before is None or used <= before + 1.0:
        return None
    share = used / (used + free) if free is not None and used + free > 0 else float("nan")
    return Evidence("DCGM_FI_DEV_FB_USED", used, f"{rank}: device memory used {used:.0f} MiB "
                    f"(was {before:.0f}, {share:.0%} of the board) [emulated]", {"fb_used_before": before})


def recover(handle: GpuMemoryPressureHandle) -> None:
    procs.kill_marked(handle["key"], handle.get("pids", []))
    device.restore(handle["control_file"], handle["previous"])
