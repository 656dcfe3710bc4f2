"""network-delay: delay (and optionally drop) the node's egress packets on its veth, inside its namespace.

No netem on this kernel: an iptables rule sends the packets to an NFQUEUE (``--queue-bypass``: if the handler
dies, packets pass rather than being black-holed) and a handler process in the node's namespace
(``chaosbench.faults.mech.nfq_delay``) releases each one delay +- jitter ms later. Loss is a ``statistic`` DROP
rule placed before it. Every rule carries ``chaosbench:<key>``. Verify: the handler is holding packets (its
status file) or the loss rule's counter moves. Recover: delete the rules, then kill the handler.
"""

from __future__ import annotations

import json
import sys
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chaosbench.backends.base import Testbed
from chaosbench.errors import PreflightFailed
from chaosbench.faults import targets
from chaosbench.faults.base import Evidence, Handle, base_handle
from chaosbench.faults.mech import iptables, procs
from chaosbench.faults.spec import FaultSpec, ParamRange, Params, Sampling
from chaosbench.types import between

if TYPE_CHECKING:
    from chaosbench.backends.k8s.faults import ClusterKit, ClusterParts
    from chaosbench.scenario import FaultStep


class NetworkDelayParams(Params):
    delay_ms: between(float, 0, 10000, "added one-way delay, ms") = 200.0
    jitter_ms: between(float, 0, 5000, "delay jitter, ms") = 20.0
    correlation: between(float, 0, 1, "jitter correlation (cluster NetworkChaos)") = 0.25
    loss_percent: between(float, 0, 100, "packet loss, percent") = 0.0


SPEC = FaultSpec(
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
    sampling=Sampling({
        "delay_ms": ParamRange(5.0, 500.0, 1.0, log=True),
        "jitter_ms": ParamRange(0.0, 10.0, 1.0, weight=0),
        "loss_percent": ParamRange(0.0, 3.0, 0.1, weight=0.5),
    }),
    key_metrics=("net", "rtt", "drop", "latency"),
    needs_root="iptables/NFQUEUE on the node's veth",
)

HANDLER_START_TIMEOUT = 10.0


class NetworkDelayHandle(Handle):
    netns: str
    dev: str
    queue: int
    delay_ms: float
    jitter_ms: float
    correlation: float
    loss_percent: float
    status_file: str
    pids: list[int]


def preflight(testbed: Testbed, step: FaultStep) -> None:
    targets.need_root(SPEC.id)
    targets.need_binaries(SPEC.id, "iptables", "iptables-save", "ip")
    node = targets.node(testbed, step)
    if not node.netns or not node.veth_node:
        raise PreflightFailed(f"{SPEC.id}: {node.name} has no network namespace/veth (run the local backend as root)")
    if step.params.delay_ms > 0:
        try:
            import netfilterqueue  # noqa: F401
        except ImportError as exc:
            raise PreflightFailed(f"{SPEC.id}: the netfilterqueue package is missing ({exc})") from exc


def prepare(testbed: Testbed, step: FaultStep, key: str) -> NetworkDelayHandle:
    node, p = targets.node(testbed, step), step.params
    return NetworkDelayHandle(
        **base_handle(SPEC, step, key), netns=node.netns or "", dev=node.veth_node or "",
        queue=1000 + zlib.crc32(key.encode()) % 30000, delay_ms=p.delay_ms, jitter_ms=p.jitter_ms,
        correlation=p.correlation, loss_percent=p.loss_percent,
        status_file=str(Path(testbed.run_dir) / f"nfq-delay-{key}.json"), pids=[],
    )


def _start_handler(h: NetworkDelayHandle) -> int:
    argv = [sys.executable, "-m", "chaosbench.faults.mech.nfq_delay", "--queue", str(h["queue"]),
            "--delay-ms", str(h["delay_ms"]), "--jitter-ms", str(h["jitter_ms"]),
            "--correlation", str(h["correlation"]), "--status", h["status_file"]]
    proc = procs.spawn(argv, h["key"], netns=h["netns"],
                       log=Path(h["status_file"]).with_suffix(".log"))
    deadline, log = time.monotonic() + HANDLER_START_TIMEOUT, Path(h["status_file"]).with_suffix(".log")
    while not Path(h["status_file"]).exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"NFQUEUE delay handler did not start (see {log})")
        time.sleep(0.05)
    return proc.pid


def inject(handle: NetworkDelayHandle, testbed: Testbed) -> NetworkDelayHandle:
    h, pids = handle, []
    if h["delay_ms"] > 0:
        pids.append(_start_handler(h))
    match = ["-o", h["dev"]]
    if h["loss_percent"] > 0:
        prob = f"{h['loss_percent'] / 100:.6f}"
        iptables.append(h["netns"], "OUTPUT", h["key"], match,
                        ["-m", "statistic", "--mode", "random", "--probability", prob, "-j", "DROP"])
    if h["delay_ms"] > 0:
        iptables.append(h["netns"], "OUTPUT", h["key"], match,
                        ["-j", "NFQUEUE", "--queue-num", str(h["queue"]), "--queue-bypass"])
    return {**h, "pids": pids}


def _held(h: NetworkDelayHandle) -> int:
    try:
        return int(json.loads(Path(h["status_file"]).read_text())["held"])
    except (OSError, ValueError, KeyError):
        return 0


def verify(handle: NetworkDelayHandle, testbed: Testbed) -> Evidence | None:
    h = handle
    rules = iptables.rules(h["netns"], h["key"])
    counts = {r.spec.split(" -j ")[-1].split()[0]: r.packets for r in rules}
    want = (["DROP"] if h["loss_percent"] > 0 else []) + (["NFQUEUE"] if h["delay_ms"] > 0 else [])
    if sorted(counts) != sorted(want):
        return None
    held = _held(h)
    if h["delay_ms"] > 0 and (held == 0 or not procs.find_marked(h["key"], h["pids"])):
        return None
    if h["delay_ms"] == 0 and counts.get("DROP", 0) == 0:
        return None
    return Evidence("delayed/dropped packets", held or counts.get("DROP", 0),
                    f"{h['dev']} in {h['netns']}: {held} packets held {h['delay_ms']:g}+-{h['jitter_ms']:g} ms, "
                    f"{counts.get('DROP', 0)} dropped ({h['loss_percent']:g}%)",
                    {"queued": counts.get("NFQUEUE", 0), "dropped": counts.get("DROP", 0)})


def recover(handle: NetworkDelayHandle) -> None:
    if Path(f"/run/netns/{handle['netns']}").exists():
        iptables.remove_all(handle["netns"], handle["key"])
    procs.kill_marked(handle["key"], handle.get("pids", []))
    for suffix in (".json", ".log", ".tmp"):
        Path(handle["status_file"]).with_suffix(suffix).unlink(missing_ok=True)


def cluster(step: FaultStep, kit: ClusterKit) -> ClusterParts:
    p = step.params
    delay = {"latency": f"{p.delay_ms:g}ms", "jitter": f"{p.jitter_ms:g}ms", "correlation": f"{p.correlation * 100:g}"}
    spec: dict[str, Any] = {**kit.on_node(step.duration), "direction": "both", "target": kit.peers()}
    if p.loss_percent > 0:
        spec.update(action="netem", delay=delay, loss={"loss": f"{p.loss_percent:g}", "correlation": "0"})
    else:
        spec.update(action="delay", delay=delay)
    latency = kit.ray_metric("vllm:e2e_request_latency_seconds_bucket")
    return {"chaos_objects": (kit.chaos("NetworkChaos", spec),),
            "evidence_query": f"histogram_quantile(0.5, sum by (le) (rate({latency}[{kit.rate_window()}])))"}
