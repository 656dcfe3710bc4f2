"""gpu-memory-pressure (emulated): the device layer takes a share of the rank's memory pool (fewer KV blocks,
preemptions, device memory used up).

Inject: ``mem_pool_fraction`` in the rank's device control file, at once (``fixed``) or growing from a quarter
of it to all of it over the fault's duration (``growing``: a small ramp process, marked like every helper).
Verify: DCGM_FI_DEV_FB_USED of the rank above its value before the fault. Recover: kill the ramp, restore.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from chaosbench.backends.base import Testbed
from chaosbench.faults import targets
from chaosbench.faults.base import Evidence, Handle, base_handle
from chaosbench.faults.mech import device, procs
from chaosbench.faults.spec import FaultSpec, ParamRange, Params, Sampling
from chaosbench.types import between

if TYPE_CHECKING:
    from chaosbench.backends.k8s.faults import ClusterKit, ClusterParts
    from chaosbench.scenario import FaultStep


class GpuMemoryPressureParams(Params):
    fraction: between(float, 0.05, 0.99, "share of device memory taken by the hog") = 0.8
    mode: Literal["fixed", "growing"] = Field("fixed", description="take it at once or grow to it over the window")


SPEC = FaultSpec(
    id="gpu-memory-pressure",
    fault_class="GPU",
    description="A helper takes most of the GPU's memory: fewer KV-cache blocks, preemptions, slow allocations.",
    target="rank",
    targets=("rank", "stage", "replica"),  # a stage or replica: each of its ranks
    params=GpuMemoryPressureParams,
    cluster_mechanism="helper process taking params.fraction of the memory the engine left free (vLLM runs with "
    "gpu_memory_utilization 0.5 under this fault), fixed or growing, on the target GPU",
    local_mechanism="device layer shrinks the rank's memory pool: fewer KV blocks, preemptions, slower allocations",
    local_realism="emulated",
    verify_signal="DCGM_FI_DEV_FB_USED up; vllm:kv_cache_usage_perc and vllm:num_preemptions rise",
    recovery="free the memory",
    seen_in=("traces", "metrics"),
    sampling=Sampling({"fraction": ParamRange(0.3, 0.95, 0.01)}, {"mode": ("fixed", "growing")}),
    key_metrics=("fb_used", "kv_cache", "preempt"),
    local_needs=("device-layer",),
    # vLLM preallocates its share of device memory at start: the hog can only take what the engine left free
    cluster_engine_kwargs={"gpu_memory_utilization": 0.5},
)

GROWING_START = 0.25  # growing mode starts at this share of the final fraction


class GpuMemoryPressureHandle(Handle):
    control_file: str
    fraction: float
    mode: str
    duration: float
    previous: dict[str, Any]
    fb_used_before: float | None
    pids: list[int]


def preflight(testbed: Testbed, step: FaultStep) -> None:
    device.check_control_dir(SPEC.id, testbed, targets.rank(testbed, step).name)


def prepare(testbed: Testbed, step: FaultStep, key: str) -> GpuMemoryPressureHandle:
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
    argv = [sys.executable, "-m", "chaosbench.faults.mech.device_ramp", "--control", h["control_file"],
            "--field", "mem_pool_fraction", "--start", str(first), "--end", str(h["fraction"]),
            "--duration", str(h["duration"])]
    return {**h, "pids": [procs.spawn(argv, h["key"]).pid]}


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


def cluster(step: FaultStep, kit: ClusterKit) -> ClusterParts:
    p = step.params
    extra = ("--fraction", str(p.fraction), "--mode", p.mode, "--duration", str(step.duration))
    return {**kit.agent("memory-hog", *extra), "evidence_query": kit.dcgm("DCGM_FI_DEV_FB_USED"),
            "notes": ((f"the hog takes params.fraction of the memory free at inject time (the engine runs with "
                      f"gpu_memory_utilization={kit.settings.gpu_memory_utilization:g} and has preallocated its KV "
                      "cache, so the pressure shows as allocation failures and slow allocations, not fewer KV "
                      "blocks)"),)}
