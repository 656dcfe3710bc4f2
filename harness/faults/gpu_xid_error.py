"""gpu-xid-error (emulated): the device layer raises an XID on the rank; its worker fails and is restarted.

Inject: ``xid`` (with a new ``seq``) in the rank's device control file; the rank raises a device error at its
next step, logs an ``NVRM: Xid`` line, and the engine restarts it. Verify: the rank's ``NVRM: Xid`` log line
or its restart counter (chaosbench_rank_restarts_total) went up; DCGM_FI_DEV_XID_ERRORS shows the code.
Recover: remove the xid field (no new error).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, NotRequired

from harness.backends.base import Testbed
from harness.faults import targets
from harness.faults.base import Evidence, Handle, base_handle
from harness.faults.catalog import FAULTS
from harness.faults.mech import device

SPEC = FAULTS["gpu-xid-error"]
XID_LAST = "DCGM_FI_DEV_XID_ERRORS"  # value of the last XID (dcgm-exporter)
RESTARTS = "chaosbench_rank_restarts_total"


class GpuXidErrorHandle(Handle):
    control_file: str
    xid: int
    previous: dict[str, Any]
    restarts_before: float
    injected_at: NotRequired[float]


def preflight(testbed: Testbed, step: Any) -> None:
    device.check_control_dir(SPEC.id, testbed, targets.rank(testbed, step).name)


def _restarts(testbed: Testbed, rank: str) -> float:
    return device.query(testbed.prometheus_url, f"sum({device.series(RESTARTS, rank)})") or 0.0


def prepare(testbed: Testbed, step: Any, key: str) -> GpuXidErrorHandle:
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
    from harness.collect.logs import parse_engine_jsonl

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
