"""gpu-xid-error (emulated): the device layer raises an XID on the rank; its worker fails and is restarted.

Inject: ``xid`` (with a new ``seq``) in the rank's device control file; the rank raises a device error at its
next step, logs an ``NVRM: Xid`` line, and the engine restarts it. Verify: the rank's ``NVRM: Xid`` log line
or its restart counter (chaosbench_rank_restarts_total) went up; DCGM_FI_DEV_XID_ERRORS shows the code.
Recover: remove the xid field (no new error).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired

from pydantic import Field

from chaosbench.backends.base import Testbed
from chaosbench.faults import targets
from chaosbench.faults.base import Evidence, Handle, base_handle
from chaosbench.faults.mech import device
from chaosbench.faults.spec import FaultSpec, Params
from chaosbench.types import between

if TYPE_CHECKING:
    from chaosbench.backends.k8s.faults import ClusterKit, ClusterParts
    from chaosbench.scenario import FaultStep


class GpuXidErrorParams(Params):
    xid: between(int, 1, 255, "XID code reported (79: GPU has fallen off the bus, 48: double-bit ECC)") = 79
    restart: bool = Field(True, description="restart the failed worker after the error")


SPEC = FaultSpec(
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
    key_metrics=("xid", "restart"),
    local_needs=("device-layer",),
)

XID_LAST = "DCGM_FI_DEV_XID_ERRORS"  # value of the last XID (dcgm-exporter)
RESTARTS = "chaosbench_rank_restarts_total"


class GpuXidErrorHandle(Handle):
    control_file: str
    xid: int
    previous: dict[str, Any]
    restarts_before: float
    injected_at: NotRequired[float]


def preflight(testbed: Testbed, step: FaultStep) -> None:
    device.check_control_dir(SPEC.id, testbed, targets.rank(testbed, step).name)


def _restarts(testbed: Testbed, rank: str) -> float:
    return device.query(testbed.prometheus_url, f"sum({device.series(RESTARTS, rank)})") or 0.0


def prepare(testbed: Testbed, step: FaultStep, key: str) -> GpuXidErrorHandle:
    rank = targets.rank(testbed, step).name
    path = device.control_path(testbed, rank)
    return GpuXidErrorHandle(**base_handle(SPEC, step, key), control_file=path, xid=step.params.xid,
                             previous=device.previous(path, ["xid"]),
                             restarts_before=_restarts(testbed, rank))


def inject(handle: GpuXidErrorHandle, testbed: Testbed) -> GpuXidErrorHandle:
    handle["injected_at"] = time.time()
    device.apply(handle["control_file"], {"xid": handle["xid"]})
    return handle


def _xid_line_time(testbed: Testbed, rank: str, xid: int, since: float) -> float | None:
    """Time of the rank's first ``NVRM: Xid`` line at or after ``since`` in the engine log (the XID itself; the
    counters only show once the restarted worker is scraped again, seconds later)."""
    from chaosbench.collect.logs import parse_engine_jsonl

    for line in parse_engine_jsonl(Path(testbed.run_dir) / "logs" / "engine.jsonl"):
        if line.component == rank and "Xid (PCI" in line.message and f"): {xid}," in line.message \
                and line.time >= since:
            return line.time
    return None


def verify(handle: GpuXidErrorHandle, testbed: Testbed) -> Evidence | None:
    rank = handle["component"]
    restarts = _restarts(testbed, rank)
    at = _xid_line_time(testbed, rank, handle["xid"], handle.get("injected_at", 0.0))
    if at is None and restarts <= handle["restarts_before"]:
        return None
    last = device.query(testbed.prometheus_url, device.series(XID_LAST, rank)) or 0.0
    return Evidence("XID", float(handle["xid"]), f"{rank}: XID {handle['xid']} raised (last XID on the exporter "
                    f"{last:g}, {restarts - handle['restarts_before']:g} restarts since injection) [emulated]",
                    {"restarts": restarts, "xid_errors": last}, at=at)


def recover(handle: GpuXidErrorHandle) -> None:
    device.restore(handle["control_file"], handle["previous"])


def cluster(step: FaultStep, kit: ClusterKit) -> ClusterParts:
    notes = ("emulated on a cluster: an 'NVRM: Xid' line written to /dev/kmsg (DCGM's XID counter comes from "
             "NVML driver events and stays 0) plus SIGKILL of the GPU's vLLM worker, restarted by Ray Serve"
             + ("" if step.params.restart else " (params.restart=false is not honoured on k8s)"),)
    return {**kit.agent("xid", "--xid", str(step.params.xid), "--kill-worker"),
            "evidence_query": f"sum({kit.ray_metric('vllm:num_requests_running')})", "notes": notes}
