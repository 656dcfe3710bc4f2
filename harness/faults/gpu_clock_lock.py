"""gpu-clock-lock (emulated): the device layer locks the rank's SM clock low; every kernel on it is slower.

Inject: ``sm_clock_mhz`` in the rank's device control file. Verify: DCGM_FI_DEV_SM_CLOCK of the rank drops to
the locked value. Recover: the previous control values (clock unlocked).
"""

from __future__ import annotations

from typing import Any

from harness.backends.base import Testbed
from harness.faults import targets
from harness.faults.base import Evidence, Handle, base_handle
from harness.faults.catalog import FAULTS
from harness.faults.mech import device

SPEC = FAULTS["gpu-clock-lock"]


class GpuClockLockHandle(Handle):
    control_file: str
    fields: dict[str, float]
    previous: dict[str, Any]


def preflight(testbed: Testbed, step: Any) -> None:
    device.check_control_dir(SPEC.id, testbed, targets.rank(testbed, step).name)


def prepare(testbed: Testbed, step: Any, key: str) -> GpuClockLockHandle:
    path = device.control_path(testbed, targets.rank(testbed, step).name)
    return GpuClockLockHandle(**base_handle(SPEC, step, key), control_file=path,
                              fields={"sm_clock_mhz": step.params.sm_clock_mhz},
                              previous=device.previous(path, ["sm_clock_mhz"]))


def inject(handle: GpuClockLockHandle, testbed: Testbed) -> GpuClockLockHandle:
    device.apply(handle["control_file"], handle["fields"])
    return handle


def verify(handle: GpuClockLockHandle, testbed: Testbed) -> Evidence | None:
    rank, locked = handle["component"], handle["fields"]["sm_clock_mhz"]
    clock = device.query(testbed.prometheus_url, device.series("DCGM_FI_DEV_SM_CLOCK", rank))
    if clock is None or clock > locked + 0.5:
        return None
    return Evidence("DCGM_FI_DEV_SM_CLOCK", clock,
                    f"{rank}: SM clock {clock:.0f} MHz (locked at {locked:g}) [emulated]")


def recover(handle: GpuClockLockHandle) -> None:
    device.restore(handle["control_file"], handle["previous"])
