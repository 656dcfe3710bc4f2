"""gpu-power-cap (emulated): the device layer caps the rank's power limit; its kernels slow down.

Inject: ``power_limit_w`` in the rank's device control file. Verify: the rank's exporter reports
DCGM_FI_DEV_POWER_MGMT_LIMIT at the cap as the board enforces it (200..700 W on the emulated H100 SXM5) and the
SW power-cap clock-event bit, set only while the rank's draw sits at the cap: a cap above the draw is no fault.
Recover: the previous control values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chaosbench.backends.base import Testbed
from chaosbench.engines.mini.device import DeviceState
from chaosbench.faults import targets
from chaosbench.faults.base import Evidence, Handle, base_handle
from chaosbench.faults.mech import device
from chaosbench.faults.spec import FaultSpec, ParamRange, Params, Sampling
from chaosbench.types import between

if TYPE_CHECKING:
    from chaosbench.backends.k8s.faults import ClusterKit, ClusterParts
    from chaosbench.scenario import FaultStep


class GpuPowerCapParams(Params):
    watts: between(int, 50, 1000, "power limit to set, in watts") = 150
    default_watts: between(int, 100, 1000, "the board's default limit, restored on recovery") = 700


SPEC = FaultSpec(
    id="gpu-power-cap",
    fault_class="GPU",
    description="The GPU's power limit is lowered: clocks drop under load and every kernel on that GPU runs slower.",
    target="rank",
    targets=("rank", "stage", "replica"),  # a stage or replica: each of its ranks
    params=GpuPowerCapParams,
    cluster_mechanism="nvidia-smi -i <GPU UUID> -pl <watts, clamped to the board's power.min_limit..max_limit> "
    "from the privileged fault agent",
    local_mechanism="device layer (H100 SXM5 model) enforces the limit (200..700 W): while the rank's draw "
                    "would exceed it, its clock drops and its kernels slow down by the clock ratio",
    local_realism="emulated",
    verify_signal="DCGM_FI_DEV_POWER_MGMT_LIMIT at the cap; draw at the cap with the power-cap clock event bit",
    recovery="restore the default power limit",
    seen_in=("traces", "metrics"),
    # the emulated H100 draws ~130-250 W under the testbed load and its limit floor is 200 W: only caps near
    # the draw bind (a cap above the draw changes nothing and is not verified)
    sampling=Sampling({"watts": ParamRange(230, 200, 5)}),
    key_metrics=("power",),
    local_needs=("device-layer",),
)

POWER_CAP_BIT = 0x4


class GpuPowerCapHandle(Handle):
    control_file: str
    fields: dict[str, float]
    previous: dict[str, Any]


def preflight(testbed: Testbed, step: FaultStep) -> None:
    device.check_control_dir(SPEC.id, testbed, targets.rank(testbed, step).name)


def prepare(testbed: Testbed, step: FaultStep, key: str) -> GpuPowerCapHandle:
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


def cluster(step: FaultStep, kit: ClusterKit) -> ClusterParts:
    return {**kit.agent("power-cap", "--watts", str(step.params.watts)),
            "evidence_query": kit.dcgm("DCGM_FI_DEV_POWER_MGMT_LIMIT"),
            "notes": (("the cap is clamped to the board's power.min_limit..power.max_limit (nvidia-smi) and "
                      "refused when that leaves it at or above the current limit; recovery restores the "
                      "board's default limit read at inject time (params.default_watts is the local "
                      "emulation's value)"),)}
