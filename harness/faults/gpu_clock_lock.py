"""gpu-clock-lock (emulated): the device layer locks the rank's SM clock low; every kernel on it is slower.

Inject: ``sm_clock_mhz`` in the rank's device control file. Verify: DCGM_FI_DEV_SM_CLOCK of the rank drops to
the locked value. Recover: the previous control values (clock unlocked).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chaosbench.backends.base import Testbed
from chaosbench.faults import targets
from chaosbench.faults.base import Evidence, Handle, base_handle
from chaosbench.faults.mech import device
from chaosbench.faults.spec import FaultSpec, ParamRange, Params, Sampling
from chaosbench.types import between

if TYPE_CHECKING:
    from chaosbench.backends.k8s.faults import ClusterKit, ClusterParts
    from chaosbench.scenario import FaultStep


class GpuClockLockParams(Params):
    sm_clock_mhz: between(int, 100, 3000, "locked SM clock, MHz") = 500
    default_clock_mhz: between(int, 300, 3000, "the board's maximum SM clock, MHz") = 1980  # H100 SXM5


SPEC = FaultSpec(
    id="gpu-clock-lock",
    fault_class="GPU",
    description="The GPU's SM clock is locked low: every kernel on that GPU is slower, power is not the cause.",
    target="rank",
    targets=("rank", "stage", "replica"),  # a stage or replica: each of its ranks
    params=GpuClockLockParams,
    cluster_mechanism="nvidia-smi -i N -lgc <mhz>,<mhz>",
    local_mechanism="device layer locks the rank's SM clock whatever the load: its kernels slow down by max/locked",
    local_realism="emulated",
    verify_signal="DCGM_FI_DEV_SM_CLOCK drops to the locked value",
    recovery="nvidia-smi -rgc (device layer: clock unlocked)",
    seen_in=("traces", "metrics"),
    # kernels run 1980/clock longer: x1.1 .. x5 (the idle clock, 345 MHz, is the floor)
    sampling=Sampling({"sm_clock_mhz": ParamRange(1800, 400, 10, log=True)}),
    key_metrics=("sm_clock", "clock"),
    local_needs=("device-layer",),
)


class GpuClockLockHandle(Handle):
    control_file: str
    fields: dict[str, float]
    previous: dict[str, Any]


def preflight(testbed: Testbed, step: FaultStep) -> None:
    device.check_control_dir(SPEC.id, testbed, targets.rank(testbed, step).name)


def prepare(testbed: Testbed, step: FaultStep, key: str) -> GpuClockLockHandle:
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


def cluster(step: FaultStep, kit: ClusterKit) -> ClusterParts:
    return {**kit.agent("clock-lock", "--mhz", str(step.params.sm_clock_mhz)),
            "evidence_query": kit.dcgm("DCGM_FI_DEV_SM_CLOCK")}
