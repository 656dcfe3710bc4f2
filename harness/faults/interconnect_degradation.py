"""interconnect-degradation: a tbf bandwidth limit on the node's veth, which carries its collective traffic.

Egress: root qdisc of the node-side veth (inside the node's namespace); ingress: root qdisc of the bridge-side
port (traffic towards the node). Verify: our qdisc is installed and its counters move. Recover: delete the root
qdisc if it is still ours (matched by handle), which restores the kernel default.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Literal

from chaosbench.backends.base import Testbed
from chaosbench.errors import PreflightFailed
from chaosbench.faults import targets
from chaosbench.faults.base import Evidence, Handle, base_handle
from chaosbench.faults.mech import tc
from chaosbench.faults.spec import FaultSpec, ParamRange, Params, Sampling
from chaosbench.types import between

if TYPE_CHECKING:
    from chaosbench.backends.k8s.faults import ClusterKit, ClusterParts
    from chaosbench.scenario import FaultStep


class InterconnectDegradationParams(Params):
    rate_mbit: between(float, 0.1, 100000, "bandwidth left on the link, Mbit/s") = 5.0
    burst_kb: between(int, 2, 65536, "token-bucket burst, KiB") = 32
    direction: Literal["egress", "ingress", "both"] = "both"


SPEC = FaultSpec(
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
    sampling=Sampling(
        {"rate_mbit": ParamRange(50.0, 1.0, 0.1, log=True)}, {"direction": ("egress", "ingress", "both")}
    ),
    key_metrics=("allreduce", "collective", "net", "bandwidth"),
    needs_root="tbf qdisc on the node's veth",
    local_needs=("inter-node-link",),
    # vLLM's custom all-reduce bypasses NCCL inside a node: the fault would not bite (FAULTS.md)
    cluster_engine_kwargs={"disable_custom_all_reduce": True},
)




class InterconnectDegradationHandle(Handle):
    devices: list[tuple[str, str | None]]  # (device, netns or None for the root namespace)
    qdisc_handle: str  # "c1a2:" style, as tc prints it
    rate_mbit: float
    burst_kb: int


def _devices(testbed: Testbed, step: FaultStep) -> list[tuple[str, str | None]]:
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


def preflight(testbed: Testbed, step: FaultStep) -> None:
    targets.need_root(SPEC.id)
    targets.need_binaries(SPEC.id, "tc", "ip")
    for dev, netns in _devices(testbed, step):
        tc.check_free(dev, netns)


def prepare(testbed: Testbed, step: FaultStep, key: str) -> InterconnectDegradationHandle:
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


def cluster(step: FaultStep, kit: ClusterKit) -> ClusterParts:
    p = step.params
    direction = {"egress": "to", "ingress": "from", "both": "both"}[p.direction]
    bandwidth = {"rate": f"{max(1, round(p.rate_mbit * 125))}kbps", "limit": 20971520, "buffer": p.burst_kb * 1024}
    obj = kit.chaos("NetworkChaos", {**kit.on_node(step.duration), "action": "bandwidth", "direction": direction,
                                     "target": kit.peers(role="worker"), "bandwidth": bandwidth})
    out: ClusterParts = {
        "chaos_objects": (obj,),
        "evidence_query": f"sum(rate(container_network_transmit_bytes_total{{{kit.pods}}}"
                          f"[{kit.rate_window(True)}]))",
        "notes": (("tbf bandwidth limit between the node's Ray worker pod and the other workers: bites on "
                  "inter-node NCCL traffic over TCP sockets (NCCL_IB_DISABLE=1 is set); tc never touches RDMA"),),
    }
    if kit.settings.gpus_per_node > 1:
        # Intra-node links too: a peer-copy hog saturates NVLink between two of the node's vLLM GPUs.
        out.update(kit.agent("link-hog", "--peer", "worker:1", "--link", "nvlink", "--duration", str(step.duration),
                             gpu="worker"))
    return out
