"""gpu-xid-error (emulated): the device layer raises an XID on the rank; its worker fails and is restarted.

Inject: ``xid`` (with a new ``seq``) in the rank's device control file; the rank raises a device error at its
next step, logs an ``NVRM: Xid`` line, and the engine restarts it. Verify: the rank's emulated XID counter
(chaosbench_device_xid_total) or its restart counter went up. Recover: remove the xid field (no new error).
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
XID_COUNT = "chaosbench_device_xid_total"
RESTARTS = "chaosbench_rank_restarts_total"


class GpuXidErrorHandle(Handle):
    control_file: str
    xid: int
    previous: dict[str, Any]
    xid_count_before: float
    restarts_before: float
    injected_at: NotRequired[float]


def preflight(testbed: Testbed, step: Any) -> None:
    device.check_control_dir(SPEC.id, testbed, targets.rank(testbed, step).name)


def _counts(testbed: Testbed, rank: str, fresh: bool = False) -> tuple[float, float]:
    get = device.fresh_query if fresh else device.query
    xids = get(testbed.prometheus_url, device.series(XID_COUNT, rank)) or 0.0
    restarts = device.query(testbed.prometheus_url, f'sum({device.series(RESTARTS, rank)})') or 0.0
    return xids, restarts


def prepare(testbed: Testbed, step: Any, key: str) -> GpuXidErrorHandle:
    rank = targets.rank(testbed, step).name
    path = device.control_path(testbed, rank)
    xids, restarts = _counts(testbed, rank, fresh=True)
    return GpuXidErrorHandle(**base_handle(SPEC, step, key), control_file=path, xid=step.params.xid,
                             previous=device.previous(path, ["xid"]), xid_count_before=xids,
                             restarts_before=restarts)


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
    xids, restarts = _counts(testbed, rank)
    if xids <= handle["xid_count_before"] and restarts <= handle["restarts_before"]:
        return None
    return Evidence("XID count", xids, f"{rank}: XID {handle['xid']} raised ({xids:g} XIDs, "
                    f"{restarts - handle['restarts_before']:g} restarts since injection) [emulated]",
                    {"restarts": restarts},
                    at=_xid_line_time(testbed, rank, handle["xid"], handle.get("injected_at", 0.0)))


def recover(handle: GpuXidErrorHandle) -> None:
    device.restore(handle["control_file"], handle["previous"])
