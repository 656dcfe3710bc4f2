"""The eleven faults of FAULTS.md: one catalog entry per fault id.

Each entry says what the fault is (class, description), what it takes (a strict
parameter model with types, defaults and bounds), what it targets (a node or a
rank), how it is made on a GPU cluster and on the local CPU testbed, whether the
local effect is real or emulated by the engine's device layer, which signal
proves it took effect, and which kinds of detector can see it.

Importing this module is cheap (pydantic only): ``chaosbench faults`` lists it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from harness.types import between

FaultClass = Literal["GPU", "NCCL", "CPU", "memory", "network"]
TargetKind = Literal["node", "rank"]
Realism = Literal["real", "emulated"]
Signal = Literal["traces", "metrics", "logs"]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class GpuPowerCapParams(Params):
    watts: between(int, 50, 1000, "power limit to set, in watts") = 150
    default_watts: between(int, 100, 1000, "the board's default limit, restored on recovery") = 700


class GpuClockLockParams(Params):
    sm_clock_mhz: between(int, 100, 3000, "locked SM clock, MHz") = 500
    default_clock_mhz: between(int, 300, 3000, "the board's maximum SM clock, MHz") = 1980  # H100 SXM5


class GpuComputeContentionParams(Params):
    workers: between(int, 1, 16, "hog processes (GEMM loops) on the target") = 1
    matrix_size: between(int, 64, 8192, "square GEMM size of the hog") = 256


class GpuMemoryPressureParams(Params):
    fraction: between(float, 0.05, 0.99, "share of device memory taken by the hog") = 0.8
    mode: Literal["fixed", "growing"] = Field("fixed", description="take it at once or grow to it over the window")


class GpuXidErrorParams(Params):
    xid: between(int, 1, 255, "XID code reported (79: GPU has fallen off the bus, 48: double-bit ECC)") = 79
    restart: bool = Field(True, description="restart the failed worker after the error")


class NcclHangParams(Params):
    mode: Literal["collective", "sigstop"] = Field(
        "collective", description="collective: the rank blocks inside the collective, process and exporter alive "
                                  "(a real hang); sigstop: the whole rank process is stopped, then SIGCONT")


class InterconnectDegradationParams(Params):
    rate_mbit: between(float, 0.1, 100000, "bandwidth left on the link, Mbit/s") = 5.0
    burst_kb: between(int, 2, 65536, "token-bucket burst, KiB") = 32
    direction: Literal["egress", "ingress", "both"] = "both"


class CpuContentionParams(Params):
    workers: between(int, 1, 64, "stressor workers (one busy thread each)") = 2
    load: between(int, 1, 100, "percent load of each worker") = 100


class CpuThrottleParams(Params):
    cpu_percent: between(int, 1, 400, "CPU quota left to the node's processes, percent of one core") = 25
    period_us: between(int, 1000, 1000000, "CFS period, microseconds") = 100000


class HostMemoryPressureParams(Params):
    memory_mb: between(int, 64, 1048576, "memory the stressor keeps resident, MiB") = 2048
    limit_mb: between(int, 64, 1048576, "cgroup memory limit on the node's processes, MiB (0 = none)") | None = None
    workers: between(int, 1, 16, "stress-ng --vm workers") = 1


class NetworkDelayParams(Params):
    delay_ms: between(float, 0, 10000, "added one-way delay, ms") = 200.0
    jitter_ms: between(float, 0, 5000, "delay jitter, ms") = 20.0
    correlation: between(float, 0, 1, "jitter correlation (cluster NetworkChaos)") = 0.25
    loss_percent: between(float, 0, 100, "packet loss, percent") = 0.0


@dataclass(frozen=True)
class FaultSpec:
    id: str
    fault_class: FaultClass
    description: str
    target: TargetKind
    params: type[Params]
    cluster_mechanism: str
    local_mechanism: str
    local_realism: Realism
    verify_signal: str
    recovery: str
    seen_in: tuple[Signal, ...]
    version: int = 1


CATALOG: tuple[FaultSpec, ...] = (
    FaultSpec(
        id="gpu-power-cap",
        fault_class="GPU",
        description="The GPU's power limit is lowered: clocks drop under load and every kernel on that GPU runs slower.",
        target="rank",
        params=GpuPowerCapParams,
        cluster_mechanism="nvidia-smi -i <GPU UUID> -pl <watts, clamped to the board's power.min_limit..max_limit> "
        "from the privileged fault agent",
        local_mechanism="device layer (H100 SXM5 model) enforces the limit (200..700 W): while the rank's draw "
                        "would exceed it, its clock drops and its kernels slow down by the clock ratio",
        local_realism="emulated",
        verify_signal="DCGM_FI_DEV_POWER_MGMT_LIMIT at the cap; draw at the cap with the power-cap clock event bit",
        recovery="restore the default power limit",
        seen_in=("traces", "metrics"),
    ),
    FaultSpec(
        id="gpu-clock-lock",
        fault_class="GPU",
        description="The GPU's SM clock is locked low: every kernel on that GPU is slower, power is not the cause.",
        target="rank",
        params=GpuClockLockParams,
        cluster_mechanism="nvidia-smi -i N -lgc <mhz>,<mhz>",
        local_mechanism="device layer locks the rank's SM clock whatever the load: its kernels slow down by max/locked",
        local_realism="emulated",
        verify_signal="DCGM_FI_DEV_SM_CLOCK drops to the locked value",
        recovery="nvidia-smi -rgc (device layer: clock unlocked)",
        seen_in=("traces", "metrics"),
    ),
    FaultSpec(
        id="gpu-compute-contention",
        fault_class="GPU",
        description="Another workload shares the GPU's compute: the rank's kernels wait and stretch.",
        target="rank",
        params=GpuComputeContentionParams,
        cluster_mechanism="dcgmproftester -t 1004 or a GEMM hog pod on the target GPU",
        local_mechanism="a real GEMM hog process pinned to the rank's CPU core(s)",
        local_realism="real",
        verify_signal="hog process running; the rank's kernel durations and gaps grow",
        recovery="kill the hog",
        seen_in=("traces", "metrics"),
    ),
    FaultSpec(
        id="gpu-memory-pressure",
        fault_class="GPU",
        description="A helper takes most of the GPU's memory: fewer KV-cache blocks, preemptions, slow allocations.",
        target="rank",
        params=GpuMemoryPressureParams,
        cluster_mechanism="helper process taking params.fraction of the memory the engine left free (vLLM runs with "
        "gpu_memory_utilization 0.5 under this fault), fixed or growing, on the target GPU",
        local_mechanism="device layer shrinks the rank's memory pool: fewer KV blocks, preemptions, slower allocations",
        local_realism="emulated",
        verify_signal="DCGM_FI_DEV_FB_USED up; vllm:kv_cache_usage_perc and vllm:num_preemptions rise",
        recovery="free the memory",
        seen_in=("traces", "metrics"),
    ),
    FaultSpec(
        id="gpu-xid-error",
        fault_class="GPU",
        description="The GPU reports an XID error: the worker on it fails and is restarted.",
        target="rank",
        params=GpuXidErrorParams,
        cluster_mechanism="emulated: an 'NVRM: Xid' line to /dev/kmsg (DCGM_FI_DEV_XID_ERRORS stays 0: it counts "
        "NVML driver events) plus SIGKILL of the GPU's vLLM worker, restarted by Ray Serve",
        local_mechanism="device layer raises a device error on the rank: the worker fails and is restarted",
        local_realism="emulated",
        verify_signal="DCGM_FI_DEV_XID_ERRORS / XID log line; worker restart count",
        recovery="remove the shim; worker healthy again",
        seen_in=("traces", "metrics", "logs"),
    ),
    FaultSpec(
        id="nccl-hang",
        fault_class="NCCL",
        description="One tensor-parallel worker stops responding: its peers block inside the collective.",
        target="rank",
        params=NcclHangParams,
        cluster_mechanism="kill -STOP one TP worker for the fault's duration, then -CONT",
        local_mechanism="mode collective: the rank blocks inside the all-reduce before its part reaches the "
                        "transport, process and exporter alive; mode sigstop: SIGSTOP of the rank process",
        local_realism="real",
        verify_signal="collective: the rank's exporter answers, its GPU reads busy, its all-reduce count stops; "
                      "sigstop: the process is in state T",
        recovery="the collective completes (collective); SIGCONT (sigstop)",
        seen_in=("traces", "metrics"),
    ),
    FaultSpec(
        id="interconnect-degradation",
        fault_class="NCCL",
        description="The link carrying one node's collective traffic loses bandwidth: all-reduce slows on that link.",
        target="node",
        params=InterconnectDegradationParams,
        cluster_mechanism="NVLink/PCIe saturation (dcgmproftester -t 1009..1012, peer-copy hog) or NCCL_P2P_DISABLE=1",
        local_mechanism="tbf bandwidth limit on the node's veth (egress) and bridge port (ingress)",
        local_realism="real",
        verify_signal="qdisc installed and its counters move; all-reduce durations up for groups using that link",
        recovery="remove the qdisc",
        seen_in=("traces", "metrics"),
    ),
    FaultSpec(
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
    ),
    FaultSpec(
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
    ),
    FaultSpec(
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
    ),
    FaultSpec(
        id="network-delay",
        fault_class="network",
        description="Packets to and from the node are delayed (and optionally dropped).",
        target="node",
        params=NetworkDelayParams,
        cluster_mechanism="Chaos Mesh NetworkChaos delay (1000 ms +- 100 ms, correlation 0.25) or loss",
        local_mechanism="NFQUEUE delay (no netem on this kernel) and iptables statistic drops on the node's veth",
        local_realism="real",
        verify_signal="RTT/loss measured across the node's link; request latency",
        recovery="remove the rules",
        seen_in=("traces", "metrics"),
    ),
)

FAULTS: dict[str, FaultSpec] = {spec.id: spec for spec in CATALOG}
FAULT_IDS: tuple[str, ...] = tuple(FAULTS)


def get_fault(fault_id: str) -> FaultSpec:
    from harness.errors import InputInvalid
    from harness.registry import did_you_mean

    if fault_id not in FAULTS:
        raise InputInvalid(f"unknown fault id {fault_id!r}{did_you_mean(fault_id, list(FAULTS))}")
    return FAULTS[fault_id]


# ----------------------------------------------------------------------------- campaign sampling
# What a campaign (harness/campaign.py) may draw for each fault: a range per sampled parameter, from barely
# visible (position 0) to severe (position 1), and the fault's intensity: the weighted mean position of its
# sampled values. Parameters not named here keep the model's default. Faults without a graded parameter
# (a hung rank, a failed worker) are outages: intensity 1.


@dataclass(frozen=True)
class ParamRange:
    """A sampled number: uniform position u in [0, 1] from ``mild`` (u=0) to ``severe`` (u=1), on a log scale
    when ``log``; rounded to ``step`` (an int step gives an int). ``weight`` is its share of the intensity."""

    mild: float
    severe: float
    step: float
    log: bool = False
    weight: float = 1.0

    def value(self, u: float) -> float | int:
        lo, hi = self.mild, self.severe
        if self.log:
            raw = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
        else:
            raw = lo + u * (hi - lo)
        v = min(max(round(raw / self.step) * self.step, min(lo, hi)), max(lo, hi))
        return round(v) if isinstance(self.step, int) else round(v, 6)

    def position(self, v: float) -> float:
        f = math.log if self.log else float
        return min(max((f(v) - f(self.mild)) / (f(self.severe) - f(self.mild)), 0.0), 1.0)


@dataclass(frozen=True)
class Sampling:
    ranges: dict[str, ParamRange]
    choices: dict[str, tuple] = field(default_factory=dict)  # categorical parameters, drawn uniformly

    def intensity(self, params: dict) -> float:
        """0 (barely visible) .. 1 (severe); 1 for an outage without a graded parameter."""
        graded = [(r.weight, r.position(params[k])) for k, r in self.ranges.items() if r.weight and k in params]
        if not graded:
            return 1.0
        return round(sum(w * p for w, p in graded) / sum(w for w, _ in graded), 4)


SAMPLING: dict[str, Sampling] = {
    # the emulated H100 draws ~130-250 W under the testbed load and its limit floor is 200 W: only caps near
    # the draw bind (a cap above the draw changes nothing and is not verified)
    "gpu-power-cap": Sampling({"watts": ParamRange(230, 200, 5)}),
    # kernels run 1980/clock longer: x1.1 .. x5 (the idle clock, 345 MHz, is the floor)
    "gpu-clock-lock": Sampling({"sm_clock_mhz": ParamRange(1800, 400, 10, log=True)}),
    # hog processes sharing the rank's core(s): the rank keeps 1/2 .. 1/5 of its CPU
    "gpu-compute-contention": Sampling({"workers": ParamRange(1, 4, 1)}),
    "gpu-memory-pressure": Sampling({"fraction": ParamRange(0.3, 0.95, 0.01)}, {"mode": ("fixed", "growing")}),
    "gpu-xid-error": Sampling({}),
    "nccl-hang": Sampling({}),
    "interconnect-degradation": Sampling(
        {"rate_mbit": ParamRange(50.0, 1.0, 0.1, log=True)}, {"direction": ("egress", "ingress", "both")}
    ),
    "cpu-contention": Sampling({"workers": ParamRange(1, 4, 1), "load": ParamRange(40, 100, 5, weight=0.5)}),
    "cpu-throttle": Sampling({"cpu_percent": ParamRange(80, 15, 5)}),
    "host-memory-pressure": Sampling(
        {"memory_mb": ParamRange(512, 6144, 256), "workers": ParamRange(1, 2, 1, weight=0.5)}
    ),
    "network-delay": Sampling({
        "delay_ms": ParamRange(5.0, 500.0, 1.0, log=True),
        "jitter_ms": ParamRange(0.0, 10.0, 1.0, weight=0),
        "loss_percent": ParamRange(0.0, 3.0, 0.1, weight=0.5),
    }),
}
