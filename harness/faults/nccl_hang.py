"""nccl-hang: SIGSTOP the rank's worker process for the fault's duration; its peers block in the collective.

The handle records the pid with its kernel start time, so SIGCONT (also from the journal after a crash) only
ever reaches that same process. Verify: the process is in state T (stopped).
"""

from __future__ import annotations

import signal
from typing import Any

from harness.backends.base import Testbed
from harness.faults import targets
from harness.faults.base import Evidence, Handle, base_handle
from harness.faults.catalog import FAULTS
from harness.faults.mech import procs

SPEC = FAULTS["nccl-hang"]


class NcclHangHandle(Handle):
    pid: int
    started: int | None  # kernel start time of pid: guards against a reused pid


def preflight(testbed: Testbed, step: Any) -> None:
    targets.rank_pid(testbed, step)


def prepare(testbed: Testbed, step: Any, key: str) -> NcclHangHandle:
    pid = targets.rank_pid(testbed, step)
    return NcclHangHandle(**base_handle(SPEC, step, key), pid=pid, started=procs.start_time(pid))


def inject(handle: NcclHangHandle, testbed: Testbed) -> NcclHangHandle:
    if not procs.send(handle["pid"], handle["started"], signal.SIGSTOP):
        raise RuntimeError(f"{handle['component']} (pid {handle['pid']}) is gone; cannot stop it")
    return handle


def verify(handle: NcclHangHandle, testbed: Testbed) -> Evidence | None:
    if not procs.same_process(handle["pid"], handle["started"]):
        return None
    st = procs.state(handle["pid"])
    if st not in ("T", "t"):
        return None
    return Evidence("process state", 1.0, f"{handle['component']} pid {handle['pid']} is stopped (state {st})")


def recover(handle: NcclHangHandle) -> None:
    procs.send(handle["pid"], handle["started"], signal.SIGCONT)
