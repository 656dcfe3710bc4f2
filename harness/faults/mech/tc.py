"""tbf bandwidth limits on a veth through ``tc`` (this kernel has no netem; tbf and htb work)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

from chaosbench.errors import PreflightFailed
from chaosbench.faults.mech import netns as ns


def _tc(args: list[str], netns: str | None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return ns.run(["tc", *args], netns, check=check)


@dataclass(frozen=True)
class QdiscStats:
    kind: str
    handle: str  # "cb01:" style, as tc prints it
    sent_bytes: int
    sent_packets: int
    dropped: int
    overlimits: int


_HEAD = re.compile(r"^qdisc (\S+) (\S+) root")
_SENT = re.compile(r"Sent (\d+) bytes (\d+) pkt \(dropped (\d+), overlimits (\d+)")


def root_qdisc(dev: str, netns: str | None) -> QdiscStats | None:
    """The root qdisc of ``dev`` with its counters, or None if the device is gone."""
    res = _tc(["-s", "qdisc", "show", "dev", dev, "root"], netns, check=False)
    if res.returncode != 0:
        return None
    lines = res.stdout.splitlines()
    head = _HEAD.match(lines[0]) if lines else None
    sent = _SENT.search(res.stdout)
    if not head:
        return None
    nums = [int(x) for x in sent.groups()] if sent else [0, 0, 0, 0]
    return QdiscStats(head.group(1), head.group(2), *nums)


def check_free(dev: str, netns: str | None) -> None:
    """Refuse to replace a root qdisc somebody configured (only the kernel defaults may be replaced)."""
    q = root_qdisc(dev, netns)
    if q is None:
        raise PreflightFailed(f"device {dev} not found" + (f" in netns {netns}" if netns else ""))
    if q.kind not in ("noqueue", "pfifo_fast", "fq_codel", "mq", "fq"):
        raise PreflightFailed(f"{dev} already has a {q.kind} root qdisc ({q.handle}); not replacing it")


def add_tbf(dev: str, netns: str | None, handle: str, rate_mbit: float, burst_kb: int) -> None:
    _tc(["qdisc", "replace", "dev", dev, "root", "handle", handle, "tbf", "rate", f"{rate_mbit}mbit",
         "burst", f"{burst_kb}kb", "latency", "200ms"], netns)


def remove(dev: str, netns: str | None, handle: str) -> bool:
    """Delete the root qdisc of ``dev`` if it is ours (``handle``); True if one was removed."""
    q = root_qdisc(dev, netns)
    if q is None or q.handle != handle:
        return False
    _tc(["qdisc", "del", "dev", dev, "root"], netns)
    return True
