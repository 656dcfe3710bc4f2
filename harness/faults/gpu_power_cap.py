"""gpu-power-cap (emulated): the device layer caps the rank's power limit; its kernels slow down.

Inject: ``power_limit_w`` in the rank's device control file. Verify: the rank's exporter reports
DCGM_FI_DEV_POWER_MGMT_LIMIT at the cap as the board enforces it (200..700 W on the emulated H100 SXM5) and the
SW power-cap clock-event bit, set only while the rank's draw sits at the cap: a cap above the draw is no fault.
Recover: the previous control values.
"""

from __future__ import annotations

from typing import Any

from harness.backends.base import Testbed
from harness.engines.mini.device import DeviceState
from harness.faults import targets
from harness.faults.base import Evidence, Handle, base_handle
from harness.faults.catalog import FAULTS
from harness.faults.mech import device

SPEC = FAULTS["gpu-power-cap"]
POWER_CAP_BIT = 0x4


class GpuPowerCapHandle(Handle):
    control_file: str
    fields: dict[str, float]
    previous: dict[str, Any]


def preflight(testbed: Testbed, step: Any) -> None:
    device.check_control_dir(SPEC.id, testbed, targets.rank(testbed, step).name)


def prepare(testbed: Testbed, step: Any, key: str) -> GpuPowerCapHandle:
    path = device.control_path(testbed, targets.rank(testbed, step).name)
    return GpuPowerCapHandle(**base_handle(SPEC, step, key), control_file=path,
                             fields={"power_limit_w": step.params.watts},
                             previous=device.previous(path, ["power_limit_w"]))


def inject(handle: GpuPowerCapHandle, testbed: Testbed) -> GpuPowerCapHandle:
    device.apply(handle["control_file"], handle["fields"])
    return handle


def verify(handle: GpuPowerCapHandle, testbed: Testbed) -> Evidence | None:
    rank = handle["component"]
    cap = DeviceState(power_limit_w=handle["fields"]["power_limit_w"]).enforced_limit()  # the board's range
    limit = device.query(testbed.prometheus_url, device.series("DCGM_FI_DEV_POWER_MGMT_LIMIT", rank))
    if limit is None or abs(limit - cap) > 0.5:
        return None
    usage = device.query(testbed.prometheus_url, device.series("DCGM_FI_DEV_POWER_USAGE", rank)) or 0.0
    reasons = int(device.query(testbed.prometheus_url, device.series("DCGM_FI_DEV_CLOCKS_EVENT_REASONS", rank)) or 0)
    if not reasons & POWER_CAP_BIT:
        return None  # a cap above the rank's draw does nothing: no fault until the draw sits at it
    return Evidence("DCGM_FI_DEV_POWER_MGMT_LIMIT", limit, f"{rank}: power limit {limit:g} W, usage {usage:.0f} W, "
                    f"power-cap reason bit set [emulated]", {"power_usage_w": usage, "clocks_event_reasons": reasons})


def recover(handle: GpuPowerCapHandle) -> None:
    device.restore(handle["control_file"], handle["previous"])
