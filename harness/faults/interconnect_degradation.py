"""interconnect-degradation: a tbf bandwidth limit on the node's veth, which carries its collective traffic.

Egress: root qdisc of the node-side veth (inside the node's namespace); ingress: root qdisc of the bridge-side
port (traffic towards the node). Verify: our qdisc is installed and its counters move. Recover: delete the root
qdisc if it is still ours (matched by handle), which restores the kernel default.
"""

from __future__ import annotations

import zlib
from typing import Any

from harness.backends.base import Testbed
from harness.errors import PreflightFailed
from harness.faults import targets
from harness.faults.base import Evidence, Handle, base_handle
from harness.faults.catalog import FAULTS
from harness.faults.mech import tc

SPEC = FAULTS["interconnect-degradation"]




class InterconnectDegradationHandle(Handle):
    devices: list[tuple[str, str | None]]  # (device, netns or None for the root namespace)
    qdisc_handle: str  # "c1a2:" style, as tc prints it
    rate_mbit: float
    burst_kb: int


def _devices(testbed: Testbed, step: Any) -> list[tuple[str, str | None]]:
    node, direction = targets.node(testbed, step), step.params.direction
    out: list[tuple[str, str | None]] = []
    if direction in ("egress", "both"):
        if not node.veth_node:
            raise PreflightFailed(f"{SPEC.id}: {node.name} has no veth (run the local backend as root)")
        out.append((node.veth_node, node.netns))
    if direction in ("ingress", "both"):
        if not node.veth_host:
            raise PreflightFailed(f"{SPEC.id}: {node.name} has no bridge port (run the local backend as root)")
        out.append((node.veth_host, None))
    return out


def preflight(testbed: Testbed, step: Any) -> None:
    targets.need_root(SPEC.id)
    targets.need_binaries(SPEC.id, "tc", "ip")
    for dev, netns in _devices(testbed, step):
        tc.check_free(dev, netns)


def prepare(testbed: Testbed, step: Any, key: str) -> InterconnectDegradationHandle:
    major = 0xC000 + zlib.crc32(key.encode()) % 0x1000
    return InterconnectDegradationHandle(**base_handle(SPEC, step, key), devices=_devices(testbed, step),
                                         qdisc_handle=f"{major:x}:", rate_mbit=step.params.rate_mbit,
                                         burst_kb=step.params.burst_kb)


def inject(handle: InterconnectDegradationHandle, testbed: Testbed) -> InterconnectDegradationHandle:
    for dev, netns in handle["devices"]:
        tc.add_tbf(dev, netns, handle["qdisc_handle"], handle["rate_mbit"], handle["burst_kb"])
    return handle


def verify(handle: InterconnectDegradationHandle, testbed: Testbed) -> Evidence | None:
    stats = [tc.root_qdisc(dev, netns) for dev, netns in handle["devices"]]
    if any(q is None or q.handle != handle["qdisc_handle"] or q.kind != "tbf" for q in stats):
        return None
    packets = sum(q.sent_packets for q in stats if q)
    if packets == 0:
        return None
    overlimits = sum(q.overlimits for q in stats if q)
    return Evidence("tbf qdisc counters", packets, f"tbf {handle['rate_mbit']:g} Mbit/s on "
                    f"{', '.join(d for d, _ in handle['devices'])}: {packets} packets, {overlimits} over limit",
                    {"overlimits": overlimits, "dropped": sum(q.dropped for q in stats if q)})


def recover(handle: InterconnectDegradationHandle) -> None:
    for dev, netns in handle["devices"]:
        tc.remove(dev, netns, handle["qdisc_handle"])
